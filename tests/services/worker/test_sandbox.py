"""The sandbox for real: the rules planned around Herald's folders, and processes forked
here that confine themselves with Landlock and then try what a hostile task would. The
worker as a whole (herald serve, process.run) is tested in tests/e2e/test_sandbox.py."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from services import landlock
from services.core.params import Param, ParamType
from services.core.states import TaskState
from services.worker import executor, sandbox
from tests.e2e.harness import wait_for
from tests.services.worker.test_dispatcher import Harness, catalog, gone

needs_landlock = pytest.mark.skipif(not landlock.support().available,
                                    reason=f"sandbox {landlock.support().describe()}")


def outcome(action: Callable[[], Any]) -> Any:
    """What `action` returned, or the name of the errno it raised."""
    try:
        return action()
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc))


def confined(policy: sandbox.Policy, probe: Callable[[], dict[str, Any]],
             temp_dir: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Run `probe` in a child process confined to `policy`; its answers."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            sandbox.confine(policy, temp_dir)
            data = json.dumps(probe()).encode()
        except BaseException as exc:  # the test shows it
            data = json.dumps({"error": repr(exc)}).encode()
        os.write(w, data)
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        answers = json.loads(f.read())
    os.waitpid(pid, 0)
    assert "error" not in answers, answers
    return answers


def write(path: Path) -> Callable[[], str]:
    def action() -> str:
        path.write_text("x")
        return "ok"
    return action


def read(path: Path) -> Callable[[], str]:
    return lambda: path.read_text()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A user's folder with Herald's data dir deep inside it, and files around it."""
    data = tmp_path / "home" / ".local" / "share" / "herald"
    data.mkdir(parents=True)
    (data / "token").write_text("secret")
    (tmp_path / "home" / "notes.txt").write_text("mine")
    (tmp_path / "home" / "docs").mkdir()
    (tmp_path / "home" / ".local" / "share" / "other").mkdir()
    return tmp_path / "home"


def data_of(home: Path) -> Path:
    return home / ".local" / "share" / "herald"


# ---------------------------------------------------------------------------- planning


def test_the_plan_grants_around_herald_s_folder_and_never_on_its_path(home):
    data = data_of(home)
    (home / "docs" / "into-data").symlink_to(data)  # a link into it: not a way in
    (home / "to-docs").symlink_to(home / "docs")
    rules = {r.path: r for r in sandbox.plan(sandbox.Policy(write_roots=(str(home),),
                                                            deny=(str(data),)), system=False)}
    real = Path(os.path.realpath(home))
    assert set(rules) == {str(real / "notes.txt"), str(real / "docs"),
                          str(real / ".local" / "share" / "other")}  # fmt: skip
    assert all(r.write for r in rules.values())
    assert rules[str(real / "docs")].directory is True
    assert rules[str(real / "notes.txt")].directory is False


def test_a_root_inside_herald_s_folder_is_not_granted_and_reads_stay_reads(home):
    data = data_of(home)
    rules = sandbox.plan(sandbox.Policy(read_roots=(str(home / "docs"), str(data / "sub")),
                                        deny=(str(data),)), system=False)  # fmt: skip
    assert [(r.path, r.write) for r in rules] == [(os.path.realpath(home / "docs"), False)]


def test_a_policy_travels_as_json():
    policy = sandbox.principal_policy(["/a"], ["/b"], network=False, deny=["/c"])
    assert sandbox.Policy.from_json(json.loads(json.dumps(policy.to_json()))) == policy
    assert sandbox.owner_policy(["/c"]) == sandbox.Policy((), ("/",), True, ("/c",))


def test_support_says_what_is_enforced_or_why_not(monkeypatch):
    landlock.support.cache_clear()
    try:
        monkeypatch.setenv(landlock.DISABLE_ENV, "off")
        assert landlock.support().describe() == "unavailable: turned off (HERALD_SANDBOX=off)"
        landlock.support.cache_clear()
        monkeypatch.delenv(landlock.DISABLE_ENV)
        described = landlock.support().describe()
        assert described.startswith(("landlock ABI ", "unavailable: "))
    finally:
        landlock.support.cache_clear()


