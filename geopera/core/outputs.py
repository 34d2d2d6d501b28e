"""Outputs that appear complete or not at all, and never over earlier ones; file checksums.

Every command writes through these helpers:

* :func:`require_new_folder`: an output folder must not exist, or be empty;
* :func:`atomic_file`: a file is written under a hidden temporary sibling name and renamed onto
  its final name only when complete (:func:`write_atomic`, :func:`write_json`,
  :func:`save_torch_atomic` and :class:`geopera.core.checkpoints.AtomicCheckpointIO` use it);
* :func:`staged_folder`: a whole folder is assembled beside its final name and renamed into
  place when the command succeeds.
"""

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


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

    On an exception the temporary file is removed and ``path`` is left as it was.

    Args:
        path: The final file name.

    Yields:
        The temporary path to write (hidden, same folder and suffix, so drivers that pick a
        format by suffix still do).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
    try:
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

    with atomic_file(path) as tmp:
        torch.save(obj, tmp)


@contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A hidden sibling folder, renamed to ``out`` when the block succeeds, removed otherwise.

    Args:
        out: The final folder; must not exist or be an empty folder.

    Yields:
        The work folder (``.<name>.partial-*`` beside ``out``).

    Raises:
        FileExistsError: If ``out`` exists and is not empty.
    """
    require_new_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield work
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(work, out)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
