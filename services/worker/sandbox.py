"""What an attempt's process may touch, and confining it there with Landlock.

The dispatcher hands each attempt a `Policy` (the principal's folders, whether it may use
the network, Herald's own folders); the attempt's process, forked for that attempt alone
(Landlock cannot be lifted), turns it into rules with `plan()` and enforces them with
`confine()` before the task's code runs. Whatever it starts (`process.run`) inherits them.

Landlock only grants: a folder inside a granted one cannot be denied. So a root that holds
one of Herald's folders is granted piece by piece: along the path down to each denied
folder, every sibling is granted and the folders on the path are not (their files are, one
by one). Computed when the attempt starts, from what exists then. So a task cannot create
new entries directly in such a folder (e.g. in ~ when the data dir is ~/.local/share/herald);
in any of its subfolders it can.

Enforced (ABI 7 here): reads and writes outside the rules; TCP bind and connect for a
policy without `network` (ABI 4); signals to processes outside the attempt's sandbox and
connections to abstract Unix sockets outside it (ABI 6), so a task cannot kill the worker,
another executor, or talk to Herald's abstract wake-up sockets. Not covered by Landlock:
UDP, connecting to a Unix socket by path, and reaching a folder through a bind mount.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import time
from dataclasses import dataclass
from typing import Any

from services import landlock

# The system's library and program folders, readable (and executable) by every attempt.
SYSTEM_READ = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt",
               "/etc", "/proc", "/sys")  # fmt: skip
# ... except what in them is a secret of the machine's (readable as root).
SYSTEM_SECRETS = ("/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-",
                  "/etc/sudoers", "/etc/sudoers.d", "/etc/ssh", "/etc/ssl/private",
                  "/etc/security/opasswd")  # fmt: skip
DEVICES_RW = ("/dev/null", "/dev/zero", "/dev/full", "/dev/tty")
DEVICES_READ = ("/dev/random", "/dev/urandom")
_SYSTEM_FILES = (*SYSTEM_READ, *DEVICES_RW, *DEVICES_READ)  # a rule on these holds no user's


@dataclass(frozen=True)
class Policy:
    """What one attempt may touch.

    Attributes:
        read_roots: folders (or files) it may read, besides the system's and Python's.
        write_roots: folders it may read and write (create, remove, rename...).
        network: whether it may bind and connect TCP sockets.
        deny: Herald's own folders: nothing in them, even inside a root.
    """

    read_roots: tuple[str, ...] = ()
    write_roots: tuple[str, ...] = ()
    network: bool = False
    deny: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"read": list(self.read_roots), "write": list(self.write_roots),
                "network": self.network, "deny": list(self.deny)}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Policy:
        return cls(tuple(map(str, data.get("read") or ())),
                   tuple(map(str, data.get("write") or ())),
                   bool(data.get("network")), tuple(map(str, data.get("deny") or ())))  # fmt: skip


def owner_policy(deny: list[str] | tuple[str, ...]) -> Policy:
    """The install's owner: every file of the user's, the network, none of Herald's."""
    return Policy(write_roots=("/",), network=True, deny=tuple(map(str, deny)))


def is_owner(policy: Policy) -> bool:
    """Whether `policy` grants everything but Herald's folders (the owner's)."""
    return tuple(policy.write_roots) == ("/",)


def flat(policy: Policy) -> Policy:
    """The owner's policy once Herald's folders are hidden (`hide`): all of "/"."""
    return Policy(write_roots=("/",), network=policy.network, deny=())


CLONE_NEWNS, CLONE_NEWUSER = 0x00020000, 0x10000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REC, MS_PRIVATE = 0x4000, 1 << 18


