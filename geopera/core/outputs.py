"""Outputs that appear complete or not at all, and never over earlier ones; file checksums.

Every command writes through these helpers:

* :func:`require_new_folder`: an output folder must not exist, or be empty;
* :func:`atomic_file`: a file is written under a hidden temporary sibling name and renamed onto
  its final name only when complete (:func:`write_atomic`, :func:`write_json`,
  :func:`save_torch_atomic` and :class:`geopera.core.checkpoints.AtomicCheckpointIO` use it);
* :func:`staged_folder`: a whole folder is assembled beside its final name and renamed into
  place when the command succeeds.

Temporary names carry the writer's process id (``.NAME.partial-PID...``). A process killed with
SIGKILL cannot clean up; the next writer of the same name removes what dead processes left
(:func:`remove_stale_partials`). A write that fails because the disk, a quota or the file-size
limit is full raises :class:`~geopera.core.errors.DiskFullError` naming the file, after the
temporary file is removed (:func:`disk_full_reason` recognises the many ways libraries report it).
"""

import errno
import hashlib
import json
import os
import re
import resource
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from geopera.core.errors import DiskFullError

#: errno values that mean "no room to write".
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
#: How libraries that hide the errno word it (GDAL/libtiff, zip writers).
FULL_MESSAGES = ("no space left", "file too large", "disk quota", "not enough space")
#: Below this many free bytes a failed write is blamed on the disk.
LOW_SPACE = 1 << 20
_PARTIAL = re.compile(r"^\.(?P<base>.+)\.(?:partial|scratch)-(?P<pid>\d+)")


def pid_alive(pid: int) -> bool:
    """Whether a process of this machine with that id is alive (ours, or anyone's)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_partials(path: Path) -> list[Path]:
    """Remove the temporary siblings of ``path`` that dead processes left behind.

    Matches ``.NAME.partial-PID*`` and ``.NAME.scratch-PID*`` where NAME is ``path``'s name or
    stem; files and folders of live processes (another run writing now) are left alone.

    Args:
        path: A final output path (file or folder).

    Returns:
        What was removed.
    """
    folder = path.parent
    if not folder.is_dir():
        return []
    removed = []
    for entry in folder.iterdir():
        m = _PARTIAL.match(entry.name)
        if not m or m["base"] not in (path.name, path.stem) or pid_alive(int(m["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def disk_full_reason(err: BaseException, path: Path | None = None) -> str | None:
    """Why a failed write ran out of room, or None when the failure had another cause.

    Looks at the exception chain (errno ENOSPC/EDQUOT/EFBIG, or the words libraries use), then
    at the filesystem of ``path`` (under 1 MiB free) and the process's file-size limit.

    Args:
        err: The exception of the failed write.
        path: The file being written, when known (also a partial file, before removal).

    Returns:
        A short reason (``"no space left on device"``, ``"file-size limit reached"``), or None.
    """
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        code = getattr(current, "errno", None)
        if code in FULL_ERRNOS:
            if code == errno.EFBIG:
                return "file-size limit reached (ulimit -f) or file too large for the filesystem"
            return os.strerror(code).lower()
        text = str(current).lower()
        if any(m in text for m in FULL_MESSAGES):
            return "no space left (or file-size limit reached)"
        current = current.__cause__ or current.__context__
    if path is None:
        return None
    folder = path if path.is_dir() else path.parent
    try:
        if shutil.disk_usage(folder).free < LOW_SPACE:
            return "no space left on device"
    except OSError:
        return None
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if (
        limit != resource.RLIM_INFINITY
        and path.is_file()
        and path.stat().st_size >= limit - min(LOW_SPACE, limit // 2)
    ):
        return f"file-size limit of {limit} bytes reached (ulimit -f)"
    return None


@contextmanager
def full_disk_errors(path: Path, *more: Path | None) -> Iterator[None]:
    """Turn a write failure caused by a full disk into :class:`DiskFullError` naming ``path``.

    Args:
        path: The file being written.
        *more: Other files written in the same block (None entries are ignored).

    Yields:
        Nothing.
    """
    try:
        yield
    except DiskFullError:
        raise
    except Exception as err:
        reason = None
        for candidate in (path, *more):
            if candidate is not None and reason is None:
                reason = disk_full_reason(err, candidate)
        if reason is None:
            raise
        raise DiskFullError(
            f"could not write {path}: {reason}. Nothing was left under that name; free space "
            "(or raise the limit) and run again"
        ) from err


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, streamed.

    Args:
        path: File path.

    Returns:
        Hex digest.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def require_new_folder(out: Path, hint: str = "choose a new --out") -> None:
    """Refuse an output folder that exists and is not empty (or is a file).

    Args:
        out: The output folder.
        hint: What the user can do instead (appended to the message).

    Raises:
        FileExistsError: If ``out`` is a file or a non-empty folder.
    """
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        kind = "folder" if out.is_dir() else "file"
        raise FileExistsError(
            f"{out} already exists and is not empty ({kind}); {hint} "
            "(geopera never overwrites earlier outputs)"
        )


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """A temporary sibling path, renamed onto ``path`` when the block succeeds.

    On an exception the temporary file is removed and ``path`` is left as it was; a full disk
    becomes :class:`DiskFullError`. Temporary files of dead earlier writers are removed first.

    Args:
        path: The final file name.

    Yields:
        The temporary path to write (hidden, same folder and suffix, so drivers that pick a
        format by suffix still do).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path)
    tmp = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
    try:
        with full_disk_errors(tmp):
            yield tmp
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write a file completely (flushed and synced) or not at all.

    Args:
        path: Destination.
        data: Bytes or text (UTF-8).
    """
    with atomic_file(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
        fh.flush()
        os.fsync(fh.fileno())


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically.

    Args:
        path: Destination.
        data: JSON-serialisable data (other objects are written as ``str``).
    """
    write_atomic(path, json.dumps(data, indent=1, default=str))


def save_torch_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` completely or not at all.

    Args:
        obj: What to save.
        path: Destination.
    """
    import torch  # here, so that light commands (help, data, archive) start fast

    with atomic_file(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)  # through a Python file, so a full disk raises with its errno
        fh.flush()
        os.fsync(fh.fileno())


@contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A hidden sibling folder, renamed to ``out`` when the block succeeds, removed otherwise.

    Folders that dead earlier runs (SIGKILL) left beside ``out`` are removed first.

    Args:
        out: The final folder; must not exist or be an empty folder.

    Yields:
        The work folder (``.<name>.partial-*`` beside ``out``).

    Raises:
        FileExistsError: If ``out`` exists and is not empty.
    """
    require_new_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(out)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-", dir=out.parent))
    try:
        yield work
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(work, out)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