# ------------------------------------------------------------------- confined for real


@needs_landlock
def test_the_owner_reaches_every_file_but_herald_s(home):
    data = data_of(home)
    policy = sandbox.owner_policy([str(data)])
    answers = confined(policy, lambda: {
        "token": outcome(read(data / "token")),
        "via_proc_root": outcome(read(Path(f"/proc/self/root{data}/token"))),
        "list": outcome(lambda: os.listdir(data)),
        "write_in": outcome(write(data / "planted")),
        "overwrite": outcome(write(data / "token")),
        "cat": subprocess.run(["cat", str(data / "token")], capture_output=True,
                              text=True).returncode,  # fmt: skip
        "notes": outcome(read(home / "notes.txt")),
        "docs": outcome(write(home / "docs" / "new.txt")),
        "etc": outcome(read(Path("/etc/hostname"))) != "EACCES",
    })
    assert answers == {"token": "EACCES", "via_proc_root": "EACCES", "list": "EACCES",
                       "write_in": "EACCES", "overwrite": "EACCES", "cat": 1, "notes": "mine",
                       "docs": "ok", "etc": True}  # fmt: skip
    assert (data / "token").read_text() == "secret" and not (data / "planted").exists()


@needs_landlock
def test_a_principal_reads_its_read_roots_and_writes_its_write_roots_only(home, tmp_path):
    data = data_of(home)
    (home / "docs" / "report.csv").write_text("a,b")
    out = tmp_path / "out"
    out.mkdir()
    temp = tmp_path / "temp"
    temp.mkdir()
    policy = sandbox.principal_policy([str(home / "docs")], [str(out)], network=False,
                                      deny=[str(data)])  # fmt: skip
    answers = confined(policy, lambda: {
        "report": outcome(read(home / "docs" / "report.csv")),
        "write_read_root": outcome(write(home / "docs" / "x")),
        "out": outcome(write(out / "result.txt")),
        "temp": outcome(write(temp / "scratch")),
        "notes": outcome(read(home / "notes.txt")),
        "token": outcome(read(data / "token")),
        "shadow": outcome(read(Path("/etc/shadow"))),
        "python": outcome(lambda: __import__("zipfile").__name__),  # imported lazily
        "program": subprocess.run(["true"]).returncode,
    }, temp_dir=str(temp))
    assert answers == {"report": "a,b", "write_read_root": "EACCES", "out": "ok", "temp": "ok",
                       "notes": "EACCES", "token": "EACCES", "shadow": "EACCES",
                       "python": "zipfile", "program": 0}  # fmt: skip


@needs_landlock
@pytest.mark.skipif(not landlock.support().network, reason="no TCP rules before ABI 4")
@pytest.mark.parametrize("network", [False, True])
def test_tcp_needs_the_network_capability(network):
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]

        def probe() -> dict[str, Any]:
            def connect() -> str:
                with socket.create_connection(("127.0.0.1", port), timeout=5):
                    return "ok"

            def bind() -> str:
                with socket.create_server(("127.0.0.1", 0)):
                    return "ok"

            return {"connect": outcome(connect), "bind": outcome(bind)}

        answers = confined(sandbox.principal_policy([], [], network=network, deny=[]), probe)
    expected = "ok" if network else "EACCES"
    assert answers == {"connect": expected, "bind": expected}


@needs_landlock
@pytest.mark.skipif(not landlock.support().scopes, reason="no scoping before ABI 6")
def test_no_signal_and_no_abstract_socket_reaches_outside_the_sandbox():
    name = f"\0herald-test-{os.getpid()}-wake"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as wake:
        wake.bind(name)
        outside = subprocess.Popen(["sleep", "30"])
        try:
            def probe() -> dict[str, Any]:
                def send() -> str:
                    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                        s.sendto(b"stop", name)
                    return "ok"

                child = subprocess.Popen(["sleep", "30"])  # its own: inside the sandbox
                own = outcome(lambda: os.kill(child.pid, signal.SIGKILL))
                child.wait()
                return {
                    "parent": outcome(lambda: os.kill(os.getppid(), signal.SIGCONT)),
                    "probe": outcome(lambda: os.kill(os.getppid(), 0)),
                    "outside": outcome(lambda: os.kill(outside.pid, signal.SIGKILL)),
                    "wake": outcome(send),
                    "own": own,
                }

            answers = confined(sandbox.principal_policy([], [], network=True, deny=[]), probe)
            assert outside.poll() is None
        finally:
            outside.kill()
            outside.wait()
    assert answers == {"parent": "EPERM", "probe": "EPERM", "outside": "EPERM",
                       "wake": "EPERM", "own": None}  # fmt: skip