def hide(folders: list[str] | tuple[str, ...]) -> bool:
    """In the calling process (single-threaded: a fresh fork), cover each folder with an
    empty read-only tmpfs in a mount namespace of its own; True if every one is covered.

    This lifts what Landlock alone imposes on the owner: a grant cannot leave out a folder
    beneath it, so granting around Herald's folders leaves the folders on their path (the
    home folder, ~/.local/share) without the right to create anything directly in them. With
    the folders covered, "/" can be granted whole. Landlock, enforced next, forbids the
    attempt to unmount them (and to reach other processes' mounts through /proc/PID/root,
    as ptrace). A new mount namespace needs CAP_SYS_ADMIN, or a user namespace of its own
    (which some systems forbid): False then, and the caller grants around the folders.
    """
    from services.landlock import libc

    c = libc()
    uid, gid = os.getuid(), os.getgid()
    if c.unshare(CLONE_NEWNS) != 0:
        if c.unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0:
            return False
        try:  # the same ids inside as outside, and no group changes
            for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                               ("gid_map", f"{gid} {gid} 1")):  # fmt: skip
                with open(f"/proc/self/{name}", "w") as f:
                    f.write(text)
        except OSError:
            return False
    if c.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        return False  # mounts would propagate to the real system: never
    covered = True
    for folder in sorted({os.path.realpath(f) for f in folders}, key=len):
        if not os.path.isdir(folder):
            continue  # nothing there (yet): a task cannot create it either, see plan()
        flags = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
        if c.mount(b"tmpfs", os.fsencode(folder), b"tmpfs", flags, b"size=4k,mode=0000") != 0:
            covered = False
    return covered


def can_hide() -> bool:
    """Whether `hide` works here (tried once in a throwaway child: it cannot be undone)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = 0 if hide(()) else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def principal_policy(read_roots: list[str] | tuple[str, ...],
                     write_roots: list[str] | tuple[str, ...], *, network: bool,
                     deny: list[str] | tuple[str, ...]) -> Policy:  # fmt: skip
    """Another principal: its own roots only (the capabilities the lead wires in)."""
    return Policy(tuple(map(str, read_roots)), tuple(map(str, write_roots)), network,
                  tuple(map(str, deny)))  # fmt: skip


@dataclass(frozen=True)
class Rule:
    """One path-beneath grant: `path` (resolved) and what it allows beneath it."""

    path: str
    access: int  # landlock.FS_* bits; narrowed to file rights on a file
    write: bool  # a write root's grant (everything), else a read grant
    directory: bool | None = None  # None: not known yet (looked at when applied)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def python_read_roots() -> list[str]:
    """Python's own files (the interpreter, its standard library, the installed packages
    and the code of Herald and its plug-ins): a task may import modules lazily."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix,
             os.path.dirname(os.path.realpath(sys.executable))}  # fmt: skip
    roots.update(p for p in sys.path if p and os.path.isabs(p))
    return sorted(roots)


def plan(policy: Policy, temp_dir: str | None = None, *, system: bool = True,
         watch: list[str] | None = None) -> list[Rule]:  # fmt: skip
    """The rules that carry out `policy` now (symlinks resolved; what does not exist is
    left out); `temp_dir`, the attempt's own, is writable.

    Args:
        watch: filled with the folders whose listing the rules depend on, and the roots
            that do not exist: while none of them changes, the rules stand.
    """
    deny = sorted({os.path.realpath(d) for d in policy.deny})
    write = [*policy.write_roots, *([temp_dir] if temp_dir else [])]
    read = [*policy.read_roots]
    secrets = list(SYSTEM_SECRETS)
    if system:
        read = [*SYSTEM_READ, *python_read_roots(), *DEVICES_READ, *read]
        write.extend(DEVICES_RW)
    grants: dict[str, bool] = {}  # path -> write
    kinds: dict[str, bool] = {}  # path -> is a directory, when scandir said so

    def grant(path: str, is_write: bool, blocked: list[str]) -> None:
        real = os.path.realpath(path)
        if not os.path.lexists(real):
            if watch is not None:
                watch.append(path)
            return
        if any(_inside(real, d) for d in blocked):
            return
        inner = [d for d in blocked if _inside(d, real)]
        if not inner:
            grants[real] = grants.get(real, False) or is_write
            return
        # A denied folder lies beneath: grant around it, level by level.
        ancestors = {real}
        for d in inner:
            up = d
            while up != real and _inside(up, real):
                ancestors.add(up)
                up = os.path.dirname(up)
        for folder in sorted(ancestors):
            if folder in inner:
                continue
            if watch is not None:
                watch.append(folder)
            try:
                entries = list(os.scandir(folder))  # (file types without a stat each)
            except OSError:
                continue
            for entry in entries:
                child = entry.path
                if child in ancestors:
                    continue
                if entry.is_symlink():
                    grant(child, is_write, blocked)  # its target, unless it is denied
                else:
                    grants[child] = grants.get(child, False) or is_write
                    with contextlib.suppress(OSError):
                        kinds[child] = entry.is_dir(follow_symlinks=False)

    # Rights add up: beneath a folder granted everything, a rule adds nothing (a granted
    # folder holds no denied one, see grant()). So the writes are planned first and what
    # they cover is left out: neither the time to add those rules (the owner's "/" alone
    # instead of 170 rules) nor a hold on their files.
    covering: set[str] = set()

    def covered(path: str) -> bool:
        up = os.path.dirname(path)
        while up not in covering and up != os.path.dirname(up):
            up = os.path.dirname(up)
        return up in covering and up != path

    for path in write:
        grant(path, True, deny)
    covering.update(path for path, is_write in grants.items() if is_write and (
        kinds[path] if path in kinds else os.path.isdir(path)))  # fmt: skip
    for path in read:
        if not covered(os.path.realpath(path)):
            grant(path, False, deny + secrets)
    rules = []
    for path, is_write in sorted(grants.items()):
        if not covered(path):
            rules.append(Rule(path, -1 if is_write else landlock.FS_READ, is_write,
                              kinds.get(path)))  # fmt: skip
    return rules


