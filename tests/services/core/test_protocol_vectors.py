"""The protocol test vectors (tests/vectors/protocol) against both ends of the protocol in
Python (`services.core.session`), and, through Node's test runner, against the browser's
JavaScript client (services/web/static/herald-live.js)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from services.core.delivery import Router
from services.core.envelope import ProtocolError, encode_event
from services.core.events import Event, EventType
from services.core.jsontext import compact
from services.core.session import ClientSession, ServerSession
from services.core.stream import reconnect_delays

ROOT = Path(__file__).resolve().parents[3]
VECTORS = sorted((ROOT / "tests" / "vectors" / "protocol").glob("*.json"))
REQUIRED = {
    "fresh-connect", "resume-after-drop", "duplicates-and-stale", "reset-after-pruning",
    "reset-recreated", "subscribe-task-set", "malformed-frames", "backoff", "ping-and-resume",
}  # fmt: skip


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


def test_every_scenario_the_protocol_promises_has_a_vector():
    assert REQUIRED <= {p.stem for p in VECTORS}
    for path in VECTORS:
        vector = load(path)
        assert vector["name"] == path.stem and vector["description"]


def subset(expected: dict[str, Any], body: dict[str, Any]) -> bool:
    return all(body.get(k, object()) == v for k, v in expected.items())


def frame(step: dict[str, Any]) -> str:
    return step["receive_raw"] if "receive_raw" in step else compact(step["receive"])


# ------------------------------------------------------------------------- client


def client_session(spec: dict[str, Any]) -> ClientSession:
    d = spec["delays"]
    rand = d["rand"]

    def delays():
        return reconnect_delays(d["first"], d["cap"], d["factor"], d["jitter"], lambda: rand)

    return ClientSession(spec["since"], delays=delays)


@pytest.mark.parametrize("path", VECTORS, ids=ids(VECTORS))
def test_the_python_client_follows_the_vector(path: Path):
    spec = load(path)["client"]
    session = client_session(spec)
    for number, step in enumerate(spec["steps"]):
        where = f"step {number}: {step}"
        delay: Any = "unset"
        if "connect" in step:
            session.connection_made()
            if "since" in step:
                assert session.since == step["since"], where
        elif "receive" in step or "receive_raw" in step:
            if "error" in step:
                with pytest.raises(ProtocolError) as raised:
                    session.receive_text(frame(step))
                assert raised.value.code == step["error"], where
            else:
                msg = session.receive_text(frame(step))
                got = [] if msg is None else [msg.body]
                assert len(got) == len(step["deliver"]), where
                assert all(map(subset, step["deliver"], got)), (where, got)
        elif "subscribe" in step:
            session.subscribe(step["subscribe"])
        elif "ping" in step:
            session.ping()
        elif "resume" in step:
            session.resume()
        elif "disconnect" in step:
            delay = session.connection_lost(step["disconnect"])
        elif "attempt_failed" in step:
            delay = session.attempt_failed()
        else:
            raise AssertionError(f"unknown step {step}")
        sent = [json.loads(t) for t in session.data_to_send()]
        assert sent == step.get("send", []), where
        if "cursor" in step:
            assert session.last_seq == step["cursor"], where
        if "reconnect_in" in step:
            want = step["reconnect_in"]
            assert (delay is None) if want is None else delay == pytest.approx(want), where
        if "tasks" in step:
            tasks = session.tasks
            assert (None if tasks is None else sorted(tasks)) == step["tasks"], where
        if "resets" in step:
            assert session.resets == step["resets"], where


# ------------------------------------------------------------------------- server


def event_of(obj: dict[str, Any], principal: str) -> Event:
    return Event(seq=obj["seq"], task_id=obj["task"], principal=principal,
                 type=EventType(obj["event"]), ts=obj["ts"], attempt=obj.get("attempt", 0),
                 data=obj.get("data", {}), log_pos=obj["seq"])  # fmt: skip


class Log:
    """One principal's events, read as the notifier reads its store."""

    def __init__(self, events: list[Event]) -> None:
        self.events = events

    def head(self) -> int:
        return self.events[-1].seq if self.events else 0

    def after(self, seq: int, limit: int, task_id: str | None = None) -> list[Event]:
        found = [e for e in self.events if e.seq > seq and task_id in (None, e.task_id)]
        return found[:limit]


def stream(session: ServerSession, log: Log, since: int | None, pruned: int) -> None:
    """What the notifier's `_stream` does, the log read from memory."""
    session.open(since, log.head(), 0 if since is None else pruned)
    while (after := session.replay_after()) is not None:
        session.replay_page(log.after(after, session.page))
    if session.needs_pruned_check():
        session.replay_done(pruned)


SERVER_VECTORS = [p for p in VECTORS if "server" in load(p)]


@pytest.mark.parametrize("path", SERVER_VECTORS, ids=ids(SERVER_VECTORS))
def test_the_server_session_sends_what_the_vector_says(path: Path):
    spec = load(path)["server"]
    principal = spec["principal"]
    log = Log([event_of(e, principal) for e in spec["log"]])
    pruned = spec["pruned_through"]
    session = ServerSession(principal, page=spec["page"])
    router = Router()
    for number, step in enumerate(spec["steps"]):
        where = f"step {number}: {step}"
        live: list[str] = []
        try:
            if "open" in step:
                if session.sub is not None:
                    router.remove(session.sub)
                stream(session, log, step["open"], pruned)
                router.add(session.go_live())
            elif "receive" in step or "receive_raw" in step:
                request = session.receive_text(frame(step))
                if request.type == "resume":
                    assert session.sub is not None
                    router.remove(session.sub)
                    stream(session, log, request.since, pruned)
                    router.add(session.go_live())
                elif request.type == "subscribe":
                    session.subscribe(request.tasks, request.since, log.head(),
                                      lambda after, task: log.after(after, 1000, task))  # fmt: skip
            elif "append" in step:
                new = [event_of(e, principal) for e in step["append"]]
                log.events += [e for e in new if e.seq > log.head()]
                for evs, subs in router.route(new):
                    assert subs == [session.sub]
                    live += map(encode_event, evs)
            elif "prune" in step:
                pruned = step["prune"]
                session.pruned(pruned)
            else:
                raise AssertionError(f"unknown step {step}")
        except ProtocolError as exc:
            assert "close" in step, (where, exc)
            assert exc.code == step["close"]["code"], where
            assert step["close"]["reason"] in exc.reason, where
            continue
        assert "close" not in step, where
        sent = [json.loads(t) for t in session.data_to_send() + live]
        assert sent == step["send"], where


# --------------------------------------------------------------------- JavaScript


def test_the_javascript_client_follows_every_vector():
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the JavaScript client's vectors were not run")
    done = subprocess.run([node, "--test", str(ROOT / "tests" / "js")], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    # Node's runner ends with a summary: the vectors ran, none failed or was skipped.
    assert "# fail 0" in done.stdout and "# skipped 0" in done.stdout, done.stdout
    passed = int(done.stdout.split("# pass ")[1].split()[0])
    assert passed >= len(VECTORS), done.stdout
