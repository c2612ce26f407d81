"""`herald open`: a fresh one-time sign-in link, opened in the browser `$BROWSER` names (a
script here that records the URL) or printed with --print; a clear error without a
running instance or a browser."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Instance, start_serve


@pytest.fixture(scope="module")
def herald(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    root = tmp_path_factory.mktemp("open")
    inst = start_serve(root / "data", root / "runtime")
    yield inst
    inst.stop()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def status_of(url: str) -> tuple[int, str]:
    """The status of GET `url` (redirects not followed) and its Set-Cookie header."""
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(url, timeout=10) as resp:
            return resp.status, resp.headers.get("Set-Cookie", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Set-Cookie", "")


def recording_browser(tmp_path: Path) -> tuple[Path, Path]:
    """A `$BROWSER` that writes the URL it is given to a file; the script and the file."""
    record = tmp_path / "opened.txt"
    script = tmp_path / "browser.sh"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$1" >> "{record}"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, record


def run_open(herald: Instance, *args: str, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run([sys.executable, "-m", "embedded", "open", *args],
                          env={**herald.env, **(env or {})}, capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def test_open_launches_the_browser_with_a_link_that_works_once(herald: Instance,
                                                               tmp_path: Path) -> None:  # fmt: skip
    script, record = recording_browser(tmp_path)
    result = run_open(herald, env={"BROWSER": str(script)})
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # the link went to the browser, not the terminal
    (url,) = record.read_text().split()
    assert url.startswith(herald.client.api + "/login?ticket=")
    status, cookie = status_of(url)
    assert status == 303 and "HttpOnly" in cookie
    assert status_of(url)[0] == 403
    # Each run makes a fresh link.
    assert run_open(herald, env={"BROWSER": str(script)}).returncode == 0
    second = record.read_text().split()[1]
    assert second != url and status_of(second)[0] == 303


def test_open_print_prints_the_link_and_opens_nothing(herald: Instance,
                                                      tmp_path: Path) -> None:  # fmt: skip
    script, record = recording_browser(tmp_path)
    result = run_open(herald, "--print", env={"BROWSER": str(script)})
    assert result.returncode == 0, result.stderr
    url = result.stdout.strip()
    assert not record.exists()
    assert status_of(url)[0] == 303
    assert status_of(url)[0] == 403


def test_open_without_a_browser_says_so(herald: Instance, tmp_path: Path) -> None:
    result = run_open(herald, env={"BROWSER": str(tmp_path / "no-such-browser")})
    assert result.returncode == 1
    assert "herald open --print" in result.stderr


def test_open_without_a_running_instance_is_exit_3(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path / "run"),
           "HERALD_DATA_DIR": str(tmp_path / "data")}  # fmt: skip
    for args in ([], ["--print"]):
        result = subprocess.run([sys.executable, "-m", "embedded", "open", *args], env=env,
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        assert result.returncode == 3, result.stderr
        assert "not running" in result.stderr.lower() or "no instance" in result.stderr.lower()
        assert result.stdout == ""
