"""The pretraining run directory: its status file, and the files a finished run holds.

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
import time
from pathlib import Path
from typing import Any

from geopera.core.outputs import write_json

RUN_FILE = "run.json"


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
