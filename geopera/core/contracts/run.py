"""What a pretraining run says about itself (``run.json``): written by pretrain, read by publish."""

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from geopera.core.contracts.base import _Versioned


class RunState(StrEnum):
    """The state of a run, ``run.json``'s ``status`` (written as its value)."""

    RUNNING = "running"
    INTERRUPTED = "interrupted"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True)
class Resume:
    """One ``--resume`` of a run: the step it continued from and the settings it changed."""

    step: int
    changed: dict[str, list[Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class CollapseRecord:
    """The collapse alarm: when it rang, why, and the teacher's health then."""

    step: int
    reasons: list[str]
    teacher_std: float | None = None
    teacher_entropy: float | None = None
    teacher_rank: float | None = None


@dataclass(frozen=True)
class SkippedRecord:
    """Steps skipped for non-finite loss or gradients: how many, the last one, and why."""

    count: int
    last: int
    reason: str | None


@dataclass(frozen=True)
class ProbeRecord:
    """The kNN probe during pretraining: its classes, size and ``(step, accuracy)`` history."""

    classes: list[str]
    samples: int
    knn_accuracy: list[tuple[int, float]]


@dataclass(frozen=True)
class LearningRate:
    """The run's peak learning rate, fixed when it started (a resume keeps it).

    Attributes:
        effective: The peak rate the optimiser uses.
        lr: ``optim.lr`` as configured.
        scaling: ``optim.lr_scaling`` (``linear``: ``lr x global_batch / 256``).
        global_batch: Images per optimiser step over every device and node at the start.
    """

    effective: float
    lr: float
    scaling: str
    global_batch: int


@dataclass
class RunStatus(_Versioned):
    """``run.json``: a run's state, length, times, resumes and health records.

    ``status`` says ``completed`` only once ``backbone.pth`` is written.

    Attributes:
        status: The run's state.
        command: The command line that started (or last resumed) it.
        geopera_version: Version that wrote it.
        max_steps: Steps the run is to take.
        steps: Steps taken when it last stopped.
        started: When it started (local time, ISO 8601).
        updated: When this file was last written.
        finished: When it completed.
        signal: The signal that interrupted it.
        error: Why it failed.
        resumes: Its resumes, in order.
        collapse_alarm: The collapse alarm, if it rang.
        skipped_steps: Skipped steps, if any.
        probe: The kNN probe, if one was given.
        learning_rate: The peak learning rate and how it was derived.
    """

    KIND: ClassVar[str] = "run status (run.json)"
    FILE: ClassVar[str] = "run.json"
    NESTED: ClassVar[dict[str, Callable[[Any], Any]]] = {
        "status": RunState,
        "resumes": lambda rows: [Resume(**r) for r in rows],
        "collapse_alarm": lambda d: CollapseRecord(**d),
        "skipped_steps": lambda d: SkippedRecord(**d),
        "learning_rate": lambda d: LearningRate(**d),
        "probe": lambda d: ProbeRecord(
            d["classes"], d["samples"], [(int(s), float(a)) for s, a in d["knn_accuracy"]]
        ),
    }

    status: RunState = RunState.RUNNING
    command: str | None = None
    geopera_version: str | None = None
    max_steps: int | None = None
    steps: int | None = None
    started: str | None = None
    updated: str | None = None
    finished: str | None = None
    signal: int | None = None
    error: str | None = None
    resumes: list[Resume] = field(default_factory=list)
    collapse_alarm: CollapseRecord | None = None
    skipped_steps: SkippedRecord | None = None
    probe: ProbeRecord | None = None
    learning_rate: LearningRate | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, without the fields that hold nothing (no resume, no alarm...)."""
        return {k: v for k, v in super().to_dict().items() if v is not None and v != []}

    @property
    def last_knn_accuracy(self) -> float | None:
        """The probe's last kNN accuracy, or None without a probe."""
        return self.probe.knn_accuracy[-1][1] if self.probe and self.probe.knn_accuracy else None
