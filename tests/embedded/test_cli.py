"""The `herald` command line's time limits, retries and cancels, against a real `herald
serve` with a few tasks of its own (a config-file plugin module); and the wording helpers
the command line shares with the desktop app."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from embedded import cli
from tests.e2e.harness import Instance, start_serve, wait_for

PLUGIN = '''
import os
import signal
import time

from services.tasks import Backoff, task


@task("cli.flaky", title="Flaky", retries=2, backoff=Backoff(base=0.3, jitter=0))
def flaky(ctx):
    """Fails its first attempt."""
    if ctx.attempt == 1:
        raise OSError("disk busy")
    return "ok"


@task("cli.patient", title="Patient", retries=1, backoff=Backoff(base=30, jitter=0))
def patient(ctx):
    """Fails its first attempt and waits long for the second."""
    raise OSError("disk busy")


@task("cli.crashy", title="Crashy")
def crashy(ctx):
    """Its first attempt's process dies of SIGSEGV."""
    if ctx.attempt == 1:
        os.kill(os.getpid(), signal.SIGSEGV)
    return "survived"


@task("cli.stubborn", title="Stubborn", cancel_grace=0.5, timeout=20, max_timeout=60)
def stubborn(ctx):
    """Never reaches a checkpoint after its first progress report."""
    ctx.progress(0.1, "ignoring checkpoints")
    time.sleep(30)
    return "never"
