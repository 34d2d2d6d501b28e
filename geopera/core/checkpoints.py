"""Lightning checkpoints written atomically (see :mod:`geopera.core.outputs`)."""

from pathlib import Path
from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from geopera.core.outputs import save_torch_atomic


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
        save_torch_atomic(checkpoint, Path(path))
