"""File tasks: checksums of a file or a folder tree, and archives of a folder.

Both walk folders the same way: symbolic links are never followed (a link to a folder could
loop, a link to a file could point anywhere); they are listed as links. Anything that is
neither a regular file, a folder nor a link (fifos, sockets, devices) is skipped, because
reading a fifo would block forever.

Also home to the helpers the other file-writing tasks share: `AtomicFile` (write under a
temporary name, rename into place, never leave a partial file behind), `io_failure` (an
OSError as a clear TaskFailure) and `format_bytes` (resultview's, re-exported).
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import secrets
import stat
import tarfile
import time
import zipfile
from dataclasses import dataclass
from typing import IO, Any

from services.core.errors import TaskCancelled, TaskFailure
from services.core.resultview import format_bytes  # one way to say a size, everywhere
from services.tasks.catalog import Param, ParamType, PathKind, task
from services.tasks.context import TaskContext

CHUNK = 1024 * 1024  # bytes read at a time; each chunk is a cancellation checkpoint
ALGORITHMS = ("sha256", "sha1", "md5", "blake2b", "sha512")
FORMATS = ("auto", "zip", "tar.gz")

# ------------------------------------------------------------------ shared helpers




_ERRNO_CODES = {
    errno.EACCES: "permission_denied",
    errno.EPERM: "permission_denied",
    errno.ENOENT: "not_found",
    errno.ENOSPC: "disk_full",
    errno.EDQUOT: "disk_full",
    errno.EROFS: "read_only",
}


def io_failure(exc: OSError, what: str | None = None) -> TaskFailure:
    """An OSError as a TaskFailure that says what failed on which path, and why."""
    if what is None:
        what = display_path(os.fsdecode(exc.filename)) if exc.filename else "file"
    reason = exc.strerror or str(exc)
    return TaskFailure(f"{what}: {reason}", code=_ERRNO_CODES.get(exc.errno or 0, "io_error"))


def display_path(path: str) -> str:
    """A path as text safe for JSON and SQLite (undecodable bytes become U+FFFD)."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def is_within(path: str, folder: str) -> bool:
    """Whether `path` is `folder` or lies under it, after resolving links."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


class AtomicFile:
    """A new file written under a temporary name next to its destination.

    Use as a context manager; `commit()` renames it into place. Leaving the block without
    committing (an error, a cancellation) removes the temporary file, so no partial file is
    ever left behind. The temporary file is created like any new file (mode 0666 less the
    umask), so the published file has the usual permissions.

    Args:
        destination: the final path.
        overwrite: replace an existing destination; otherwise committing fails when it
            exists (checked atomically where the file system has hard links).
        ctx: the task's context: the temporary file is registered with it
            (`TaskContext.temp_path`), so it is removed even if the attempt is killed.
    """

    def __init__(self, destination: str, *, overwrite: bool = False,
                 ctx: TaskContext | None = None) -> None:  # fmt: skip
        self.destination = destination
        self.overwrite = overwrite
        self.ctx = ctx
        self.temp_path = ""
        self.file: IO[bytes] | None = None
        self._committed = False

    def __enter__(self) -> AtomicFile:
        folder, name = os.path.split(self.destination)
        while True:
            self.temp_path = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.part")
            if self.ctx is not None:  # registered before it exists: a kill may come any time
                self.ctx.temp_path(self.temp_path)
            try:
                fd = os.open(self.temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                self._forget()
                continue
            except OSError as exc:
                self._forget()
                raise io_failure(exc, display_path(self.destination)) from None
            break
        self.file = os.fdopen(fd, "wb")
        return self

    def commit(self) -> None:
        """Flush the file to disk and rename it to its destination.

        Raises:
            TaskFailure: the destination exists (and overwrite is off) or an I/O error.
        """
        assert self.file is not None
        where = display_path(self.destination)
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            if self.overwrite:
                os.replace(self.temp_path, self.destination)
            else:
                self._publish_new()
        except OSError as exc:
            raise io_failure(exc, where) from None
        self._committed = True
        self._forget()

    def _forget(self) -> None:
        if self.ctx is not None:
            self.ctx.keep(self.temp_path)

    def _publish_new(self) -> None:
        try:
            # A hard link fails if the destination appeared meanwhile: no race, no clobber.
            os.link(self.temp_path, self.destination)
        except FileExistsError:
            raise TaskFailure(f"{display_path(self.destination)} already exists",
                              code="destination_exists") from None  # fmt: skip
        except OSError:  # a file system without hard links
            if os.path.lexists(self.destination):
                raise TaskFailure(f"{display_path(self.destination)} already exists",
                                  code="destination_exists") from None  # fmt: skip
            os.replace(self.temp_path, self.destination)
            return
        os.unlink(self.temp_path)

    def __exit__(self, *exc_info: object) -> None:
        if self._committed:
            return
        if self.file is not None:
            try:
                self.file.close()
            except OSError:
                pass  # e.g. disk full while flushing: the file goes away anyway
        try:
            os.unlink(self.temp_path)
        except FileNotFoundError:
            pass
        self._forget()


@dataclass(frozen=True)
class Entry:
    """One thing found under a folder: `rel` uses "/" separators."""

    rel: str
    path: str
    kind: str  # "file", "dir", "symlink" or "other"
    size: int = 0


def walk(ctx: TaskContext, root: str) -> list[Entry]:
    """Everything under `root`, sorted by relative path (a folder before its contents).

    Does not follow symbolic links. Reports "listing" progress and checks for cancellation.

    Raises:
        TaskFailure: a folder could not be read.
    """
    entries: list[Entry] = []
    pending = [""]
    last_report = time.monotonic()
    while pending:
        rel_dir = pending.pop()
        folder = os.path.join(root, rel_dir) if rel_dir else root
        try:
            with os.scandir(folder) as it:
                children = list(it)
            for child in children:
                rel = f"{rel_dir}/{child.name}" if rel_dir else child.name
                if child.is_symlink():
                    entries.append(Entry(rel, child.path, "symlink"))
                elif child.is_dir(follow_symlinks=False):
                    entries.append(Entry(rel, child.path, "dir"))
                    pending.append(rel)
                elif child.is_file(follow_symlinks=False):
                    size = child.stat(follow_symlinks=False).st_size
                    entries.append(Entry(rel, child.path, "file", size))
                else:
                    entries.append(Entry(rel, child.path, "other"))
        except OSError as exc:
            raise io_failure(exc, display_path(exc.filename or folder)) from None
        if time.monotonic() - last_report >= 0.5:
            last_report = time.monotonic()
            ctx.progress(None, f"listing… {len(entries)} found")
        else:
            ctx.check_cancelled()
    entries.sort(key=lambda e: e.rel)
    return entries


class _ByteProgress:
    """Progress by bytes over several files: "12.3 MB of 40 MB · name"."""

    def __init__(self, ctx: TaskContext, total: int) -> None:
        self.ctx = ctx
        self.total = total
        self.done = 0
        self._total_text = format_bytes(total)

    def advance(self, n: int, name: str) -> None:
        self.done += n
        fraction = self.done / self.total if self.total else None
        self.ctx.progress(fraction,
                          f"{format_bytes(self.done)} of {self._total_text} · {name}")  # fmt: skip


# ------------------------------------------------------------------ files.checksum


def _hash_file(path: str, algorithm: str, progress: _ByteProgress, name: str) -> tuple[str, int]:
    """The hex digest and size of one file, read in CHUNK-sized pieces."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    size = 0
    try:
        # O_NONBLOCK: opening a fifo that replaced the file must not hang the task.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with open(fd, "rb", buffering=0) as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise TaskFailure(f"{display_path(path)} is not a regular file",
                                  code="not_regular_file")  # fmt: skip
            while n := f.readinto(buf):
                digest.update(view[:n])
                size += n
                progress.advance(n, name)
    except OSError as exc:
        raise io_failure(exc, display_path(path)) from None
    return digest.hexdigest(), size


