"""The `herald` command line's time limits, retries and cancels, against a real `herald
serve` with a few tasks of its own (a config-file plugin module); and the wording helpers
the command line shares with the desktop app."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

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
        inst = start_serve(data, root / "runtime", "--concurrency", "3")
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
    first, *rest = out.stderr.splitlines()
    assert re.fullmatch(r"herald: task [0-9a-f]{32}", first)  # at once, to follow it later
    assert rest == [
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


CTRL_C_AT_IMPORT = """
import os, signal, sys

class CtrlC:  # the user's Ctrl-C, just as the command line is being imported
    def find_spec(self, name, path=None, target=None):
        if name == "embedded.cli":
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, CtrlC())
"""


@pytest.mark.parametrize("entry", [["-m", "embedded"], ["-c", "import sys; from embedded.entry "
                                                         "import main; sys.exit(main())"]])
def test_ctrl_c_while_the_command_starts_ends_it_quietly(tmp_path, entry):
    (tmp_path / "sitecustomize.py").write_text(CTRL_C_AT_IMPORT)
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{repo}"}
    out = subprocess.run([sys.executable, *entry, "--version"], env=env, capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert out.returncode == cli.EXIT_INTERRUPTED, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr and out.stdout == ""


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


# ------------------------------------------------------------------ exit codes, ids, follow


def in_process(herald: Instance, monkeypatch: pytest.MonkeyPatch,
               capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:  # fmt: skip
    """`herald ARGS` run by this process (no interpreter to start): exit code, out, err."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", herald.env["XDG_RUNTIME_DIR"])
    monkeypatch.setenv("HERALD_DATA_DIR", herald.env["HERALD_DATA_DIR"])
    capsys.readouterr()
    try:
        code = cli.main(list(args))
    except SystemExit as exc:  # argparse
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return int(code), out, err


def test_exit_codes_say_what_happened(herald, monkeypatch, capsys, tmp_path):
    assert [int(c) for c in cli.ExitCode] == [0, 1, 2, 3, 130]

    def run(*args: str) -> tuple[int, str, str]:
        return in_process(herald, monkeypatch, capsys, *args)

    code, out, err = run("submit", "process.run", "program=false", "--wait")
    assert code == 1, err  # it exited 1: the task failed
    assert "herald: task failed: false exited with code 1" in err
    task = json.loads(run("show", err.split()[2], "--json")[1])  # the id, said at once
    assert task["state"] == "failed" and task["error"]["code"] == "exit_status"
    assert task["error"]["detail"]["exit_code"] == 1
    code, out, err = run("submit", "process.run", "program=sh", "args=-c 'echo hi; exit 3'",
                         "ok_exit_codes=0,3", "--wait")  # fmt: skip
    assert code == 0 and out.startswith("hi\n"), err
    code, out, err = run("submit", "process.run", "program=sh",
                         "args=-c 'echo one; echo two; exit 3'", "--wait")  # fmt: skip
    assert code == 1 and out == "one\ntwo\n" and "sh exited with code 3" in err
    shown = run("show", err.split()[2][:6])[1].splitlines()
    assert "error        exit_status: sh exited with code 3" in shown
    assert shown[shown.index("last output  one") + 1] == "             two"

    for args, says in [
        (("submit", "no.such.task"), "unknown task 'no.such.task'"),
        (("submit", "demo.answer", "secs=1"), "has no parameter 'secs'; it takes: seconds"),
        (("submit", "cli.flaky", "x=1"), "cli.flaky has no parameter 'x'; it takes no parameters"),
        (("submit", "demo.answer", "seconds"), "expected KEY=VALUE"),
        (("submit", "demo.answer", "seconds=soon"), "seconds must be a number"),
        (("submit", "demo.answer", "seconds=-1"), "seconds: must be at least 0"),  # the 422
        (("tasks", "--limit", "x"), "invalid int value"),  # argparse
    ]:
        code, _, err = run(*args)
        assert code == 2 and says in err, (args, code, err)
    code, _, err = run("--data-dir", str(tmp_path), "tasks")
    assert code == 3 and "not running" in err


