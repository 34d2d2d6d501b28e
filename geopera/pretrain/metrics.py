"""What a logging step measured (:class:`StepMetrics`), and where it goes: metrics.csv, the bar.

The task reads a logging step's values from the device in one transfer and keeps them as a
:class:`StepMetrics` (``PerATask.step_metrics``; None at other steps). The callbacks read that
record; the ones that add to a step's row (the collapse alarm's flag, the kNN probe's score)
are asked by :class:`MetricsCSV` and answer once per step, so callbacks may come in any order.
"""

import csv
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol, cast

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar
from torch import Tensor

from geopera.models.pera import PerA
from geopera.models.pera_output import LossParts, TeacherHealth
from geopera.pretrain.schedules import PerASchedules, ScheduleValues
from geopera.transforms.views import CropPairs


@dataclass(frozen=True)
class StepMetrics:
    """What a logging step measured; its fields are the columns of ``metrics.csv``.

    Attributes:
        step: The optimiser step.
        loss: Total loss.
        parts: The loss parts (:class:`~geopera.models.pera.LossParts`).
        schedules: Learning rate, weight decay, teacher temperature and momentum at the step.
        health: The teacher's collapse signals (``teacher_*`` columns).
        images_per_s: Images per second (all ranks) since the previous logging step.
        data_wait: Share of that time the loop waited for data.
        rejected_rate: Share of the batch's patches rejected by quality control.
        skipped: Steps skipped so far (as of the previous step).
    """

    step: int
    loss: float
    parts: LossParts[float]
    schedules: ScheduleValues
    health: TeacherHealth[float]
    images_per_s: float
    data_wait: float
    rejected_rate: float
    skipped: int

    @staticmethod
    def columns() -> list[str]:
        """The record's ``metrics.csv`` columns, in order (``skipped`` last, after additions)."""
        return [
            "step",
            "loss",
            *(f.name for f in fields(LossParts)),
            *(f.name for f in fields(ScheduleValues)),
            *(f"teacher_{f.name}" for f in fields(TeacherHealth)),
            "images_per_s",
            "data_wait",
            "rejected_rate",
        ]

    def values(self) -> dict[str, float]:
        """Every value by its metrics.csv / TensorBoard name (``step`` and ``skipped`` apart)."""
        return {
            "loss": self.loss,
            **asdict(self.parts),
            **asdict(self.schedules),
            **{f"teacher_{k}": v for k, v in asdict(self.health).items()},
            "images_per_s": self.images_per_s,
            "data_wait": self.data_wait,
            "rejected_rate": self.rejected_rate,
        }

    def shown(self) -> dict[str, str]:
        """The progress bar's values, as host strings."""
        return {
            "loss": f"{self.loss:.3f}",
            "img/s": f"{self.images_per_s:.1f}",
            "data_wait": f"{self.data_wait:.0%}",
        }


class TaskView(Protocol):
    """What the pretraining callbacks read from the task (:class:`~geopera.pretrain.task.PerATask`).

    Attributes:
        step_metrics: The last step's record if it logged, else None.
        skips: The skipped-step counts as of the last logging step.
        schedules: The run's schedules.
        model: The PerA model.
    """

    step_metrics: StepMetrics | None
    skips: "SkipCounts"
    schedules: PerASchedules
    model: PerA

    def is_logging_step(self, step: int) -> bool:
        """Whether ``step`` logs."""

    def make_views(self, batch: dict[str, Tensor], seed: int | None = None) -> CropPairs:
        """The crop pairs of a raw batch."""

    def publish(self, metrics: dict[str, float], step: int) -> None:
        """Send host values to the run's logger."""

    def read_skips(self) -> "SkipCounts":
        """Read the skip counters now."""


class StepAddition(Protocol):
    """A callback that adds a column to a step's row, computed once per step when first asked.

    Attributes:
        column: Its ``metrics.csv`` column.
        makes_row: Whether a value at a step that does not log writes a row of its own (the kNN
            probe's score does; the collapse alarm's flag does not).
    """

    column: str
    makes_row: bool

    def at_step(self, trainer: L.Trainer, task: TaskView, step: int) -> float | None:
        """The value at ``step``, or None when it has none."""