def _version(paths: list[str]) -> tuple[int | None, ...]:
    """What the watched paths look like now (a folder's mtime changes with its entries)."""
    out: list[int | None] = []
    for path in paths:
        try:
            out.append(os.lstat(path).st_mtime_ns)
        except OSError:
            out.append(None)
    return tuple(out)


class Ruleset:
    """A policy made into a Landlock ruleset (a file descriptor), ready for the attempts
    of that policy: an executor builds it once and checks it is still true (`fresh`)
    before each attempt, which then only adds its temp dir and restricts itself.

    Raises:
        landlock.LandlockError: Landlock is unavailable or refused a rule.
    """

    def __init__(self, policy: Policy) -> None:
        support = landlock.support()
        if not support.available:
            raise landlock.LandlockError(0, f"sandbox {support.describe()}")
        self.fs = landlock.fs_rights(support.abi)
        net = 0 if policy.network or not support.network else (
            landlock.NET_BIND_TCP | landlock.NET_CONNECT_TCP)  # fmt: skip
        scoped = (landlock.SCOPE_SIGNAL | landlock.SCOPE_ABSTRACT_UNIX_SOCKET
                  if support.scopes else 0)  # fmt: skip
        self.described = support.describe()
        self._watch: list[str] = []
        self.fd = landlock.create_ruleset(self.fs, net, scoped)
        self.added = 0  # temp dirs added since it was built
        self.holds_user_files = False  # a rule on a file of the user's (see RulesetCache)
        try:
            rules = plan(policy, watch=self._watch)
            self._version = _version(self._watch)
            for rule in rules:
                self._add(rule)
        except BaseException:
            self.close()
            raise

    def _add(self, rule: Rule) -> None:
        try:
            fd = os.open(rule.path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return  # gone since it was planned
        try:
            access = self.fs if rule.write else rule.access & self.fs
            directory = rule.directory
            if directory is None:
                directory = stat.S_ISDIR(os.fstat(fd).st_mode)
            if not directory:
                access &= landlock.FS_FILE_RIGHTS
                if not any(_inside(rule.path, d) for d in _SYSTEM_FILES):
                    self.holds_user_files = True
            landlock.add_path_rule(self.fd, fd, access)
        finally:
            os.close(fd)

    def fresh(self) -> bool:
        """Whether the rules are still what the policy means now."""
        return self.fd >= 0 and _version(self._watch) == self._version

    def add_temp_dir(self, path: str) -> None:
        """Grant an attempt's own temp dir (attempts restricted earlier do not get it: a
        domain is a copy of the ruleset when it was enforced)."""
        self._add(Rule(os.path.realpath(path), -1, True, True))
        self.added += 1

    def enforce(self) -> str:
        """Confine the calling thread (and all it starts) for good; what is enforced."""
        landlock.restrict_self(self.fd)
        return self.described

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


def confine(policy: Policy, temp_dir: str | None = None) -> str:
    """Confine the calling thread (and all it starts) to `policy`, for good; returns what
    is enforced, in words.

    Raises:
        landlock.LandlockError: Landlock is unavailable or refused a rule.
    """
    ruleset = Ruleset(policy)
    try:
        if temp_dir:
            ruleset.add_temp_dir(temp_dir)
        return ruleset.enforce()
    finally:
        ruleset.close()


class RulesetCache:
    """The rulesets an executor keeps, by principal and policy (each principal's own: the
    temp dirs granted in one are its principal's alone), rebuilt when the folders they were
    planned from changed (or after `MAX_ADDED` temp dirs).

    A rule holds its file or folder (the kernel keeps a reference to it): a file of the
    user's granted on its own, deleted, would keep its disk space while a ruleset that
    grants it lives. So while it keeps such a ruleset, an idle executor looks every
    `CHECK_EVERY` seconds (`expire`) and drops what is no longer true (a deletion changes
    the folder's mtime), and such rulesets after `IDLE_DROP` seconds without an attempt;
    then it sleeps for good. A ruleset that holds folders and system files only (the
    owner's "/", a principal's roots) is kept over idle with no timer at all: the first
    attempt after idle finds it ready (`for_attempt` checks it is still true).
    """

    MAX_ADDED = 256
    SIZE = 8  # by default; an executor keeps more than its runners
    CHECK_EVERY = 1.0
    IDLE_DROP = 10.0

    def __init__(self, size: int | None = None) -> None:
        self.size = self.SIZE if size is None else size
        self._sets: dict[tuple[str, Policy], Ruleset] = {}
        self._used = time.monotonic()

    def timeout(self) -> float | None:
        """How long an idle executor may wait before `expire` is due (None: for ever)."""
        holding = any(r.holds_user_files for r in self._sets.values())
        return self.CHECK_EVERY if holding else None

    def expire(self) -> None:
        """Drop the rulesets that are no longer true, and those that hold a user's files
        when idle long."""
        idle = time.monotonic() - self._used > self.IDLE_DROP
        for key, ruleset in list(self._sets.items()):
            if (idle and ruleset.holds_user_files) or not ruleset.fresh():
                ruleset.close()
                del self._sets[key]

    def holds(self, ruleset: Ruleset) -> bool:
        """Whether `ruleset` is still kept (and true)."""
        return any(r is ruleset for r in self._sets.values()) and ruleset.fresh()

    def for_attempt(self, policy: Policy, temp_dir: str | None, principal: str = "") -> Ruleset:
        """`principal`'s ruleset of `policy`, true now, with `temp_dir` granted.

        Raises:
            landlock.LandlockError: Landlock is unavailable or refused a rule.
        """
        ruleset = self.current(policy, principal)
        if temp_dir:
            ruleset.add_temp_dir(temp_dir)
        return ruleset

    def current(self, policy: Policy, principal: str = "") -> Ruleset:
        """`principal`'s ruleset of `policy`, true now: the same object while it stays true
        (a runner confined by it may serve on), else a new one.

        Raises:
            landlock.LandlockError: Landlock is unavailable or refused a rule.
        """
        self._used = time.monotonic()
        key = (principal, policy)
        ruleset = self._sets.pop(key, None)
        if ruleset is not None and (not ruleset.fresh() or ruleset.added >= self.MAX_ADDED):
            ruleset.close()
            ruleset = None
        if ruleset is None:
            ruleset = Ruleset(policy)
        self._sets[key] = ruleset  # the most recent last
        while len(self._sets) > self.size:
            self._sets.pop(next(iter(self._sets))).close()
        return ruleset

    def close_all(self) -> None:
        """Close every ruleset (in an attempt's process, once confined: a ruleset's fd lets
        its holder add rules, which the next attempts would be given)."""
        for ruleset in self._sets.values():
            ruleset.close()
        self._sets.clear()

    def refresh(self) -> None:
        """Rebuild the most recent ruleset now if it is no longer true (between attempts,
        off the next attempt's path)."""
        if not self._sets:
            return
        key = next(reversed(self._sets))
        ruleset = self._sets[key]
        if ruleset.fresh() and ruleset.added < self.MAX_ADDED:
            return
        ruleset.close()
        del self._sets[key]
        with contextlib.suppress(OSError):
            self._sets[key] = Ruleset(key[1])
