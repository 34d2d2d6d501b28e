"""The collapse alarm: what the teacher's health signals say, and the alarm that acts on it."""

import math
import warnings
from dataclasses import dataclass
from typing import Any, cast

import lightning as L
from rich.console import Console
from rich.text import Text

from geopera.core.contracts import CollapseRecord
from geopera.models.pera_output import TeacherHealth
from geopera.pretrain.metrics import StepMetrics, TaskView
from geopera.pretrain.rundir import RunDir


@dataclass(frozen=True)
class CollapseLimits:
    """Where the teacher's health signals mean collapse.

    Attributes:
        min_std: Teacher-output std below this: constant outputs.
        min_entropy: Entropy below this: every image on one prototype.
        max_entropy: Entropy above this, after ``after_step``: near-uniform outputs.
        rank_fraction: Effective rank below this fraction of the first check's: dimensional
            collapse.
        after_step: Steps before the uniform test applies (the temperature warm-up).
    """

    min_std: float
    min_entropy: float
    max_entropy: float
    rank_fraction: float
    after_step: int

    @classmethod
    def of(
        cls,
        prototypes: int,
        min_std: float,
        entropy_fraction: float,
        uniform_fraction: float,
        rank_fraction: float,
        after_step: int,
    ) -> "CollapseLimits":
        """Limits from fractions of ``log(prototypes)`` (the entropy of a uniform teacher).

        The defaults are the pretraining config's (``trainer.collapse_*``), kept there only.
        """
        log_k = math.log(prototypes)
        return cls(
            min_std, entropy_fraction * log_k, uniform_fraction * log_k, rank_fraction, after_step
        )


def collapse_reasons(
    health: TeacherHealth[float], step: int, limits: CollapseLimits, first_rank: float | None
) -> list[str]:
    """The collapses a step's health signals show (empty: healthy).

    Args:
        health: The step's signals.
        step: The step.
        limits: Where collapse starts.
        first_rank: The effective rank at the first check (None: this is the first).

    Returns:
        One sentence per collapse found.
    """
    found = []
    if health.std < limits.min_std:
        found.append(f"teacher-output std {health.std:.2e} < {limits.min_std:.0e}")
    if health.entropy < limits.min_entropy:
        found.append(f"entropy {health.entropy:.3f} < {limits.min_entropy:.3f} (one prototype)")
    if step >= limits.after_step and health.entropy > limits.max_entropy:
        found.append(
            f"entropy {health.entropy:.3f} > {limits.max_entropy:.3f} (near-uniform teacher "
            "outputs)"
        )
    rank = health.rank
    if rank is not None and first_rank is not None and rank < limits.rank_fraction * first_rank:
        found.append(
            f"effective rank {rank:.1f} < {limits.rank_fraction:g} x {first_rank:.1f} at the "
            "start (dimensional collapse)"
        )
    return found


class CollapseAlarm(L.Callback):
    """Warns loudly when the teacher collapses, and records it in run.json.

    A check fails on any of four collapses (see :func:`collapse_reasons`): **constant** (low
    teacher-output std), **sharp** (low entropy: every image on one prototype), **uniform**
    (after the temperature warm-up, entropy near ``log(K)``: the outputs carry no information
    while the loss still falls), **dimensional** (the class tokens' effective rank falls below
    a fraction of its first value). ``patience`` failed checks in a row raise the alarm.

    Args:
        run: The run directory.
        limits: Where collapse starts.
        patience: Failed checks in a row before the alarm.
        cause: A likely cause known before the run (a learning rate far above the rule), named
            first in the alarm.
    """

    def __init__(
        self, run: RunDir, limits: CollapseLimits, patience: int, cause: str | None = None
    ) -> None:
        self.run = run
        self.cause = cause
        self.limits = limits
        self.patience = patience
        self.failed = 0
        self.raised = False
        #: Its ``metrics.csv`` column; a flag, written in rows that other values make.
        self.column, self.makes_row = "collapse_alarm", False
        self.first_rank: float | None = None
        self._checked = -1

    def at_step(self, trainer: L.Trainer, task: TaskView, step: int) -> float | None:
        """Check the step's signals once (when it has them); 1.0 once the alarm has rung."""
        record: StepMetrics | None = task.step_metrics
        if record is not None and step != self._checked:
            self._checked = step
            self._check(trainer, record)
        return 1 if self.raised else 0

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Check the step's health signals (when they were computed)."""
        self.at_step(trainer, cast(TaskView, pl_module), trainer.global_step - 1)

    def _check(self, trainer: L.Trainer, record: StepMetrics) -> None:
        health = record.health
        found = collapse_reasons(health, record.step, self.limits, self.first_rank)
        if self.first_rank is None and health.rank is not None and math.isfinite(health.rank):
            self.first_rank = health.rank
        self.failed = self.failed + 1 if found else 0
        if self.failed < self.patience or self.raised:
            return
        self.raised = True
        message = (
            f"COLLAPSE ALARM at step {record.step}: {'; '.join(found)} for {self.failed} checks "
            f"in a row. {self.cause + ' ' if self.cause else ''}"
            "The representation is collapsing: lower the learning rate, raise the "
            "teacher temperature warm-up, check the centring and the data (constant patches?), "
            "and judge the backbone with `geopera evaluate`."
        )
        if trainer.global_rank == 0:
            Console(stderr=True).print(Text(message, style="bold red"))
            self.run.update_status(
                collapse_alarm=CollapseRecord(
                    record.step, found, health.std, health.entropy, health.rank
                )
            )
        warnings.warn(message, stacklevel=1)