# ---------------------------------------------------------------- through the dispatcher


@catalog.task("t.snoop", params=[Param("data", ParamType.STRING),
                                 Param("port", ParamType.INTEGER),
                                 Param("pids", ParamType.STRING_LIST)])
def snoop(ctx, data, port, pids):
    """What a hostile task tries from inside its attempt."""
    def connect() -> str:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            return "ok"

    return {
        "token": outcome(read(Path(data) / "herald.db")),
        "list": outcome(lambda: os.listdir(data)),
        "plant": outcome(write(Path(data) / "config.toml")),
        "connect": outcome(connect),
        "kill": [outcome(lambda p=p: os.kill(int(p), 0)) for p in pids],
        # A ruleset's fd would let it add rules to the next attempts' sandboxes.
        "rulesets": [t for fd in os.listdir("/proc/self/fd")
                     if "landlock" in (t := outcome(lambda fd=fd: os.readlink(
                         f"/proc/self/fd/{fd}")))],  # fmt: skip
        "tmpdir": os.environ.get("TMPDIR"),
        "temp": outcome(write(Path(os.environ.get("TMPDIR", "/nonexistent")) / "scratch")),
    }


@pytest.fixture
def principal(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path / "data", policy_for=lambda rec: sandbox.principal_policy(
        [], [], network=False, deny=[str(tmp_path / "data")]))  # fmt: skip
    h.thread.start()
    yield h
    h.close()


@needs_landlock
def test_a_principal_s_attempt_is_confined_by_the_dispatcher(principal):
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        deadline = time.monotonic() + 10
        while len(executors := [ex.pid for ex in principal.dispatcher.executors]) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        task_id = principal.submit("t.snoop", {"data": str(principal.layout.root), "port": port,
                                               "pids": [str(p) for p in (os.getpid(),
                                                                         *executors)]})  # fmt: skip
        principal.wait_state(task_id, TaskState.SUCCEEDED)
    result = principal.store.get_task(task_id).result
    tmpdir = result.pop("tmpdir")
    assert result == {"token": "EACCES", "list": "EACCES", "plant": "EACCES",
                      "connect": "EACCES", "kill": ["EPERM"] * 3, "rulesets": [],
                      "temp": "ok"}  # fmt: skip
    assert tmpdir and "herald-attempt-" in tmpdir
    assert not (principal.layout.root / "config.toml").exists()
    deadline = time.monotonic() + 5  # removed by the executor once its attempt ended
    while os.path.exists(tmpdir):
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_without_landlock_attempts_run_in_the_executors_as_before(tmp_path):
    h = Harness(tmp_path / "data", confine=False)
    h.thread.start()
    try:
        task_id = h.submit("t.ok")
        h.wait_state(task_id, TaskState.SUCCEEDED)
        assert h.store.get_task(task_id).result["pid"] in {ex.pid for ex in h.dispatcher.executors}
        assert h.dispatcher.sandbox.describe() == "unavailable: not asked for"
    finally:
        h.close()


# ------------------------------------------------------------------------- runners

_memory: list[str] = []  # what the attempts run in one process have left in it


@catalog.task("t.remember", params=[Param("mark", ParamType.STRING),
                                    Param("mess", ParamType.BOOLEAN, default=False),
                                    Param("thread", ParamType.BOOLEAN, default=False)])
