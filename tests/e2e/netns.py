"""Hosts for multi-host tests, made with network namespaces: each "host" is a namespace
with its own loopback and one address on a bridge in the test's own namespace, so the
hosts reach each other (and the test process reaches them) only over that network, as
separate machines would. Needs root (CAP_NET_ADMIN); `available()` says whether it can
run here and, if not, why.

    with Network() as net:
        redis = net.host("redis")      # 10.N.0.2
        web = net.host("web")          # 10.N.0.3
        proc = redis.popen(["redis-server", ...])   # runs inside the namespace

Names are unique per test run (a prefix and the pid), and everything made is removed on
exit, also after a failure; `sweep()` removes what a killed run left behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any

IP = shutil.which("ip") or "/usr/sbin/ip"
_PREFIX = "hx"  # every link and namespace of these tests starts with it


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([IP, *args], capture_output=True, text=True, check=check, timeout=20)


def available() -> tuple[bool, str]:
    """Whether namespaces can be made here, and why not."""
    if os.geteuid() != 0:
        return False, "not root: network namespaces need CAP_NET_ADMIN"
    if not os.path.exists(IP):
        return False, "no `ip` command (iproute2)"
    probe = f"{_PREFIX}probe{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return False, f"`ip netns add` failed: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return True, ""


def sweep() -> None:
    """Remove namespaces and links a killed earlier run of these tests left."""
    out = _ip("netns", "list", check=False).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(_PREFIX) and not _alive_owner(name):
            _ip("netns", "del", name, check=False)
    links = _ip("-o", "link", "show", check=False).stdout
    for line in links.splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            name = parts[1].strip().split("@")[0]
            if name.startswith(_PREFIX) and not _alive_owner(name):
                _ip("link", "del", name, check=False)


def _alive_owner(name: str) -> bool:
    """Whether the run that made `name` (its pid follows the prefix) still runs."""
    rest = name[len(_PREFIX):]
    digits = rest[:len(rest) - len(rest.lstrip("0123456789"))]
    if not digits:
        return False
    try:
        os.kill(int(digits), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


class Host:
    """One namespace with an address on the network."""

    def __init__(self, name: str, address: str, role: str) -> None:
        self.name = name
        self.address = address
        self.role = role

    def argv(self, argv: Sequence[str]) -> list[str]:
        return [IP, "netns", "exec", self.name, *argv]

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a process inside this host (its pid is the program's: `ip netns exec`
        execs it)."""
        return subprocess.Popen(self.argv(argv), **kwargs)

    def run(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        return subprocess.run(self.argv(argv), **kwargs)


class Network:
    """A bridge in this namespace and hosts on it (10.<n>.0.0/24, the test process at .1)."""

    def __init__(self) -> None:
        self._id = f"{os.getpid()}"  # (a pid has at most 7 digits: names fit in 15 bytes)
        self.bridge = f"{_PREFIX}{self._id}br"
        self._subnet = 200 + os.getpid() % 50  # 10.200-249.0.0/24: unlikely to be in use
        self.gateway = f"10.{self._subnet}.0.1"
        self.hosts: list[Host] = []
        self._links: list[str] = []

    def __enter__(self) -> Network:
        sweep()
        _ip("link", "add", self.bridge, "type", "bridge")
        self._links.append(self.bridge)
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        return self

    def host(self, role: str) -> Host:
        """A new host on the network (a namespace with lo up and one veth)."""
        n = len(self.hosts) + 2
        name = f"{_PREFIX}{self._id}n{n}"
        outer, inner = f"{_PREFIX}{self._id}v{n}", f"{_PREFIX}{self._id}p{n}"
        _ip("netns", "add", name)
        host = Host(name, f"10.{self._subnet}.0.{n}", role)
        self.hosts.append(host)
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        self._links.append(outer)
        _ip("link", "set", inner, "netns", name)
        _ip("link", "set", outer, "master", self.bridge)
        _ip("link", "set", outer, "up")
        _ip("-n", name, "addr", "add", f"{host.address}/24", "dev", inner)
        _ip("-n", name, "link", "set", inner, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        # No default route: a host reaches the network's hosts only, and a name lookup
        # fails at once (with a route to nowhere it waits for the resolver's timeouts).
        return host

    def __exit__(self, *exc: object) -> None:
        for host in self.hosts:
            # Whatever still runs in it goes with it (a namespace lives while a process
            # holds it).
            pids = _ip("netns", "pids", host.name, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), 9)
            _ip("netns", "del", host.name, check=False)
        for link in reversed(self._links):
            _ip("link", "del", link, check=False)
