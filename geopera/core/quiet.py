"""Quiet runs: Lightning's banner lines, tips and known internal warnings are not for our users.

A geopera command prints its own lines and the progress bar; what Lightning logs at INFO
(accelerator banner, tips advertising services, "max_steps reached") and a deprecation warning
raised inside Lightning itself say nothing the user can act on. geopera's own notes and
warnings print as one line each (:func:`notes_as_lines`), without Python's source line.
"""

import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from geopera.core.errors import GeoperaNote

#: Lightning's loggers, whose INFO lines are silenced.
LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning")
#: Warnings raised inside Lightning that a user cannot act on.
INTERNAL_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\).*",
    # LitData's stream has a length and splits itself over workers, which Lightning cannot see
    r".*`IterableDataset` has `__len__` defined.*",
)


def quiet_lightning() -> None:
    """Silence Lightning's INFO lines and its known internal warnings (warnings stay warnings)."""
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in INTERNAL_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


#: The package's folder: warnings raised from files under it are geopera's own.
_PACKAGE = str(Path(__file__).resolve().parents[1])


@contextmanager
def notes_as_lines(command: str) -> Iterator[None]:
    """Print geopera's notes and own warnings as ``geopera CMD: note: ...`` (no source line).

    Deprecation warnings, and warnings from other libraries, keep Python's format.
    """
    shown = warnings.showwarning

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        ours = str(Path(filename).resolve()).startswith(_PACKAGE)
        if issubclass(category, GeoperaNote) or (
            ours and not issubclass(category, DeprecationWarning | PendingDeprecationWarning)
        ):
            print(f"geopera {command}: note: {' '.join(str(message).split())}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.simplefilter("default", GeoperaNote)
        warnings.showwarning = show
        yield