def remember(ctx, mark, mess, thread):
    """Leaves a mark in its process's memory and says what it found there."""
    import threading

    found = {"pid": os.getpid(), "memory": list(_memory), "cwd": os.getcwd(),
             "env": os.environ.get("HERALD_TEST_MESS"), "tmpdir": os.environ.get("TMPDIR"),
             "home": os.environ.get("HOME"), "path": os.environ.get("PATH")}
    _memory.append(mark)
    if mess:  # a variable added, one changed, one removed
        os.environ["HERALD_TEST_MESS"] = mark
        os.environ["HOME"] = "/nowhere"
        del os.environ["PATH"]
        os.chdir("/")
    if thread:
        threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
    return found


def _run(h: Harness, principal: str, mark: str, **kw: Any) -> dict[str, Any]:
    task_id = h.submit("t.remember", {"mark": mark, **kw}, principal=principal)
    h.wait_state(task_id, TaskState.SUCCEEDED)
    return h.store.get_task(task_id).result


@pytest.fixture
def one_executor(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path / "data", concurrency=1)
    h.thread.start()
    yield h
    h.close()


@needs_landlock
def test_a_principal_s_attempts_share_a_process_and_another_s_never_do(one_executor):
    h = one_executor
    a0 = _run(h, "alice", "a0")  # the first here: a process that ends with it
    a1, a2 = _run(h, "alice", "a1"), _run(h, "alice", "a2")
    assert a1["pid"] != a0["pid"] and "a0" not in a1["memory"]
    assert a2["pid"] == a1["pid"] and a2["memory"] == [*a1["memory"], "a1"]  # no fork
    assert a1["tmpdir"] != a2["tmpdir"]  # each attempt its own temp dir, still
    b1, b2 = _run(h, "bob", "b1"), _run(h, "bob", "b2")
    assert a1["pid"] not in (b1["pid"], b2["pid"]) and b2["pid"] != b1["pid"]
    assert not {"a1", "a2"} & {*b1["memory"], *b2["memory"]}
    # Taking turns: each principal's runner serves on, beside the other's.
    a3, b3 = _run(h, "alice", "a3"), _run(h, "bob", "b3")
    assert a3["pid"] == a1["pid"] and a3["memory"] == [*a2["memory"], "a2"]
    assert b3["pid"] == b2["pid"] and b3["memory"] == [*b2["memory"], "b2"]
    assert "b1" not in a3["memory"] and "b2" not in a3["memory"] and "a2" not in b3["memory"]


@needs_landlock
def test_a_cancel_reaches_an_attempt_in_a_runner(one_executor):
    h = one_executor
    first = _run(h, "a", "c0")["pid"]  # (the harness's cancel is principal "a"'s)
    task_id = h.submit("t.wait", principal="a")  # in a's runner
    h.wait_state(task_id, TaskState.RUNNING)
    h.cancel(task_id)
    assert h.wait_state(task_id, TaskState.CANCELLED) < 0.9  # well before its grace
    assert h.events(task_id)[-1].data == {"reason": "stopped at a checkpoint"}
    again = _run(h, "a", "c1")
    assert again["pid"] != first and "c0" not in again["memory"]
    assert _run(h, "a", "c2")["pid"] == again["pid"]  # the runner that was cancelled in


@pytest.fixture
def two_runners(monkeypatch):
    """Two runners a worker (forked executors get the values set here: they are set
    before the dispatcher starts them)."""
    monkeypatch.setattr(executor, "RUNNERS_TOTAL", 2)
    return monkeypatch


def _runner_pids(h: Harness, *who: str) -> dict[str, int]:
    """Each principal's runner (its second attempt runs in one), in this order."""
    return {w: (_run(h, w, "0"), _run(h, w, "1"))[1]["pid"] for w in who}


def _until_gone(*pids: int) -> None:
    deadline = time.monotonic() + 20  # however loaded the machine
    while not all(gone(p) for p in pids):
        assert time.monotonic() < deadline
        time.sleep(0.05)


