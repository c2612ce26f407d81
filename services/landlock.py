"""The Linux kernel's Landlock LSM through its three system calls (ctypes, no dependency).

Only what Herald uses: probe the ABI, build a ruleset (filesystem rights, TCP rights, IPC
scopes), add path-beneath rules, restrict the calling thread. Best effort by ABI, as the
kernel's `samples/landlock/sandboxer.c` does: rights the running kernel does not know are
left out of the ruleset (and so stay allowed); `support()` says what is enforced.

Shared by the worker (which confines each attempt) and by the shells that only report it
(health, the About box). Standard library only.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import platform
import sys
from dataclasses import dataclass
from typing import Any

# Filesystem rights (the ABI that added each one).
FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13  # ABI 2
FS_TRUNCATE = 1 << 14  # ABI 3
FS_IOCTL_DEV = 1 << 15  # ABI 5
NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6

FS_READ = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
# What a rule on a file (not a directory) may grant: the kernel refuses the others there.
FS_FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV

_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38
# The syscall numbers are the same in every architecture's table since Linux 5.13 (the
# unified numbering), except alpha's (+110).
_NR = {"alpha": (554, 555, 556)}.get(platform.machine(), (444, 445, 446))
DISABLE_ENV = "HERALD_SANDBOX"  # "off": run attempts unconfined (said in health)


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64),
                ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]  # fmt: skip


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # __attribute__((packed)) in the kernel's header
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class LandlockError(OSError):
    """A Landlock system call failed (errno and what was being done)."""


@functools.cache
def libc() -> ctypes.CDLL:
    """The C library (cached), with errno kept for each call."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def _call(nr: int, *args: object) -> int:
    result = int(libc().syscall(ctypes.c_long(nr), *args))
    if result < 0:
        err = ctypes.get_errno()
        raise LandlockError(err, os.strerror(err))
    return result


def fs_rights(abi: int) -> int:
    """Every filesystem right the kernel of Landlock ABI `abi` knows."""
    rights = (FS_MAKE_SYM << 1) - 1  # ABI 1
    if abi >= 2:
        rights |= FS_REFER
    if abi >= 3:
        rights |= FS_TRUNCATE
    if abi >= 5:
        rights |= FS_IOCTL_DEV
    return rights


@dataclass(frozen=True)
class Support:
    """Whether this process can be confined, and what would be enforced.

    Attributes:
        abi: the kernel's Landlock ABI version (0: none usable).
        reason: why it is unavailable (None when abi > 0).
    """

    abi: int
    reason: str | None = None

    @property
    def available(self) -> bool:
        return self.abi > 0

    @property
    def network(self) -> bool:
        """TCP bind and connect can be denied (ABI 4)."""
        return self.abi >= 4

    @property
    def scopes(self) -> bool:
        """Signals and abstract Unix sockets are scoped to the sandbox (ABI 6)."""
        return self.abi >= 6

    def describe(self) -> str:
        """One line for people: "landlock ABI 7" or "unavailable: <reason>"."""
        if not self.available:
            return f"unavailable: {self.reason}"
        missing = [what for what, ok in (("no TCP rules", self.network),
                                         ("no signal or socket scoping", self.scopes)) if not ok]
        return f"landlock ABI {self.abi}" + (f" ({', '.join(missing)})" if missing else "")


@functools.cache
def support() -> Support:
    """Probe the kernel once per process (landlock_create_ruleset with the VERSION flag)."""
    if os.environ.get(DISABLE_ENV, "").lower() in ("off", "0", "no", "false"):
        return Support(0, f"turned off ({DISABLE_ENV}={os.environ[DISABLE_ENV]})")
    if not sys.platform.startswith("linux"):
        return Support(0, f"Landlock is Linux's; this is {sys.platform}")
    try:
        abi = _call(_NR[0], None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    except LandlockError as exc:
        reasons = {
            errno.ENOSYS: f"this kernel ({platform.release()}) has no Landlock, or a seccomp "
                          "filter blocks its system calls",
            errno.EOPNOTSUPP: "Landlock is built in but not enabled (the lsm= boot option)",
            errno.EPERM: "a seccomp filter refuses Landlock's system calls",
        }
        return Support(0, reasons.get(exc.errno or 0, f"landlock_create_ruleset: {exc}"))
    except (OSError, AttributeError) as exc:
        return Support(0, f"cannot make system calls: {exc}")
    return Support(abi)


def create_ruleset(fs: int, net: int = 0, scoped: int = 0) -> int:
    """A new ruleset handling these rights (a file descriptor, close-on-exec)."""
    attr = _RulesetAttr(fs, net, scoped)
    return _call(_NR[0], ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)),
                 ctypes.c_uint32(0))  # fmt: skip


@functools.cache
def _add_rule() -> tuple[Any, _PathBeneathAttr]:
    """landlock_add_rule with its argument types bound, and one attribute struct to reuse:
    an attempt adds hundreds of rules, and ctypes' conversions were half their cost."""
    func = libc()["syscall"]  # a function object of its own (argtypes are per object)
    func.restype = ctypes.c_long
    func.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32]
    return func, _PathBeneathAttr(0, -1)


def add_path_rule(ruleset: int, path_fd: int, access: int) -> None:
    """Allow `access` beneath the file or directory open as `path_fd` (O_PATH is enough)."""
    func, attr = _add_rule()
    attr.allowed_access = access
    attr.parent_fd = path_fd
    if func(_NR[1], ruleset, _RULE_PATH_BENEATH, ctypes.addressof(attr), 0) < 0:
        err = ctypes.get_errno()
        raise LandlockError(err, os.strerror(err))


def restrict_self(ruleset: int) -> None:
    """Set no_new_privs and enforce the ruleset on the calling thread, for good (what it
    forks and executes afterwards inherits it)."""
    if int(libc().prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) != 0:
        err = ctypes.get_errno()
        raise LandlockError(err, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(err)}")
    _call(_NR[2], ctypes.c_int(ruleset), ctypes.c_uint32(0))
