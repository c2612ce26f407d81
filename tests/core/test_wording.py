"""What the clients say about attempts, retries, time limits and cancels."""

from services.core import taskview, wording
from services.core.events import Event, EventType


def ev(etype: EventType, attempt: int = 1, **data) -> Event:
    return Event(1, "t", "", etype, 0.0, attempt, data)


def test_retry_and_event_sentences():
    assert wording.retry_text(ev(EventType.RETRYING, 1, reason="requested", next_attempt=2,
                             delay=120, max_attempts=None,
                             error={"code": "busy", "message": "try later"})) == (
        "attempt 1 asked to be tried again: try later; retrying in 2 min (attempt 2)")
    assert wording.retry_text(ev(EventType.RETRYING, 3, reason="worker_stopped", delay=0,
                             max_attempts=5)) == (
        "the worker stopped; the task runs again when it is back (attempt 4 of 5)")
    assert wording.retry_text(ev(EventType.RETRYING, 1, reason="worker_lost", delay=0,
                             max_attempts=4)) == "worker lost; retrying (attempt 2 of 4)"
    assert wording.event_text(ev(EventType.FAILED, error={"code": "memory_limit", "message":
                                                      "It needed more than 64 MB."})) == (
        "failed: It needed more than 64 MB.")
    assert wording.event_text(ev(EventType.CANCELLED, reason="cancelled before it started")) == (
        "cancelled before it started")
    assert wording.event_text(ev(EventType.PROGRESS, fraction=0.5)) is None


def test_attempts_countdowns_and_cancel_sentences():
    waiting = {"state": "queued", "attempt": 1, "max_attempts": 3,
               "next_attempt_at": "2027-01-15T08:00:08.000Z"}  # fmt: skip
    at = taskview.parse_time(waiting["next_attempt_at"])
    line = wording.attempt_line(waiting, now=at - 7.6)
    assert line.startswith("2 of 3, next try in 8 s (at ")
    assert wording.attempt_line(waiting, now=at + 1).startswith("2 of 3, next try now")
    assert wording.attempt_line({**waiting, "next_attempt_at": None}) == "2 of 3, queued again"
    assert wording.attempt_line({"state": "queued", "attempt": 0, "max_attempts": 1}) == (
        "0 of 1 (not started yet)")
    assert wording.attempt_line({"state": "failed", "attempt": 2, "max_attempts": None}) == "2"
    assert wording.retry_in({**waiting, "state": "running"}) is None
    assert [wording.countdown(s) for s in (0, 0.04, 0.5, 8.0, 125)] == [
        "now", "now", "in 1 s", "in 8 s", "in 2 min 5 s"]
    assert wording.cancel_text(None).startswith("asked to stop; it stops at its next checkpoint")
    assert wording.cancel_text(0).startswith("stopped by force now")
    assert wording.failure_text({"attempt": 3, "error": {"code": "x", "message": "boom"}}) == (
        "task failed after 3 attempts: boom")
    assert wording.limits_text({"timeout": None, "max_timeout": 604800.0, "retries": 1,
                            "memory_limit": 256, "concurrency": 2, "cancel_grace": 5.0}) == (
        "1 retry, memory 256 MB, 2 at a time")
