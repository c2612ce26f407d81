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


def plan(policy: Policy, temp_dir: str | None = None, *,
         system: bool = True) -> list[Rule]:  # fmt: skip
    """The rules that carry out `policy` now (symlinks resolved; what does not exist is
    left out); `temp_dir`, the attempt's own, is writable."""
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
        if not os.path.lexists(real) or any(_inside(real, d) for d in blocked):
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

    for path in read:
        grant(path, False, deny + secrets)
    for path in write:
        grant(path, True, deny)
    rules = []
    for path, is_write in sorted(grants.items()):
        rules.append(Rule(path, -1 if is_write else landlock.FS_READ, is_write,
                          kinds.get(path)))  # fmt: skip
    return rules


def confine(policy: Policy, temp_dir: str | None = None) -> str:
    """Confine the calling thread (and all it starts) to `policy`, for good; returns what
    is enforced, in words.

    Raises:
        landlock.LandlockError: Landlock is unavailable or refused a rule.
    """
    support = landlock.support()
    if not support.available:
        raise landlock.LandlockError(0, f"sandbox {support.describe()}")
    fs = landlock.fs_rights(support.abi)
    net = 0 if policy.network or not support.network else (
        landlock.NET_BIND_TCP | landlock.NET_CONNECT_TCP)  # fmt: skip
    scoped = (landlock.SCOPE_SIGNAL | landlock.SCOPE_ABSTRACT_UNIX_SOCKET
              if support.scopes else 0)  # fmt: skip
    ruleset = landlock.create_ruleset(fs, net, scoped)
    try:
        for rule in plan(policy, temp_dir):
            try:
                fd = os.open(rule.path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # gone since it was planned
            try:
                access = fs if rule.write else rule.access & fs
                directory = rule.directory
                if directory is None:
                    directory = stat.S_ISDIR(os.fstat(fd).st_mode)
                if not directory:
                    access &= landlock.FS_FILE_RIGHTS
                landlock.add_path_rule(ruleset, fd, access)
            finally:
                os.close(fd)
        landlock.restrict_self(ruleset)
    finally:
        with contextlib.suppress(OSError):
            os.close(ruleset)
    return support.describe()
