"""What ``geopera predict`` asks of a task's predict writer, and what the writer did.

Every task's writer (named by its record in :mod:`geopera.finetune.registry`) takes the loaded
model and a :class:`PredictRequest`, and returns a :class:`PredictSummary` whose ``message`` the
command prints.
"""

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PredictRequest:
    """One prediction, as the command line gives it.

    Attributes:
        model: ``model.ckpt`` of ``geopera finetune`` (each rank of a multi-device run loads it).
        inputs: Input rasters (change: the two dates).
        output: The main output file.
        roi: Only predict inside this ROI (vector file, WKT or bbox), or None.
        overlap: Tile overlap in pixels (None: a quarter of the chip size).
        probabilities: Class tasks: also write class probabilities here, or None.
        batch_size: Tiles per forward pass.
        band_width: Dense tasks: columns predicted at once, and the unit ranks share.
        min_score: Detection: lowest score kept.
        nms_iou: Detection: cross-tile NMS IoU.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        overwrite: Replace existing outputs.
        band_map: ``--bands`` pairs (model band or common name -> raster band), or None.
        devices: Processes per node.
        num_nodes: Nodes.
    """

    model: Path
    inputs: list[str]
    output: Path
    roi: str | None = None
    overlap: int | None = None
    probabilities: Path | None = None
    batch_size: int = 8
    band_width: int = 2048
    min_score: float = 0.5
    nms_iou: float = 0.5
    device: str = "auto"
    overwrite: bool = False
    band_map: dict[str, str] | None = None
    devices: int = 1
    num_nodes: int = 1

    @property
    def ranks(self) -> int:
        """Processes in all."""
        return self.devices * self.num_nodes


@dataclass
class PredictSummary:
    """What ``predict`` wrote.

    Attributes:
        output: Main output file.
        probabilities: Probability raster, if written.
        pixels: Pixels with a prediction (dense tasks).
        objects: Boxes or chips written (vector outputs).
        merge_seconds: Time spent writing after the last forward pass: one process finishing
            the COGs; several, rank 0 writing the ranks' blocks and finishing the COGs.
        message: The line ``geopera predict`` prints.
    """

    output: Path
    probabilities: Path | None = None
    pixels: int = 0
    objects: int = 0
    merge_seconds: float = 0.0
    message: str = ""
