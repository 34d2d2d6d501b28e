"""Outputs that appear complete or not at all."""

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A hidden sibling folder, renamed to ``out`` when the block succeeds, removed otherwise.

    ``out`` must not exist or be an empty folder (callers check and explain first).

    Args:
        out: The final folder.

    Yields:
        The work folder (``.<name>.partial-*`` beside ``out``).
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield work
        if out.exists():
            out.rmdir()  # empty, checked by the caller
        os.replace(work, out)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
