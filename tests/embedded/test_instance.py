"""The instance object's parts on their own: the data dir's lock, start-up repairs, the
database check, what `herald submit` says of a degraded instance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from embedded.instance import (
    DataDirLock,
    StartupError,
    check_database,
    services_down,
)
from services.auth import Authenticator, create_principal, repair_install_token
from services.layout import DataLayout


@pytest.fixture
def layout(tmp_path):
    return DataLayout(tmp_path / "data")


def test_the_lock_is_held_by_one_and_says_who(layout):
    first, second = DataDirLock(layout), DataDirLock(layout)
    assert first.acquire()
    assert not second.acquire()
    assert second.holder() == os.getpid()
    first.release()
    assert second.acquire()  # released with its descriptor
    second.release()


def test_a_child_that_inherited_the_lock_keeps_it_until_it_is_gone(layout):
    lock = DataDirLock(layout)
    assert lock.acquire()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                             pass_fds=(lock.fd,))  # fmt: skip
    try:
        lock.release()  # this process let go; its child still holds the open file
        assert not DataDirLock(layout).acquire()
    finally:
        child.kill()
        child.wait()
    assert DataDirLock(layout).acquire()


def test_a_token_file_that_is_not_text_is_replaced_and_said(layout):
    token, notices = repair_install_token(layout)
    assert notices == []
    layout.token_file.write_bytes(b"\xff\xfe\x00garbage")
    new, notices = repair_install_token(layout)
    assert new != token and len(notices) == 1
    assert "is not text" in notices[0] and "no longer works" in notices[0]
    assert Authenticator(layout).principal_for(new) == "local"
    assert Authenticator(layout).principal_for(token) is None


def test_a_damaged_auth_file_is_set_aside_and_said(layout):
    token, _ = repair_install_token(layout)
    create_principal(layout, "bob")
    layout.auth_file.write_text("{ not json")
    again, notices = repair_install_token(layout)
    assert again == token  # the install's own token still works
    assert any("auth.json.damaged" in n and "created again" in n for n in notices)
    assert (layout.root / "auth.json.damaged").read_text() == "{ not json"
    assert Authenticator(layout).principal_for(token) == "local"


def test_a_database_that_is_not_one_is_refused(layout, tmp_path):
    check_database(tmp_path / "missing.db")  # none yet: fine, it is created
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"PK\x03\x04 a zip, not a database")
    with pytest.raises(StartupError, match="is not an SQLite database"):
        check_database(bad)


def test_services_down_says_what_since_when_and_why(layout):
    layout.run_dir.mkdir(parents=True)
    now = time.time()
    layout.status_file.write_text(json.dumps({"supervisor_pid": os.getpid(), "services": {
        "web": {"state": "ready"},
        "worker": {"state": "restarting", "since": now - 60, "reason": "killed by SIGKILL",
                   "next_try": now + 4.2},
    }}))  # fmt: skip
    (line,) = services_down(layout.root)
    since = time.strftime("%H:%M:%S", time.localtime(now - 60))
    assert line == f"worker is restarting since {since} (killed by SIGKILL); next try in 4 s"