def test_ids_may_be_unique_prefixes(herald, monkeypatch, capsys):
    def run(*args: str) -> tuple[int, str, str]:
        return in_process(herald, monkeypatch, capsys, *args)

    done = run("submit", "demo.answer", "seconds=0", "--timeout", "2.5", "--wait")
    done_id = done[2].split()[2]
    busy_id = run("submit", "demo.answer", "seconds=60")[1].strip()
    running_task(herald, "demo.answer")
    code, out, _ = run("show", done_id[:6])
    assert code == 0 and f"id           {done_id}" in out.splitlines()
    code, _, err = run("show", done_id[:3])
    assert code == 2 and "at least 4 characters" in err
    code, _, err = run("show", "ffffffffffff")
    assert code == 2 and "no task 'ffffffffffff'" in err

    code, _, err = run("rm", busy_id[:5])  # running: refused, with the way out
    assert code == 2 and f"cancel it first (`herald cancel {busy_id[:8]}`)" in err
    code, out, _ = run("cancel", busy_id[:5])
    assert code == 0 and out.startswith(f"{busy_id}: ")

    code, out, err = run("rerun", done_id[:7])  # the same task, arguments and time limit
    new_id = out.strip()
    assert code == 0 and new_id != done_id, err
    new = herald.client.get(new_id)
    assert (new["task"], new["args"], new["timeout"]) == ("demo.answer", {"seconds": 0}, 2.5)
    code, out, _ = run("rerun", done_id[:7], "--wait")
    assert code == 0 and out.strip() == "42"

    wait_for(lambda: herald.client.get(busy_id)["state"] == "cancelled")
    code, out, err = run("rm", done_id[:6], busy_id[:6])
    assert code == 0, err
    assert out.splitlines() == [f"{done_id}: removed", f"{busy_id}: removed"]
    assert run("show", done_id)[0] == 2


@contextlib.contextmanager
def spawned(herald: Instance, *args: str) -> Iterator[subprocess.Popen[str]]:
    """`herald ARGS` in the background; killed if the test ends before it does."""
    proc = subprocess.Popen([sys.executable, "-m", "embedded", *args], env=herald.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def lines_until(pipe, predicate, timeout: float = 30) -> list[str]:
    """Lines read from `pipe` until one satisfies `predicate` (fail after `timeout`).
    Reads the file descriptor itself: what it leaves unread, communicate() still gets."""
    import os
    import select

    seen: list[str] = []
    partial = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not select.select([pipe.fileno()], [], [], 0.2)[0]:
            continue
        chunk = os.read(pipe.fileno(), 65536)
        if not chunk:
            break
        *lines, partial = (partial + chunk).split(b"\n")
        for line in lines:
            seen.append(line.decode())
            if predicate(seen[-1]):
                return seen
    raise AssertionError(f"not seen in time: {seen}")


def test_follow_reattaches_and_ctrl_c_only_detaches(herald, tmp_path):
    gate = tmp_path / "go"
    code = (f"import os, time\nprint('before', flush=True)\n"
            f"while not os.path.exists({str(gate)!r}): time.sleep(0.05)\n"
            "print('after', flush=True)\nraise SystemExit(4)")  # fmt: skip
    task_id = herald.client.submit("process.run", {"program": sys.executable,
                                                   "args": ["-c", code]})["id"]  # fmt: skip

    with spawned(herald, "follow", task_id[:6]) as first:
        lines_until(first.stderr, lambda line: line.startswith(f"herald: following {task_id}"))
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=20)
    assert first.returncode == 130, err
    assert "stopped following; the task keeps running" in err
    assert herald.client.get(task_id)["state"] == "running"  # never cancelled
    wait_for(lambda: any(e.type.value == "output" for e in herald.client.timeline(task_id)))

    with spawned(herald, "follow", task_id[:6]) as second:
        lines_until(second.stderr, lambda line: line.startswith("herald: following"))
        gate.touch()
        out, err = second.communicate(timeout=30)
    assert second.returncode == 1, err  # its outcome: the program exited 4
    assert out.splitlines() == ["after"]  # live output from where it re-attached
    assert err.strip().endswith("exited with code 4")


def test_tasks_is_a_table_and_watch_redraws_on_events(herald, monkeypatch, capsys):
    task_id = herald.client.submit("demo.answer", {"seconds": 0})["id"]
    wait_for(lambda: herald.client.get(task_id)["state"] == "succeeded")
    code, out, _ = in_process(herald, monkeypatch, capsys, "tasks", "--limit", "3")
    header, first, *_ = out.splitlines()
    assert header.split() == ["ID", "TASK", "STATE", "PROGRESS", "AGE", "MESSAGE"]
    assert first.split()[:4] == [task_id[:8], "demo.answer", "succeeded", "100%"]
    for column in ("TASK", "STATE", "AGE"):  # aligned: every row's cell starts under it
        at = header.index(column)
        assert all(line[at - 2:at] == "  " for line in out.splitlines()[1:]), column

    with spawned(herald, "tasks", "--watch") as watch:
        lines_until(watch.stdout, lambda line: line.startswith(task_id[:8]))
        new_id = herald.client.submit("demo.answer", {"seconds": 0})["id"]
        lines_until(watch.stdout, lambda line: line.startswith(new_id[:8]) and "succeeded" in line)
        watch.send_signal(signal.SIGINT)
        _, err = watch.communicate(timeout=20)
    assert watch.returncode == 0, err