@task(
    "files.checksum",
    title="Checksum",
    description=(
        "Computes the checksum of a file, or of every file in a folder (a sorted manifest "
        "of relative paths, sizes and digests, plus one digest of the whole manifest in "
        "sha256sum format). Symbolic links inside a folder are listed with their target "
        "but not followed; fifos, sockets and devices are skipped. Writes nothing."
    ),
    params=[
        Param("path", ParamType.PATH, title="File or folder", path_kind=PathKind.ANY,
              description="The file or folder to checksum."),  # fmt: skip
        Param("algorithm", ParamType.CHOICE, title="Algorithm", default="sha256",
              choices=ALGORITHMS, description="The hash function."),  # fmt: skip
    ],
    display={
        "summary": ["{files:count:file} · {bytes:bytes} · {digest:short}",
                    "{size:bytes} · {digest:short}"],
        "fields": [
            {"key": "digest", "label": "Digest", "type": "digest"},
            {"key": "algorithm", "label": "Algorithm"},
            {"key": "path", "label": "Checked", "type": "path"},
            {"key": "files", "label": "Files", "type": "count"},
            {"key": "bytes", "label": "Size", "type": "bytes"},
            {"key": "size", "label": "Size", "type": "bytes"},
            {"key": "manifest", "label": "Manifest", "type": "table", "columns": [
                {"key": "path", "label": "File"},
                {"key": "size", "label": "Size", "type": "bytes"},
                {"key": "digest", "label": "Digest", "type": "digest"},
            ]},
            {"key": "symlinks", "label": "Symbolic links", "type": "table", "columns": [
                {"key": "path", "label": "Link"}, {"key": "target", "label": "Target"},
            ]},
            {"key": "skipped", "label": "Skipped", "type": "list"},
        ],
    },
)
def checksum(ctx: TaskContext, path: str, algorithm: str = "sha256") -> dict[str, Any]:
    """Checksum a file or every file of a folder tree."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise io_failure(exc, display_path(path)) from None
    if stat.S_ISREG(st.st_mode):
        name = os.path.basename(path)
        progress = _ByteProgress(ctx, st.st_size)
        digest, size = _hash_file(path, algorithm, progress, name)
        ctx.progress(1.0, f"{format_bytes(size)} · {name}")
        return {"path": display_path(path), "kind": "file", "algorithm": algorithm,
                "size": size, "digest": digest}  # fmt: skip
    if not stat.S_ISDIR(st.st_mode):
        raise TaskFailure(f"{display_path(path)} is neither a file nor a folder",
                          code="not_regular_file")  # fmt: skip

    entries = walk(ctx, path)
    files = [e for e in entries if e.kind == "file"]
    progress = _ByteProgress(ctx, sum(e.size for e in files))
    manifest: list[dict[str, Any]] = []
    summary = hashlib.new(algorithm, usedforsecurity=False)
    total = 0
    for e in files:
        rel = display_path(e.rel)
        digest, size = _hash_file(e.path, algorithm, progress, rel)
        manifest.append({"path": rel, "size": size, "digest": digest})
        summary.update(f"{digest}  {rel}\n".encode())
        total += size
    symlinks = []
    for e in entries:
        if e.kind == "symlink":
            try:
                target = os.readlink(e.path)
            except OSError as exc:
                raise io_failure(exc, display_path(e.path)) from None
            symlinks.append({"path": display_path(e.rel), "target": display_path(target)})
    skipped = [display_path(e.rel) for e in entries if e.kind == "other"]
    ctx.progress(1.0, f"{len(manifest)} files · {format_bytes(total)}")
    return {
        "path": display_path(path),
        "kind": "folder",
        "algorithm": algorithm,
        "digest": summary.hexdigest(),
        "files": len(manifest),
        "bytes": total,
        "manifest": manifest,
        "symlinks": symlinks,
        "skipped": skipped,
    }


# ------------------------------------------------------------------ files.archive


def archive_format(requested: str, destination: str) -> str:
    """The archive format: as requested, or for "auto" from the destination's name.

    "auto" means tar.gz for names ending in .tar.gz or .tgz, zip for anything else.
    """
    if requested != "auto":
        return requested
    lower = destination.lower()
    return "tar.gz" if lower.endswith((".tar.gz", ".tgz")) else "zip"


class _ProgressReader:
    """A file wrapper that reports progress on every read (tarfile pulls data through it)."""

    def __init__(self, f: IO[bytes], progress: _ByteProgress, name: str) -> None:
        self._f = f
        self._progress = progress
        self._name = name

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        self._progress.advance(len(data), self._name)
        return data


def _write_zip(out: IO[bytes], entries: list[Entry], progress: _ByteProgress) -> None:
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for e in entries:
            if e.kind == "dir":
                zf.writestr(_zip_info(e, e.rel + "/"), b"")
            elif e.kind == "symlink":
                # Info-ZIP's convention: a link is an entry whose mode says S_IFLNK and whose
                # data is the target; `unzip` restores it as a link.
                info = _zip_info(e, e.rel)
                zf.writestr(info, os.fsencode(os.readlink(e.path)))
            elif e.kind == "file":
                # Not strict: files dated before 1980 get zip's earliest date, not an error.
                info = zipfile.ZipInfo.from_file(e.path, e.rel, strict_timestamps=False)
                info.compress_type = zipfile.ZIP_DEFLATED
                with open(e.path, "rb") as src, zf.open(info, "w") as dst:
                    while chunk := src.read(CHUNK):
                        dst.write(chunk)
                        progress.advance(len(chunk), e.rel)


def _zip_info(e: Entry, name: str) -> zipfile.ZipInfo:
    st = os.lstat(e.path)
    info = zipfile.ZipInfo(name, time.localtime(max(st.st_mtime, 315532800))[:6])
    info.external_attr = (st.st_mode & 0xFFFF) << 16
    if e.kind == "dir":
        info.external_attr |= 0x10  # MS-DOS directory flag
    return info


def _write_tar(out: IO[bytes], entries: list[Entry], progress: _ByteProgress,
               inner_name: str) -> None:  # fmt: skip
    # Our own GzipFile, so the gzip header names the archive, not the temporary file.
    # Level 6, like zip's deflate default: level 9 costs much time for a few percent.
    with gzip.GzipFile(inner_name, "wb", 6, out, mtime=int(time.time())) as gz:
        with tarfile.open(fileobj=gz, mode="w", copybufsize=CHUNK) as tf:
            for e in entries:
                if e.kind == "other":
                    continue
                info = tf.gettarinfo(e.path, e.rel)
                if info.isreg():
                    with open(e.path, "rb") as src:
                        tf.addfile(info, _ProgressReader(src, progress, e.rel))  # type: ignore
                else:
                    tf.addfile(info)


@task(
    "files.archive",
    title="Archive a folder",
    description=(
        "Packs a folder into a zip or tar.gz archive. With format \"auto\", names ending in "
        ".tar.gz or .tgz make a tar.gz, anything else a zip. The archive is written under a "
        "temporary name in the destination's folder and renamed at the end, so a cancelled "
        "or failed run leaves nothing behind. Symbolic links are stored as links, not "
        "followed; fifos, sockets and devices are skipped. The destination may not lie "
        "inside the folder being archived."
    ),
    params=[
        Param("source", ParamType.PATH, title="Folder", path_kind=PathKind.DIRECTORY,
              description="The folder to archive."),  # fmt: skip
        Param("destination", ParamType.PATH, title="Archive", path_kind=PathKind.NEW_FILE,
              description="The archive file to create."),  # fmt: skip
        Param("format", ParamType.CHOICE, title="Format", default="auto", choices=FORMATS,
              description="zip, tar.gz, or auto (from the destination's name)."),  # fmt: skip
        Param("overwrite", ParamType.BOOLEAN, title="Overwrite", default=False,
              description="Replace the destination if it exists."),  # fmt: skip
    ],
    display={
        "summary": "{path:name} · {bytes_out:bytes} ({bytes_out/bytes_in:ratio} of "
                   "{bytes_in:bytes})",
        "fields": [
            {"key": "path", "label": "Archive", "type": "path"},
            {"key": "format", "label": "Format"},
            {"key": "files", "label": "Files", "type": "count"},
            {"key": "bytes_out", "label": "Size", "type": "bytes"},
            {"key": "bytes_in", "label": "Archived", "type": "bytes"},
            {"key": "bytes_out", "of": "bytes_in", "label": "Ratio", "type": "ratio"},
            {"key": "skipped", "label": "Skipped", "type": "list"},
        ],
        "actions": [{"key": "path", "label": "Open archive"}],
    },
)
def archive(ctx: TaskContext, source: str, destination: str, format: str = "auto",
            overwrite: bool = False) -> dict[str, Any]:  # fmt: skip
    """Archive a folder into a zip or tar.gz file, atomically."""
    fmt = archive_format(format, destination)
    shown = display_path(destination)
    if is_within(os.path.dirname(os.path.abspath(destination)), source):
        raise TaskFailure(f"{shown} is inside the folder being archived; choose a "
                          "destination outside it", code="destination_inside_source")  # fmt: skip
    if os.path.lexists(destination) and not overwrite:
        raise TaskFailure(f"{shown} already exists (set overwrite to replace it)",
                          code="destination_exists")  # fmt: skip
    if os.path.isdir(destination):
        raise TaskFailure(f"{shown} is a folder; give a file name", code="destination_is_folder")

    entries = walk(ctx, source)
    files = [e for e in entries if e.kind == "file"]
    progress = _ByteProgress(ctx, sum(e.size for e in files))
    inner = os.path.basename(destination)
    inner = inner[: -len(".gz")] if inner.lower().endswith(".gz") else inner
    try:
        with AtomicFile(destination, overwrite=overwrite, ctx=ctx) as out:
            assert out.file is not None
            if fmt == "zip":
                _write_zip(out.file, entries, progress)
            else:
                _write_tar(out.file, entries, progress, inner)
            out.commit()
    except OSError as exc:
        if ctx.cancelled:  # an error while unwinding a cancellation is still a cancellation
            raise TaskCancelled() from exc
        raise io_failure(exc, None if exc.filename else shown) from None
    except zipfile.LargeZipFile as exc:
        raise TaskFailure(f"{shown}: {exc}", code="too_large") from None
    try:
        bytes_out = os.path.getsize(destination)
    except OSError as exc:
        raise io_failure(exc, shown) from None
    skipped = [display_path(e.rel) for e in entries if e.kind == "other"]
    ctx.progress(1.0, f"{len(files)} files · {format_bytes(progress.done)} → "
                      f"{format_bytes(bytes_out)}")  # fmt: skip
    return {"path": shown, "format": fmt, "files": len(files), "bytes_in": progress.done,
            "bytes_out": bytes_out, "skipped": skipped}  # fmt: skip