class StepProgressBar(RichProgressBar):
    """Lightning's rich bar, labelled by task: a run is one long epoch counted in steps.

    It shows the last logging step's :meth:`StepMetrics.shown` values, host strings, so
    drawing the bar never reads the device.
    """

    def _get_train_description(self, current_epoch: int) -> str:
        return "pretraining"

    def get_metrics(
        self, trainer: L.Trainer, pl_module: L.LightningModule
    ) -> dict[str, int | str | float | dict[str, float]]:
        """Lightning's entries plus the task's shown values."""
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        items.update(getattr(pl_module, "shown", {}))
        return items


class MetricsCSV(L.Callback):
    """Appends one row per logged step to ``RUN_DIR/metrics.csv`` (rank 0).

    The columns are the step record's (:meth:`StepMetrics.columns`), then each addition's (the
    kNN probe's score, the collapse alarm's flag...), then ``skipped``, the steps skipped so
    far. ``images_per_s`` and ``data_wait`` cover the steps since the previous row.

    On resume, rows at or after the resumed step (logged after the last checkpoint by the
    interrupted process) are dropped, so the file reads as one uninterrupted run.

    Args:
        path: The CSV file.
        resume_step: First step of this process (0 for a new run).
        additions: The callbacks that add a column, asked for each step.
    """

    def __init__(
        self, path: Path, resume_step: int = 0, additions: Sequence[StepAddition] = ()
    ) -> None:
        self.path = path
        self.additions = list(additions)
        self.columns = [*StepMetrics.columns(), *(a.column for a in self.additions), "skipped"]
        if path.is_file():
            with open(path, newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["step"]) < resume_step]
        else:
            rows = []
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, self.columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Write the step's metrics."""
        if trainer.global_rank != 0:
            return
        task = cast(TaskView, pl_module)
        step = trainer.global_step - 1
        record: StepMetrics | None = task.step_metrics
        added = {a.column: a.at_step(trainer, task, step) for a in self.additions}
        if record is None and not any(
            a.makes_row and added[a.column] is not None for a in self.additions
        ):
            return
        row: dict[str, Any] = dict.fromkeys(self.columns, "")
        row.update(record.values() if record is not None else {})
        row.update({k: v for k, v in added.items() if v is not None})
        row.update(step=step, skipped=task.skips.total)
        with open(self.path, "a", newline="") as fh:
            csv.DictWriter(fh, self.columns).writerow(row)


#: Why a step was skipped, by the code :class:`SkipCounts` keeps on the device.
SKIP_REASONS = {1: "non-finite loss", 2: "non-finite gradients"}


@dataclass(frozen=True)
class SkipCounts:
    """Steps skipped for non-finite values, as read at a logging step.

    Attributes:
        total: Skipped steps since this process started.
        in_a_row: Skipped steps up to the current one with no good step between.
        first_in_row: First step of that run of skipped steps (-1 when ``in_a_row`` is 0).
        last: Last skipped step (-1: none).
        reason: Why the last one was skipped (``None``: none was).
    """

    total: int
    in_a_row: int
    first_in_row: int
    last: int
    reason: str | None

    @classmethod
    def of(cls, state: Sequence[float]) -> "SkipCounts":
        """From the device counters as read: total, in a row, first in row, last, reason code."""
        total, in_a_row, first, last, code = (int(v) for v in state)
        return cls(total, in_a_row, first, last, SKIP_REASONS.get(code))


class StepInterval:
    """Host-side timing between two logging steps: images/s and the share spent waiting for data.

    The wait for a batch is the time from the end of one step (its last hook) to the start of
    the next (the batch fetched and moved to the device). Between logging steps the host does
    not wait for the device, so the shares are of the host's loop; the logging step's one
    synchronisation ties the interval to the device's pace.
    """

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.waited = 0.0
        self.images = 0
        self._ended: float | None = None

    def batch_arrived(self) -> None:
        """The next batch is on the device: the wait since the last step ends."""
        if self._ended is not None:
            self.waited += time.perf_counter() - self._ended
            self._ended = None

    def step_done(self) -> None:
        """A step ended: waiting for the next batch starts."""
        self._ended = time.perf_counter()

    def add_step(self, images: int) -> None:
        """Count a step's images (all ranks)."""
        self.images += images

    def close(self) -> tuple[float, float]:
        """Images/s and the data-wait share since the last call; starts a new interval."""
        now = time.perf_counter()
        elapsed = max(now - self.start, 1e-9)
        rates = (self.images / elapsed, min(self.waited / elapsed, 1.0))
        self.start, self.waited, self.images = now, 0.0, 0
        return rates