'''


@pytest.fixture(scope="module")
def herald(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    root = tmp_path_factory.mktemp("cli")
    plugins = root / "plugins"
    plugins.mkdir()
    (plugins / "cli_tasks.py").write_text(PLUGIN)
    data = root / "data"
    data.mkdir(mode=0o700)
    (data / "config.toml").write_text('[tasks]\nmodules = ["cli_tasks"]\n')
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", str(plugins))
        inst = start_serve(data, root / "runtime", "--workers", "3")
    yield inst
    inst.stop()


def waiter(herald: Instance, *args: str) -> subprocess.Popen[str]:
    """`herald submit ... --wait` running in the background."""
    return subprocess.Popen([sys.executable, "-m", "embedded", "submit", *args, "--wait"],
                            env=herald.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip


def running_task(herald: Instance, name: str) -> dict:
    client = herald.client
    return wait_for(lambda: next((t for t in client.list_tasks(state="running").tasks
                                  if t["task"] == name), None))  # fmt: skip


# ------------------------------------------------------------------ --timeout


def test_a_time_limit_stops_a_waited_task(herald):
    start = time.monotonic()
    out = herald.cli("submit", "demo.answer", "seconds=10", "--timeout", "1", "--wait")
    assert out.returncode == 1, out.stderr
    assert "herald: task timed out after 1 s; the attempt was stopped" in out.stderr
    assert out.stdout == ""
    assert time.monotonic() - start < 8  # stopped, not waited out
    task = json.loads(herald.cli("tasks", "--json", "--limit", "1").stdout)[0]
    assert (task["state"], task["timeout"], task["error"]["code"]) == ("failed", 1, "timeout")


def test_timeout_is_sent_and_checked(herald):
    out = herald.cli("submit", "demo.answer", "seconds=0", "--timeout", "2.5", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["timeout"] == 2.5
    plain = json.loads(herald.cli("submit", "demo.answer", "seconds=0", "--json").stdout)
    assert plain["timeout"] is None  # the task's default: none
    for bad in ("0", "-3", "soon", "inf"):
        refused = herald.cli("submit", "demo.answer", "--timeout", bad)
        assert refused.returncode == 2 and "--timeout" in refused.stderr, bad
    over = herald.cli("submit", "cli.stubborn", "--timeout", "61")  # its max_timeout is 60
    assert over.returncode == 2
    assert "  timeout: must be at most 60 s for this task" in over.stderr  # the server's 422


# ------------------------------------------------------------------ retries


def test_wait_says_a_failed_attempt_is_retried(herald):
    out = herald.cli("submit", "cli.flaky", "--wait")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
    assert out.stderr.splitlines() == [
        "herald: attempt 1 failed: OSError: disk busy; retrying in 0.3 s (attempt 2 of 3)",
        "herald: attempt 2 of 3 started",
    ]


def test_wait_says_a_lost_worker_is_retried(herald):
    out = herald.cli("submit", "cli.crashy", "--wait")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "survived"
    assert "herald: worker lost (killed by SIGSEGV); retrying (attempt 2 of 2)" in out.stderr


def test_show_a_task_waiting_for_its_retry(herald):
    out = herald.cli("submit", "cli.patient", "--timeout", "5")
    task_id = out.stdout.strip()
    client = herald.client
    wait_for(lambda: client.get(task_id).get("next_attempt_at"))
    shown = herald.cli("show", task_id)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert "state        queued (waiting to be tried again)" in lines
    attempt = next(line for line in lines if line.startswith("attempt "))
    assert re.fullmatch(r"attempt      2 of 2, next try in (30|2[0-9]) s \(at \d\d:\d\d:\d\d\)",
                        attempt), attempt  # fmt: skip
    assert "time limit   5 s per attempt" in lines
    assert "last error   exception: OSError: disk busy" in lines
    cancelled = herald.cli("cancel", task_id)  # queued: cancelled at once
    assert cancelled.stdout.strip() == f"{task_id}: cancelled"
    again = herald.cli("show", task_id).stdout
    assert "attempt      1 of 2\n" in again


# ------------------------------------------------------------------ cancel


def test_cancel_says_what_happens_and_wait_says_what_did(herald):
    proc = waiter(herald, "cli.stubborn")
    task = running_task(herald, "cli.stubborn")
    out = herald.cli("cancel", task["id"])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (f"{task['id']}: running; asked to stop; if it does not stop "
                                  "at a checkpoint within 0.5 s it is stopped by force")
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 1, stderr
    assert stderr.strip().endswith("herald: task cancelled: stopped by force after 0.5 s: it did "
                                   "not stop at a checkpoint")  # fmt: skip
    done = herald.cli("cancel", task["id"])
    assert done.stdout.strip() == f"{task['id']}: cancelled"
    finished = herald.cli("submit", "demo.answer", "seconds=0", "--wait")
    assert finished.returncode == 0
    last = json.loads(herald.cli("tasks", "--json", "--limit", "1").stdout)[0]
    assert herald.cli("cancel", last["id"]).stdout.strip() == (
        f"{last['id']}: already succeeded; nothing to cancel")


def test_ctrl_c_while_waiting_says_what_cancelling_does(herald):
    proc = waiter(herald, "demo.answer", "seconds=60")
    running_task(herald, "demo.answer")
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 130, stderr
    assert ("Cancelling: asked to stop; if it does not stop at a checkpoint within 5 s it is "
            "stopped by force. (Ctrl-C again to stop waiting.)") in stderr  # fmt: skip
    assert "herald: task cancelled: stopped at a checkpoint" in stderr


# ------------------------------------------------------------------ catalog


def test_catalog_lists_limits_and_retries_when_set(herald):
    lines = herald.cli("catalog").stdout.splitlines()
    after = {name: lines[i + 1] for i, line in enumerate(lines)
             for name in [line.split()[0]] if not line.startswith(" ")}  # fmt: skip
    assert after["cli.stubborn"] == (
        "    limits: time limit 20 s (up to 1 min), 0.5 s to stop when cancelled")
    assert after["cli.flaky"] == "    limits: 2 retries"
    assert after["demo.answer"].startswith("    seconds:")  # sets none: no line


def test_the_parser_takes_positive_seconds(capsys):
    with pytest.raises(SystemExit):
        cli.main(["submit", "demo.answer", "--timeout", "nan"])
    assert "must be a positive number of seconds" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "seconds"), [("7d", 7 * 86400), ("12h", 43200),
                                               ("30m", 1800), ("45s", 45), ("2w", 14 * 86400),
                                               ("3", 3 * 86400), ("0s", 0)])  # fmt: skip
def test_prune_ages(text, seconds):
    assert cli._duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "-1d", "", "d", "infd"])
def test_bad_prune_ages_are_refused(text):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError):
        cli._duration(text)


def test_prune_of_a_data_dir_without_a_ledger_says_so(tmp_path):
    out = subprocess.run([sys.executable, "-m", "embedded", "--data-dir", str(tmp_path), "prune"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 2 and "nothing to prune" in out.stderr
    assert not (tmp_path / "herald.db").exists()
