"""The pretraining run directory: its status file, and the files a finished run holds.

Layout::

    RUN_DIR/
      run.json          status (running / interrupted / completed / failed), steps, times
      .lock             the live process working on the run (pid, host), while it runs
      problems.jsonl    files that became unreadable during the run (then skipped)
      config.yaml       the resolved config
      inventory.json    ROI, sources, bands, problems; stats.json: band statistics
      checkpoints/      last.ckpt and periodic step*.ckpt (written atomically)
      metrics.csv       one row per logged step; tensorboard/: TensorBoard logs
      previews/         views and masks, PCA maps of teacher features, loss curves
      backbone.pth      teacher backbone, plain timm state dict (only when completed)
      backbone.json     what it is: model, bands, sizes, normalisation, ROI, sources, steps
"""

import dataclasses
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from geopera.core.contracts import RunState, RunStatus
from geopera.core.locks import hold

LOCK_FILE = ".lock"


class RunDir:
    """A run directory and its status file.

    Args:
        path: The folder.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @property
    def checkpoints(self) -> Path:
        """Checkpoint folder."""
        return self.path / "checkpoints"

    @property
    def previews(self) -> Path:
        """Preview PNG folder."""
        return self.path / "previews"

    @property
    def last_checkpoint(self) -> Path:
        """``checkpoints/last.ckpt``."""
        return self.checkpoints / "last.ckpt"

    @property
    def problems(self) -> Path:
        """``problems.jsonl``: files found unreadable during the run."""
        return self.path / "problems.jsonl"

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run for this process: a second process on the same run is refused.

        The lock file holds the owner's pid and host. A lock whose process is dead (killed with
        SIGKILL, a crashed machine's host name matching ours) is taken over with a note.

        Yields:
            Nothing; the lock is released on leaving.

        Raises:
            RunLockedError: If a live process (or a process on another host) holds the run.
        """
        with hold(self.path / LOCK_FILE, str(self.path)):
            yield

    def status(self) -> RunStatus | None:
        """What run.json says, or None when there is no run.json yet."""
        file = self.path / RunStatus.FILE
        return RunStatus.read(file) if file.is_file() else None

    def update_status(self, **fields: Any) -> RunStatus:
        """Set fields of run.json (atomically; the others keep their values).

        Args:
            **fields: Values of :class:`~geopera.core.contracts.RunStatus` fields.

        Returns:
            The new status.
        """
        status = self.status() or RunStatus()
        status = dataclasses.replace(status, **fields, updated=time.strftime("%Y-%m-%dT%H:%M:%S"))
        status.write(self.path / RunStatus.FILE)
        return status

    def record_failure(self, err: BaseException) -> None:
        """Write ``failed`` to run.json, if the disk still lets us (a full disk may not)."""
        try:
            error = " ".join(f"{type(err).__name__}: {err}".split())
            self.update_status(status=RunState.FAILED, error=error)
        except Exception:  # the original error matters more than the status
            where = self.path / RunStatus.FILE
            print(f"geopera: could not record the failure in {where}", file=sys.stderr)
