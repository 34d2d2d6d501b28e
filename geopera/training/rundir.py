"""The run directory: atomic writes, status, and the files a finished run holds.

Layout::

    RUN_DIR/
      run.json          status (running / interrupted / completed / failed), steps, times
      config.yaml       the resolved config
      inventory.json    ROI, sources, bands, problems; stats.json: band statistics
      checkpoints/      last.ckpt and periodic step*.ckpt (written atomically)
      metrics.csv       one row per logged step; tensorboard/: TensorBoard logs
      previews/         views and masks, PCA maps of teacher features, loss curves
      backbone.pth      teacher backbone, plain timm state dict (only when completed)
      backbone.json     what it is: model, bands, sizes, normalisation, ROI, sources, steps
"""

import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

RUN_FILE = "run.json"


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write a file through a temporary sibling and ``os.replace``.

    Args:
        path: Destination.
        data: Bytes or text.
    """
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically.

    Args:
        path: Destination.
        data: JSON-serialisable data.
    """
    write_atomic(path, json.dumps(data, indent=1, default=str))


def save_torch_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` through a temporary file and ``os.replace``.

    Args:
        obj: What to save.
        path: Destination.
    """
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that never leaves a half-written checkpoint under its name."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        """Save to a temporary sibling, then rename.

        Args:
            checkpoint: The checkpoint dict.
            path: Destination.
            storage_options: Unused.
        """
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        save_torch_atomic(checkpoint, target)


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

    def status(self) -> dict[str, Any]:
        """The content of run.json (empty when absent)."""
        file = self.path / RUN_FILE
        return json.loads(file.read_text()) if file.is_file() else {}

    def update_status(self, **fields: Any) -> None:
        """Merge fields into run.json (atomically).

        Args:
            **fields: Values to set.
        """
        status = self.status()
        status.update(fields, updated=time.strftime("%Y-%m-%dT%H:%M:%S"))
        write_json(self.path / RUN_FILE, status)
