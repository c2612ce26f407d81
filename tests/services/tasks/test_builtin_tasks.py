"""The built-in tasks, called directly with a TaskContext on real files and real processes."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from services.core.errors import TaskCancelled, TaskFailure, ValidationFailed
from services.tasks.builtin import demo, files, process, report
from services.tasks.catalog import load_catalog
from services.tasks.context import TaskContext

POSIX = os.name == "posix"


class CancelOnProgress(TaskContext):
    """Requests cancellation as soon as some real progress (fraction > 0) is recorded."""

    def __init__(self) -> None:
        super().__init__(progress_interval=0)

    def _record_progress(self, fraction: float | None, message: str | None) -> None:
        if fraction:
            self.request_cancel()


class CancelOnOutput(TaskContext):
    """Requests cancellation once the task emitted its first output line."""

    def __init__(self) -> None:
        super().__init__(progress_interval=0)
        self.lines: list[str] = []

    def _record_output(self, lines: list[str]) -> None:
        self.lines.extend(lines)
        self.request_cancel()


def ctx() -> TaskContext:
    return TaskContext(progress_interval=0)


def progress_of(c: TaskContext) -> list[tuple[float | None, str | None]]:
    return [value for kind, value in c.reports if kind == "progress"]


def output_of(c: TaskContext) -> list[str]:
    return [line for kind, value in c.reports if kind == "output" for line in value]


def make_tree(root: Path) -> dict[str, bytes]:
    """A small folder tree; returns its regular files' contents by relative path."""
    contents = {
        "a.txt": b"alpha\n",
        "sub/b.bin": bytes(range(256)) * 4000,  # ~1 MiB: crosses a chunk boundary
        "sub/deeper/c.txt": "ünïcode ✓\n".encode(),
        "z-empty.txt": b"",
    }
    for rel, data in contents.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "empty-dir").mkdir()
    return contents


