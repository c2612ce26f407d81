"""The first attempt after idle: what an executor plans, builds and keeps of its rulesets.

Counted, never timed: how many rules a plan has, which rulesets an executor builds for an
owner's attempt, and whether the one it built is reused after the executor was idle.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from services import landlock
from services.core.params import Param, ParamType
from services.worker import protocol, sandbox
from services.worker.executor import Executor
from tests.services.worker.test_dispatcher import catalog

needs_landlock = pytest.mark.skipif(not landlock.support().available,
                                    reason=f"sandbox {landlock.support().describe()}")


@catalog.task("t.peek", params=[Param("path", ParamType.STRING)])
def peek(ctx, path):
    """Whether the attempt can read `path` (a file of Herald's)."""
    try:
        return Path(path).read_text()
    except OSError as exc:
        return exc.errno


def idle_for_long(cache: sandbox.RulesetCache) -> None:
    """As if no attempt came for longer than the cache's idle drop."""
    cache._used -= cache.IDLE_DROP + 1


# ---------------------------------------------------------------------------- planning


def test_a_write_grant_on_a_folder_makes_every_rule_beneath_it_unneeded(tmp_path):
    """Landlock rights add up: beneath a folder granted everything, a rule grants nothing
    more. The owner's policy once Herald's folders are hidden is "/" and nothing else."""
    rules = sandbox.plan(sandbox.flat(sandbox.owner_policy([str(tmp_path / "data")])))
    assert [(r.path, r.write) for r in rules] == [("/", True)]
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("x")
    policy = sandbox.Policy(read_roots=(str(tmp_path / "docs" / "a.txt"),),
                            write_roots=(str(tmp_path),))  # fmt: skip
    assert [r.path for r in sandbox.plan(policy, system=False)] == [os.path.realpath(tmp_path)]


def test_the_owner_s_fallback_plan_keeps_no_rule_beneath_a_folder_it_writes(tmp_path):
    (tmp_path / "data").mkdir()
    rules = sandbox.plan(sandbox.owner_policy([str(tmp_path / "data")]))
    written = [r.path for r in rules if r.write and r.directory is not False]
    assert written
    for rule in rules:
        assert not any(rule.path.startswith(w.rstrip("/") + "/") for w in written), rule.path


# ----------------------------------------------------------------------- kept over idle


@needs_landlock
def test_a_ruleset_that_pins_no_file_of_the_user_s_is_kept_over_idle_without_a_timer(tmp_path):
    cache = sandbox.RulesetCache()
    policy = sandbox.principal_policy([], [str(tmp_path)], network=False, deny=[])
    first = cache.for_attempt(policy, None)
    assert cache.timeout() is None  # nothing to look at while idle: the executor sleeps
    idle_for_long(cache)
    cache.expire()
    assert cache.for_attempt(policy, None) is first  # reused, not rebuilt
    cache.close_all()


@needs_landlock
def test_a_ruleset_that_pins_a_user_s_file_is_still_dropped_when_idle(tmp_path):
    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    (home / "notes.txt").write_text("mine")  # granted on its own, around data/
    cache = sandbox.RulesetCache()
    policy = sandbox.principal_policy([], [str(home)], network=False, deny=[str(home / "data")])
    first = cache.for_attempt(policy, None)
    assert cache.timeout() == cache.CHECK_EVERY
    idle_for_long(cache)
    cache.expire()
    assert cache.timeout() is None
    assert cache.for_attempt(policy, None) is not first
    cache.close_all()


# ------------------------------------------------------------------------ the executor


def run_attempt(executor: Executor, peer: socket.socket, policy: sandbox.Policy,
                temp_dir: Path, n: int, task: str = "t.ok",
                args: dict[str, Any] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """One confined attempt through the executor; the frames it sent."""
    temp_dir.mkdir()
    executor._run_forked({"t": "run", "id": f"t{n}", "attempt": 1, "name": task,
                          "args": args or {}, "sandbox": policy.to_json(),
                          "temp_dir": str(temp_dir)})  # fmt: skip
    reader, frames = protocol.FrameReader(), []
    while not frames or frames[-1]["t"] != "ended":
        frames.extend(reader.feed(peer.recv(1 << 16)))
    return frames


@needs_landlock
@pytest.mark.skipif(not sandbox.can_hide(), reason="no mount namespace here")
def test_an_owner_s_attempts_build_one_small_ruleset_and_reuse_it_after_idle(tmp_path,
                                                                           monkeypatch):
    """Where Herald's folders can be hidden, the owner's attempt is granted "/": the
    ruleset that grants around Herald's folders (hundreds of rules, built in tens of ms)
    is only a fallback, built by the attempt itself if hiding fails, not before each one."""
    (tmp_path / "data").mkdir()
    run, peer = socket.socketpair()
    control, control_peer = socket.socketpair()
    executor = Executor(run, control, catalog, fork_attempts=True)
    policy = sandbox.owner_policy([str(tmp_path / "data")])
    built: list[sandbox.Policy] = []
    real_init = sandbox.Ruleset.__init__

    def counting_init(self: sandbox.Ruleset, wanted: sandbox.Policy) -> None:
        built.append(wanted)
        real_init(self, wanted)

    monkeypatch.setattr(sandbox.Ruleset, "__init__", counting_init)
    try:
        frames = run_attempt(executor, peer, policy, tmp_path / "a1", 1)
        assert [f["t"] for f in frames][-2:] == ["done", "ended"]
        assert frames[-2]["outcome"] == "succeeded", frames[-2]
        assert built == [sandbox.flat(policy)]
        idle_for_long(executor._rulesets)
        assert executor._rulesets.timeout() is None
        executor._rulesets.expire()
        frames = run_attempt(executor, peer, policy, tmp_path / "a2", 2)
        assert frames[-2]["outcome"] == "succeeded", frames[-2]
        assert built == [sandbox.flat(policy)]  # the one built before idle, reused
    finally:
        executor._rulesets.close_all()
        for s in (run, peer, control, control_peer):
            s.close()


@needs_landlock
@pytest.mark.skipif(not sandbox.can_hide(), reason="no mount namespace here")
def test_an_attempt_that_cannot_hide_herald_s_folders_builds_the_fallback_itself(
        tmp_path, monkeypatch):  # fmt: skip
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "herald.db").write_text("secret")
    run, peer = socket.socketpair()
    control, control_peer = socket.socketpair()
    executor = Executor(run, control, catalog, fork_attempts=True)
    executor._can_hide()  # (tried for real, before hiding is made to fail below)
    monkeypatch.setattr(sandbox, "hide", lambda folders: False)
    policy = sandbox.owner_policy([str(tmp_path / "data")])
    try:
        frames = run_attempt(executor, peer, policy, tmp_path / "a1", 1, "t.peek",
                             {"path": str(tmp_path / "data" / "herald.db")})  # fmt: skip
        assert frames[-2]["outcome"] == "succeeded", frames[-2]
        assert frames[-2]["result"] == errno.EACCES  # confined around Herald's folder
        assert [p for _, p in executor._rulesets._sets] == [sandbox.flat(policy)]
    finally:
        executor._rulesets.close_all()
        for s in (run, peer, control, control_peer):
            s.close()