def test_catalog_lists_choices_required_parameters_and_lists(herald, monkeypatch, capsys):
    out = in_process(herald, monkeypatch, capsys, "catalog")[1].splitlines()
    assert any(line.startswith('    algorithm: choice = "sha256", one of: sha256, sha1, md5')
               for line in out)  # fmt: skip
    assert any(line.startswith("    path: path (required), an existing file or folder")
               for line in out)  # fmt: skip
    assert "        a list: args='a b' (split like a shell) or args=a args=b" in out
    assert "        a list: ok_exit_codes=0,1 or ok_exit_codes=0 ok_exit_codes=1" in out


def test_lists_are_split_like_a_shell_or_given_by_repeating_the_key():
    spec = {"name": "t", "params": [{"name": "args", "type": "string_list"},
                                    {"name": "codes", "type": "integer_list"}]}  # fmt: skip
    assert cli._parse_kv(spec, ["args=-l 'a b'", "args=-x", "codes=0,1", "codes=3"]) == {
        "args": ["-l", "a b", "-x"], "codes": [0, 1, 3]}
    with pytest.raises(cli.UsageError, match="^t has no parameter 'x'; it takes no parameters$"):
        cli._parse_kv({"name": "t", "params": []}, ["x=1"])


def _walk(parser):
    import argparse

    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _walk(sub)


def test_help_hides_nothing_badly_and_explains_every_option(capsys):
    import argparse

    parser = cli._parser()
    for p in _walk(parser):
        for action in p._actions:
            assert action.help and action.help != argparse.SUPPRESS, (p.prog, action.dest)
        p.print_help()
        text = capsys.readouterr().out
        assert "==SUPPRESS==" not in text and " service " not in text, p.prog
    parser.print_help()
    text = capsys.readouterr().out
    assert "exit codes:" in text and "130  interrupted (Ctrl-C)" in text
    assert "3    Herald is not running" in text


def test_bash_completion_completes_commands_options_tasks_and_ids(herald, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "herald"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m embedded "$@"\n')
    shim.chmod(0o755)
    script = herald.cli("completion", "bash").stdout
    task_id = herald.client.submit("demo.answer", {"seconds": 0})["id"]

    def complete(*words: str) -> list[str]:
        line = " ".join(f"'{w}'" for w in words)
        code = (f"{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _herald; "
                'printf "%s\\n" "${COMPREPLY[@]}"')  # fmt: skip
        env = {**herald.env, "PATH": f"{bin_dir}:{herald.env['PATH']}"}
        done = subprocess.run(["bash", "-c", code], env=env, capture_output=True, text=True,
                              timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert complete("herald", "fo") == ["follow"]
    assert complete("herald", "tasks", "--w") == ["--watch"]
    assert complete("herald", "submit", "demo.a") == ["demo.answer"]
    assert complete("herald", "submit", "demo.answer", "sec") == ["seconds="]
    assert complete("herald", "show", task_id[:5]) == [task_id[:8]]
    zsh = herald.cli("completion", "zsh").stdout
    assert zsh.startswith("#compdef herald") and "'follow:re-attach" in zsh


def test_building_the_command_line_reads_no_package_metadata():
    """`herald serve` (every command) builds the parser before it does anything: the
    version is looked up only for `--version`, not while building it (importlib.metadata
    and its scan of the installed distributions cost 30-40 ms before the services start)."""
    code = ("import sys\nfrom embedded import cli\ncli._parser().parse_args(['serve'])\n"
            "print('importlib.metadata' in sys.modules)\n")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30, cwd=Path(cli.__file__).parents[1])  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
    version = subprocess.run([sys.executable, "-m", "embedded", "--version"],
                             capture_output=True, text=True, timeout=30,
                             cwd=Path(cli.__file__).parents[1])  # fmt: skip
    assert version.returncode == 0 and version.stdout.startswith("herald "), version


@pytest.mark.parametrize("service", ["web", "notifier"])
def test_service_subcommand_starts_the_service(service, tmp_path):
    """`herald service NAME` (the frozen bundle's children) starts the service as
    `python -m services.NAME` does, OpenSSL kept out of its framework's imports the same
    way (services.notls), and it stops on end of stdin."""
    from services.runtime import parse_ready

    root = Path(cli.__file__).parents[1]
    proc = subprocess.Popen([sys.executable, "-m", "embedded", "service", service,
                             "--data-dir", str(tmp_path / "data"), "--port", "0"],
                            cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        info = parse_ready(proc.stdout.readline())
        assert info is not None and info["service"] == service and info["port"] > 0
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