@needs_landlock
def test_with_every_runner_busy_lately_a_principal_that_keeps_coming_takes_a_place(
        two_runners, tmp_path):  # fmt: skip
    two_runners.setattr(executor, "RUNNER_IDLE", 0.3)
    h = Harness(tmp_path / "data", concurrency=1)
    h.thread.start()
    try:
        pids = _runner_pids(h, "alice", "bob")
        carol = [_run(h, "carol", str(i))["pid"] for i in range(2)]
        assert len(set(carol)) == 2  # processes of its own: alice's and bob's are in use
        _until_gone(*carol)
        assert not gone(pids["alice"]) and not gone(pids["bob"])
        # The third time since alice's runner was last used: carol takes its place.
        third = _run(h, "carol", "2")["pid"]
        _until_gone(pids["alice"])
        assert _run(h, "carol", "3")["pid"] == third
        # Idle: bob's runner ends after 0.3 s; carol's, the most recent, waits for more.
        _until_gone(pids["bob"])
        time.sleep(0.5)
        assert not gone(third)
        assert _run(h, "carol", "4")["pid"] == third
        assert _run(h, "bob", "2")["pid"] != pids["bob"]
    finally:
        h.close()


@needs_landlock
def test_the_least_recently_used_runner_makes_room_once_unused_for_a_while(two_runners,
                                                                          tmp_path):
    two_runners.setattr(executor, "RUNNER_BUSY", 0.2)
    h = Harness(tmp_path / "data", concurrency=1)
    h.thread.start()
    try:
        pids = _runner_pids(h, "alice", "bob")
        time.sleep(0.3)
        carol = _runner_pids(h, "carol")["carol"]  # alice's ended to make room
        _until_gone(pids["alice"])
        assert _run(h, "carol", "2")["pid"] == carol
        assert _run(h, "bob", "2")["pid"] == pids["bob"]
    finally:
        h.close()


@needs_landlock
def test_what_an_attempt_changes_is_put_back_or_its_process_is_not_reused(one_executor):
    h = one_executor
    _run(h, "alice", "m0")
    first = _run(h, "alice", "m1", mess=True)
    after = _run(h, "alice", "m2")
    assert after["pid"] == first["pid"]
    assert (after["cwd"], after["env"]) == (first["cwd"], first["env"]) != ("/", "m1")
    assert (after["home"], after["path"]) == (first["home"], first["path"])
    assert first["path"] and first["home"] != "/nowhere"
    _run(h, "alice", "t1", thread=True)  # leaves a thread running
    fresh = _run(h, "alice", "t2")
    assert fresh["pid"] != first["pid"] and fresh["memory"] == []


@catalog.task("t.neighbour", params=[Param("others", ParamType.STRING_LIST)])
def neighbour(ctx, others):
    """Tries the temp dirs of other principals' processes, beside its own."""
    mine = Path(os.environ["TMPDIR"])
    return {"mine": outcome(write(mine / "x")),
            "list": [outcome(lambda o=o: os.listdir(o)) for o in others],
            "plant": [outcome(write(Path(o) / "planted")) for o in others]}


@needs_landlock
def test_a_principal_s_attempt_cannot_reach_another_principal_s_temp_dirs(principal):
    h = principal
    for who in ("bob", "bob", "carol", "carol"):  # their processes live on, with their
        h.wait_state(h.submit("t.ok", principal=who), TaskState.SUCCEEDED)  # temp roots
    roots = [str(p) for p in Path(h.dispatcher._temp.current).glob("*/herald-runner-*")]
    assert roots
    alice = h.submit("t.neighbour", {"others": roots}, principal="alice")
    h.wait_state(alice, TaskState.SUCCEEDED)
    result = h.store.get_task(alice).result
    assert result["mine"] == "ok"
    # EACCES where the other's process lives on; ENOENT where alice's process replaced it
    # (its temp root went with it)
    assert set(result["list"]) | set(result["plant"]) <= {"EACCES", "ENOENT"}
    assert "EACCES" in result["list"] and result["list"] == result["plant"]