def wait_until(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def process_gone(pid: int) -> bool:
    """Whether the process no longer runs (gone, or a zombie waiting for its reaper)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


# ------------------------------------------------------------------ demo.answer


def test_answer_with_zero_seconds_answers_at_once():
    c = ctx()
    assert demo.answer(c, seconds=0) == 42
    assert c.reports == []


def test_answer_reports_rising_progress_then_answers():
    c = ctx()
    assert demo.answer(c, seconds=0.3) == 42
    fractions = [f for f, _ in progress_of(c)]
    assert len(fractions) >= 2
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0


def test_answer_stops_when_cancelled():
    c = CancelOnProgress()
    with pytest.raises(TaskCancelled):
        demo.answer(c, seconds=60)


# ------------------------------------------------------------------ files.checksum


@pytest.mark.parametrize("algorithm", files.ALGORITHMS)
def test_checksum_of_a_file_equals_hashlib(tmp_path, algorithm):
    data = os.urandom(2 * 1024 * 1024 + 123)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    c = ctx()
    result = files.checksum(c, str(path), algorithm)
    assert result == {"path": str(path), "kind": "file", "algorithm": algorithm,
                      "size": len(data), "digest": hashlib.new(algorithm, data).hexdigest()}
    fractions = [f for f, _ in progress_of(c)]
    assert fractions[-1] == 1.0 and 0 < fractions[0] < 1
    assert any("MiB of" in (m or "") for _, m in progress_of(c))
    json.dumps(result)


@pytest.mark.skipif(not POSIX, reason="symbolic links and fifos")
def test_checksum_of_a_folder_is_a_sorted_manifest_without_following_links(tmp_path):
    root = tmp_path / "tree"
    contents = make_tree(root)
    os.symlink("..", root / "sub" / "loop")  # following it would never end
    os.symlink("a.txt", root / "link-to-a")
    os.mkfifo(root / "pipe")  # reading it would block forever
    result = files.checksum(ctx(), str(root))
    expected = [{"path": rel, "size": len(data), "digest": hashlib.sha256(data).hexdigest()}
                for rel, data in sorted(contents.items())]
    assert result["manifest"] == expected
    assert result["files"] == len(contents)
    assert result["bytes"] == sum(len(d) for d in contents.values())
    assert result["symlinks"] == [{"path": "link-to-a", "target": "a.txt"},
                                  {"path": "sub/loop", "target": ".."}]
    assert result["skipped"] == ["pipe"]
    lines = "".join(f"{e['digest']}  {e['path']}\n" for e in expected)
    assert result["digest"] == hashlib.sha256(lines.encode()).hexdigest()


def test_checksum_stops_mid_file_when_cancelled(tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(4 * 1024 * 1024))
    c = CancelOnProgress()
    with pytest.raises(TaskCancelled):
        files.checksum(c, str(path))
    assert [f for f, _ in progress_of(c)] == [0.25]


@pytest.mark.skipif(not POSIX or os.geteuid() == 0, reason="root reads anything")
def test_checksum_of_an_unreadable_file_fails_clearly(tmp_path):
    path = tmp_path / "secret"
    path.write_bytes(b"x")
    path.chmod(0)
    with pytest.raises(TaskFailure) as info:
        files.checksum(ctx(), str(path))
    assert info.value.code == "permission_denied"
    assert "secret" in info.value.message


@pytest.mark.skipif(sys.platform != "linux", reason="file names are bytes")
def test_checksum_result_is_json_safe_for_undecodable_names(tmp_path):
    (tmp_path / os.fsdecode(b"bad\xff.txt")).write_bytes(b"x")
    result = files.checksum(ctx(), str(tmp_path))
    assert [e["path"] for e in result["manifest"]] == ["bad\ufffd.txt"]
    json.dumps(result, ensure_ascii=False).encode("utf-8")


def test_os_errors_become_clear_task_failures():
    err = files.io_failure(PermissionError(13, "Permission denied", "/x/secret"))
    assert (err.code, err.message) == ("permission_denied", "/x/secret: Permission denied")
    err = files.io_failure(OSError(28, "No space left on device"), "/x/out.zip")
    assert (err.code, err.message) == ("disk_full", "/x/out.zip: No space left on device")
    assert files.io_failure(OSError(5, "Input/output error")).code == "io_error"


def test_atomic_file_publishes_only_on_commit(tmp_path):
    dest = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), files.AtomicFile(str(dest)) as out:
        out.file.write(b"half")
        raise RuntimeError("interrupted")
    assert os.listdir(tmp_path) == []
    with files.AtomicFile(str(dest)) as out:
        out.file.write(b"whole")
        dest.write_bytes(b"appeared meanwhile")
        with pytest.raises(TaskFailure) as info:
            out.commit()
    assert info.value.code == "destination_exists"
    assert dest.read_bytes() == b"appeared meanwhile"
    assert os.listdir(tmp_path) == ["out.txt"]
    with files.AtomicFile(str(dest), overwrite=True) as out:
        out.file.write(b"whole")
        out.commit()
    assert dest.read_bytes() == b"whole" and os.listdir(tmp_path) == ["out.txt"]


def test_format_bytes():
    assert files.format_bytes(0) == "0 B"
    assert files.format_bytes(999) == "999 B"
    # The same binary units as the result's fields ("3.7 MiB" in both columns of a row).
    assert files.format_bytes(12_300_000) == "11.7 MiB"
    assert files.format_bytes(40 * 1024 * 1024) == "40.0 MiB"
    assert files.format_bytes(1000) == "1000 B"


# ------------------------------------------------------------------ files.archive


def extract(archive: Path, fmt: str, into: Path) -> None:
    if fmt == "zip":
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(into)
    else:
        with tarfile.open(archive, "r:gz") as tf:
            tf.extractall(into, filter="data")


def tree_of(root: Path) -> dict[str, bytes | None]:
    """Files (with contents) and folders (None) under root, by relative path."""
    out: dict[str, bytes | None] = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        out[rel] = None if path.is_dir() else path.read_bytes()
    return out


@pytest.mark.parametrize(("name", "fmt"), [("out.zip", "zip"), ("out.tar.gz", "tar.gz"),
                                           ("out.tgz", "tar.gz"), ("out.bin", "zip")])
def test_archive_round_trip(tmp_path, name, fmt):
    source = tmp_path / "src"
    contents = make_tree(source)
    dest_dir = tmp_path / "dest"
    dest_dir.mkdir()
    dest = dest_dir / name
    c = ctx()
    result = files.archive(c, str(source), str(dest))
    assert result == {"path": str(dest), "format": fmt, "files": len(contents),
                      "bytes_in": sum(len(d) for d in contents.values()),
                      "bytes_out": dest.stat().st_size, "skipped": []}
    assert os.listdir(dest_dir) == [name]  # no temporary file left
    extract(dest, fmt, tmp_path / "back")
    assert tree_of(tmp_path / "back") == tree_of(source)
    assert progress_of(c)[-1][0] == 1.0


@pytest.mark.skipif(not POSIX, reason="symbolic links")
def test_tar_archive_keeps_links_as_links(tmp_path):
    source = tmp_path / "src"
    make_tree(source)
    os.symlink("..", source / "sub" / "loop")
    dest = tmp_path / "out.tar.gz"
    files.archive(ctx(), str(source), str(dest))
    with tarfile.open(dest) as tf:
        link = tf.getmember("sub/loop")
    assert link.issym() and link.linkname == ".."


def test_archive_refuses_a_destination_inside_the_source(tmp_path):
    source = tmp_path / "src"
    make_tree(source)
    with pytest.raises(TaskFailure) as info:
        files.archive(ctx(), str(source), str(source / "sub" / "self.zip"))
    assert info.value.code == "destination_inside_source"
    assert not (source / "sub" / "self.zip").exists()


def test_archive_refuses_an_existing_destination_unless_overwrite(tmp_path):
    source = tmp_path / "src"
    make_tree(source)
    dest = tmp_path / "out.zip"
    dest.write_bytes(b"precious")
    with pytest.raises(TaskFailure) as info:
        files.archive(ctx(), str(source), str(dest))
    assert info.value.code == "destination_exists"
    assert dest.read_bytes() == b"precious"
    files.archive(ctx(), str(source), str(dest), overwrite=True)
    assert zipfile.is_zipfile(dest)


@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
def test_archive_cancelled_mid_run_leaves_nothing_behind(tmp_path, fmt):
    source = tmp_path / "src"
    source.mkdir()
    (source / "big.bin").write_bytes(os.urandom(6 * 1024 * 1024))
    dest_dir = tmp_path / "dest"
    dest_dir.mkdir()
    c = CancelOnProgress()
    with pytest.raises(TaskCancelled):
        files.archive(c, str(source), str(dest_dir / "out"), format=fmt)
    fractions = [f for f, _ in progress_of(c)]
    assert fractions and 0 < fractions[-1] < 1  # it was stopped in the middle
    assert os.listdir(dest_dir) == []


def test_archive_cancelled_before_start_leaves_nothing_behind(tmp_path):
    source = tmp_path / "src"
    make_tree(source)
    c = ctx()
    c.request_cancel()
    with pytest.raises(TaskCancelled):
        files.archive(c, str(source), str(tmp_path / "out.zip"))
    assert not (tmp_path / "out.zip").exists()
    assert sorted(os.listdir(tmp_path)) == ["src"]


# ------------------------------------------------------------------ report.csv

SAMPLE = (
    "id,price,active,day,name,note\n"
    "1,2.5,true,2024-01-05,apple,<script>alert(1)</script>\n"
    "2,,false,2024-02-10,banana,\n"
    "3,4.5,yes,2023-12-31,apple,http://example.com/x.png\n"
    "4,NA,no,2024-03-01,cherry\n"  # ragged: one cell short
    "5,-1,true,2024-01-01,apple,n/a\n"
)


def test_report_describes_columns_and_writes_a_self_contained_page(tmp_path):
    source = tmp_path / "sales.csv"
    source.write_text(SAMPLE)
    c = ctx()
    result = report.csv_report(c, str(source))
    dest = tmp_path / "sales.html"
    assert result["path"] == str(dest)
    assert result["rows"] == 5 and result["ragged_rows"] == 1
    cols = {col["name"]: col for col in result["columns"]}
    assert list(cols) == ["id", "price", "active", "day", "name", "note"]
    assert {n: col["type"] for n, col in cols.items()} == {
        "id": "integer", "price": "number", "active": "boolean", "day": "date",
        "name": "text", "note": "text"}
    assert {n: col["missing"] for n, col in cols.items()} == {
        "id": 0, "price": 2, "active": 0, "day": 0, "name": 0, "note": 3}
    assert (cols["id"]["min"], cols["id"]["max"], cols["id"]["mean"]) == (1, 5, 3.0)
    assert (cols["price"]["min"], cols["price"]["max"]) == (-1.0, 4.5)
    assert cols["price"]["mean"] == pytest.approx(2.0)
    assert (cols["day"]["min"], cols["day"]["max"]) == ("2023-12-31", "2024-03-01")
    assert cols["name"]["top"][0] == {"value": "apple", "count": 3}
    json.dumps(result)

    page = dest.read_text(encoding="utf-8")
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert not re.search(r"\b(src|href)\s*=", page, re.IGNORECASE)
    assert "url(" not in page and "@import" not in page
    assert "apple" in page and "5 rows" in page
    assert progress_of(c)[-1][0] == 1.0
    assert sorted(os.listdir(tmp_path)) == ["sales.csv", "sales.html"]


def test_report_reads_utf8_with_bom_and_sniffs_semicolons(tmp_path):
    source = tmp_path / "bom.csv"
    source.write_bytes("\ufeffnom;prix\ncafé;1,5\nthé;2\n".encode())
    result = report.csv_report(ctx(), str(source), str(tmp_path / "out.html"))
    assert result["encoding"] == "utf-8" and result["delimiter"] == ";"
    assert [c["name"] for c in result["columns"]] == ["nom", "prix"]
    assert result["columns"][0]["top"][0]["value"] == "café"


def test_report_falls_back_to_a_single_byte_encoding(tmp_path):
    source = tmp_path / "legacy.csv"
    source.write_bytes("name,city\nJosé,Málaga\n".encode("latin-1"))
    c = ctx()
    result = report.csv_report(c, str(source), delimiter="comma")
    assert result["encoding"] == "cp1252"
    assert result["columns"][1]["top"] == [{"value": "Málaga", "count": 1}]
    assert any("not utf-8-sig" in line for line in output_of(c))


def test_report_of_an_empty_file_fails_clearly(tmp_path):
    source = tmp_path / "empty.csv"
    source.write_bytes(b"")
    with pytest.raises(TaskFailure) as info:
        report.csv_report(ctx(), str(source))
    assert info.value.code == "empty_file"
    assert os.listdir(tmp_path) == ["empty.csv"]


def test_report_refuses_to_replace_an_existing_file_unless_overwrite(tmp_path):
    source = tmp_path / "data.csv"
    source.write_text("a\n1\n")
    (tmp_path / "data.html").write_text("mine")
    with pytest.raises(TaskFailure) as info:
        report.csv_report(ctx(), str(source))
    assert info.value.code == "destination_exists"
    with pytest.raises(TaskFailure) as info:
        report.csv_report(ctx(), str(source), str(source), overwrite=True)
    assert info.value.code == "destination_is_source"
    report.csv_report(ctx(), str(source), overwrite=True)
    assert "<!doctype html>" in (tmp_path / "data.html").read_text()


def test_report_cancelled_mid_file_writes_nothing(tmp_path):
    source = tmp_path / "many.csv"
    source.write_text("n,word\n" + "".join(f"{i},w{i % 7}\n" for i in range(5000)))
    c = CancelOnProgress()
    with pytest.raises(TaskCancelled):
        report.csv_report(c, str(source))
    assert 0 < progress_of(c)[-1][0] < 1
    assert os.listdir(tmp_path) == ["many.csv"]


# ------------------------------------------------------------------ process.run


def test_run_streams_output_lines_in_order(tmp_path):
    code = ("import sys\nfor i in range(5): print('line', i, flush=True)\n"
            "print('é', file=sys.stderr)")
    c = ctx()
    result = process.run(c, sys.executable, ["-c", code], cwd=str(tmp_path))
    assert result == {"exit_code": 0, "lines": 6}
    assert output_of(c) == [f"line {i}" for i in range(5)] + ["é"]
    first = progress_of(c)[0]
    assert first[0] is None and re.fullmatch(r"running pid \d+", first[1])


def test_run_records_a_quiet_program_s_last_line_while_it_waits(tmp_path):
    gate = tmp_path / "seen"

    class Opener(TaskContext):
        def _record_output(self, lines: list[str]) -> None:
            if "first" in lines:
                gate.touch()

    code = (f"import os, time\nprint('first', flush=True)\nend = time.time() + 3\n"
            f"while not os.path.exists({str(gate)!r}) and time.time() < end: time.sleep(0.02)\n"
            f"print('seen' if os.path.exists({str(gate)!r}) else 'not seen')")  # fmt: skip
    c = Opener(progress_interval=60)  # no rate-limited flush would come in time
    process.run(c, sys.executable, ["-c", code])
    c.flush()  # as the worker does at the end
    assert output_of(c) == ["first", "seen"]


def test_run_runs_in_the_given_folder_with_no_input(tmp_path):
    code = "import os, sys; print(os.getcwd()); print(repr(sys.stdin.read()))"
    c = ctx()
    process.run(c, sys.executable, ["-c", code], cwd=str(tmp_path))
    assert output_of(c) == [os.path.realpath(tmp_path), "''"]


def test_run_fails_with_exit_status_when_the_program_exits_non_zero():
    c = ctx()
    code = "for i in range(30): print('line', i)\nraise SystemExit(3)"
    with pytest.raises(TaskFailure) as info:
        process.run(c, sys.executable, ["-c", code])
    exc = info.value
    assert exc.code == "exit_status"
    assert "exited with code 3" in exc.message
    assert exc.detail == {"exit_code": 3, "lines": 30,
                          "last_lines": [f"line {i}" for i in range(10, 30)]}  # fmt: skip
    assert len(output_of(c)) == 30  # every line was still streamed


def test_run_accepts_the_exit_codes_it_is_told_to():
    c = ctx()
    result = process.run(c, sys.executable, ["-c", "print('bad'); raise SystemExit(3)"],
                         ok_exit_codes=[0, 3])  # fmt: skip
    assert result == {"exit_code": 3, "lines": 1}
    with pytest.raises(TaskFailure) as info:  # 0 is no longer fine when not listed
        process.run(ctx(), sys.executable, ["-c", "pass"], ok_exit_codes=[1])
    assert info.value.detail["exit_code"] == 0


@pytest.mark.skipif(not POSIX, reason="signals")
def test_run_fails_when_the_program_dies_of_a_signal():
    code = "import os, signal; print('dying', flush=True); os.kill(os.getpid(), signal.SIGKILL)"
    with pytest.raises(TaskFailure) as info:
        process.run(ctx(), sys.executable, ["-c", code])
    assert info.value.code == "exit_status"
    assert "killed by SIGKILL" in info.value.message
    assert info.value.detail["exit_code"] == -9
    assert info.value.detail["last_lines"] == ["dying"]


def test_ok_exit_codes_is_a_list_of_integers():
    spec = load_catalog().get("process.run")
    param = next(p for p in spec.params if p.name == "ok_exit_codes")
    assert param.default == [0] and param.to_json()["type"] == "integer_list"
    assert param.from_text("0,1, 2") == [0, 1, 2] and param.from_text("3 4") == [3, 4]
    assert param.validate([0, 2.0]) == [0, 2]
    for bad in (["1"], [True], [1.5], "0", []):
        with pytest.raises(ValueError):
            param.validate(bad)
    with pytest.raises(ValueError):
        param.from_text("zero")


def test_run_replaces_undecodable_output():
    c = ctx()
    process.run(c, sys.executable, ["-c", r"import sys; sys.stdout.buffer.write(b'a\xffb\r\n')"])
    assert output_of(c) == ["a\ufffdb"]


@pytest.mark.parametrize("program", ["herald-no-such-program-x", "/nonexistent/program"])
def test_run_of_a_missing_program_fails_clearly(program):
    with pytest.raises(TaskFailure) as info:
        process.run(ctx(), program)
    assert info.value.code == "program_not_found"


@pytest.mark.skipif(not POSIX, reason="process groups")
def test_run_cancel_stops_the_program_and_its_children():
    code = ("import subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
            "print(child.pid, flush=True)\n"
            "time.sleep(30)")
    c = CancelOnOutput()
    with pytest.raises(TaskCancelled):
        process.run(c, sys.executable, ["-c", code])
    pid = int(re.fullmatch(r"running pid (\d+)", progress_of(c)[0][1]).group(1))
    assert process_gone(pid)  # stopped and reaped before run() returned
    assert wait_until(lambda: process_gone(int(c.lines[0])))


@pytest.mark.skipif(not POSIX, reason="signals")
def test_run_kills_a_program_that_ignores_sigterm(monkeypatch):
    monkeypatch.setattr(process, "TERM_GRACE", 0.3)
    code = ("import signal, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "print('ready', flush=True)\n"
            "time.sleep(30)")
    c = CancelOnOutput()
    with pytest.raises(TaskCancelled):
        process.run(c, sys.executable, ["-c", code])
    pid = int(re.fullmatch(r"running pid (\d+)", progress_of(c)[0][1]).group(1))
    assert process_gone(pid)


@pytest.mark.skipif(not POSIX, reason="process groups")
def test_run_ends_when_the_program_exits_even_if_a_child_holds_its_output(monkeypatch):
    monkeypatch.setattr(process, "EXIT_GRACE", 0.2)
    code = ("import subprocess, sys\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
            "print(child.pid, flush=True)")
    c = ctx()
    result = process.run(c, sys.executable, ["-c", code])
    assert result == {"exit_code": 0, "lines": 1}
    assert wait_until(lambda: process_gone(int(output_of(c)[0])))


def test_run_cancelled_before_start_starts_nothing():
    c = ctx()
    c.request_cancel()
    with pytest.raises(TaskCancelled):
        process.run(c, sys.executable, ["-c", "print('no')"])
    assert c.reports == []


# ------------------------------------------------------------------ declared parameters


@pytest.fixture
def catalog():
    return load_catalog()


def test_every_builtin_task_is_in_the_catalog_and_publishable(catalog):
    for name in ("demo.answer", "files.checksum", "files.archive", "report.csv",
                 "process.run"):
        spec = catalog.get(name)
        assert spec is not None and spec.description
        json.dumps(spec.to_json())
        for p in spec.params:
            json.dumps(p.json_schema())


def test_parameters_of_demo_answer(catalog):
    spec = catalog.get("demo.answer")
    assert spec.validate({}) == {"seconds": 5}
    assert spec.validate({"seconds": 0}) == {"seconds": 0}
    for bad in ({"seconds": -1}, {"seconds": 3601}, {"seconds": "5"}, {"other": 1}):
        with pytest.raises(ValidationFailed):
            spec.validate(bad)


def test_parameters_of_files_tasks(catalog, tmp_path):
    (tmp_path / "f.txt").write_text("x")
    checksum = catalog.get("files.checksum")
    assert checksum.validate({"path": str(tmp_path / "f.txt")})["algorithm"] == "sha256"
    assert checksum.validate({"path": str(tmp_path), "algorithm": "md5"})["algorithm"] == "md5"
    for bad in ({}, {"path": "relative/f.txt"}, {"path": str(tmp_path / "missing")},
                {"path": str(tmp_path), "algorithm": "crc32"}):
        with pytest.raises(ValidationFailed):
            checksum.validate(bad)

    archive = catalog.get("files.archive")
    ok = archive.validate({"source": str(tmp_path), "destination": str(tmp_path / "a.zip")})
    assert ok["format"] == "auto" and ok["overwrite"] is False
    for bad in ({"source": str(tmp_path / "f.txt"), "destination": str(tmp_path / "a.zip")},
                {"source": str(tmp_path), "destination": str(tmp_path / "no" / "a.zip")},
                {"source": str(tmp_path), "destination": str(tmp_path)},
                {"source": str(tmp_path), "destination": str(tmp_path / "a"), "format": "rar"},
                {"source": str(tmp_path), "destination": str(tmp_path / "a"), "overwrite": 1}):
        with pytest.raises(ValidationFailed):
            archive.validate(bad)


def test_parameters_of_report_csv(catalog, tmp_path):
    (tmp_path / "d.csv").write_text("a\n1\n")
    spec = catalog.get("report.csv")
    ok = spec.validate({"source": str(tmp_path / "d.csv")})
    assert ok == {"source": str(tmp_path / "d.csv"), "destination": None, "delimiter": "auto",
                  "overwrite": False}
    assert spec.validate({"source": str(tmp_path / "d.csv"), "delimiter": "tab",
                          "destination": str(tmp_path / "r.html")})["delimiter"] == "tab"
    for bad in ({}, {"source": str(tmp_path)}, {"source": str(tmp_path / "d.csv"),
                                                 "delimiter": "x"}):
        with pytest.raises(ValidationFailed):
            spec.validate(bad)


def test_parameters_of_process_run(catalog, tmp_path):
    spec = catalog.get("process.run")
    assert spec.validate({"program": "ls"}) == {"program": "ls", "args": [], "cwd": None,
                                                 "ok_exit_codes": [0]}
    ok = spec.validate({"program": "ls", "args": ["-l"], "cwd": str(tmp_path)})
    assert ok["args"] == ["-l"]
    for bad in ({}, {"program": ""}, {"program": "ls", "args": "-l"},
                {"program": "ls", "cwd": "relative"}, {"program": "ls", "timeout": 5},
                {"program": "ls", "cwd": str(tmp_path / "missing")}):
        with pytest.raises(ValidationFailed):
            spec.validate(bad)



def test_the_readme_s_declared_task_example_declares_what_it_says(monkeypatch):
    """The README's second example (timeouts, retries, limits, cleanup) is real code."""
    import services.tasks
    from services.tasks.catalog import Catalog

    text = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    section = text.split("## Adding a task", 1)[1].split("\n## ", 1)[0]
    example = re.findall(r"```python\n(.*?)```", section, re.S)[1]
    fresh = Catalog()
    monkeypatch.setattr(services.tasks, "task", fresh.task)
    exec(compile(example, "README.md", "exec"), {})
    spec = fresh.get("net.fetch")
    assert (spec.timeout, spec.max_timeout, spec.retries, spec.retry_on) == (
        60, 600, 3, (OSError,))
    assert (spec.cancel_grace, spec.memory_limit, spec.concurrency) == (5, 512, 2)
    assert spec.backoff.base == 2 and spec.backoff.maximum == 60