@needs_landlock
def test_principals_with_the_same_policy_never_reach_each_other_s_temp_root(tmp_path):
    """Both runners live on one executor, confined by rulesets planned from one policy:
    each has its own (a temp root granted to one is never in the other's)."""
    h = Harness(tmp_path / "data", concurrency=1, policy_for=lambda rec: (
        sandbox.principal_policy([], [], network=False, deny=[str(tmp_path / "data")])))
    h.thread.start()
    try:
        bob = _run(h, "bob", "b0") and _run(h, "bob", "b1")  # bob's runner, and its root
        roots = [str(p) for p in Path(h.dispatcher._temp.current).glob("*/herald-runner-*")]
        assert len(roots) == 1 and bob["tmpdir"].startswith(roots[0])
        h.wait_state(h.submit("t.ok", principal="carol"), TaskState.SUCCEEDED)
        carol = h.submit("t.neighbour", {"others": roots}, principal="carol")  # its runner
        h.wait_state(carol, TaskState.SUCCEEDED)
        result = h.store.get_task(carol).result
        assert os.path.isdir(roots[0])  # bob's runner lives on
        assert result == {"mine": "ok", "list": ["EACCES"], "plant": ["EACCES"]}
        assert _run(h, "bob", "b2")["pid"] == bob["pid"]
    finally:
        h.close()


@pytest.fixture
def quick_idle(monkeypatch):
    """Rulesets looked at every 0.1 s and dropped after 0.4 s idle (forked executors get
    these values: they are set before the dispatcher starts them)."""
    monkeypatch.setattr(sandbox.RulesetCache, "CHECK_EVERY", 0.1)
    monkeypatch.setattr(sandbox.RulesetCache, "IDLE_DROP", 0.4)


@needs_landlock
@pytest.mark.skipif(not landlock.support().available or not sandbox.can_hide(),
                    reason="Herald's folders cannot be hidden here")
def test_the_owner_s_runner_outlives_idle_and_another_principal_s_does_not(quick_idle,
                                                                           tmp_path):
    owner = Harness(tmp_path / "owner", concurrency=1)
    notes = tmp_path / "notes.txt"  # a file of the user's granted on its own: held by the rule
    notes.write_text("mine")
    other = Harness(tmp_path / "other", concurrency=1, policy_for=lambda rec: (
        sandbox.principal_policy([str(notes)], [], network=False,
                                 deny=[str(tmp_path / "other")])))  # fmt: skip
    for h in (owner, other):
        h.thread.start()
    try:
        before = [(_run(h, "alice", "i0"), _run(h, "alice", "i1"))[1]["pid"]
                  for h in (owner, other)]  # fmt: skip
        # Idle: the principal's rules (which hold a file) are dropped, and its runner ends
        # with them (however loaded the machine, within 20 s); the owner's stays.
        deadline = time.monotonic() + 20
        while not gone(before[1]):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)  # longer than the drop takes: the owner's was not dropped meanwhile
        after = [_run(h, "alice", "i2")["pid"] for h in (owner, other)]
        assert after[0] == before[0]  # the owner's: ready, no fork after idle
        assert after[1] != before[1]
    finally:
        owner.close()
        other.close()


@catalog.task("t.leave_and_wait")
def leave_and_wait(ctx):
    """Leaves a file in its temp dir, then waits to be killed."""
    (Path(os.environ["TMPDIR"]) / "left").write_text("x")
    ctx.sleep(60)


@needs_landlock
def test_a_killed_executor_leaves_no_temp_dir_behind(one_executor):
    """Its runners' roots and its attempts' temp dirs go with it, as it ends, not when the
    worker does."""
    h = one_executor
    _run(h, "alice", "a0")
    _run(h, "alice", "a1")  # alice's runner, and its root
    task = h.submit("t.leave_and_wait", principal="alice")
    h.wait_state(task, TaskState.RUNNING)
    parent = Path(h.dispatcher._temp.current)
    [left] = wait_for(lambda: list(parent.rglob("left")))
    roots = list(parent.rglob("herald-runner-*"))
    assert roots
    [pid] = list(h.dispatcher._executors)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: gone(pid) and not any(p.exists() for p in [left, *roots]), timeout=10)
    h.store.request_cancel(task, "alice")  # (its next attempt waits, in the next executor)
    h.worker_wake.wake(b"cancel")
    h.wait_state(task, TaskState.CANCELLED)
