"""Per-step schedules of PerA: learning rate, weight decay, teacher momentum and temperature.

Defaults follow the paper (in epochs there; in steps here): peak learning rate after a linear
warm-up then cosine decay to a floor; weight decay cosine 0.04 -> 0.2; teacher momentum cosine
0.992 -> 1.0; teacher temperature linear 0.03 -> 0.05 during its warm-up, then constant.
"""

from dataclasses import dataclass, field, fields

from geopera.core.schedules import cosine, linear, warmup_cosine

#: ``optim.lr`` is the rate for this many images per step (the DINO rule scales it linearly).
REFERENCE_BATCH = 256
#: How ``optim.lr`` becomes the run's rate: ``linear`` (x global batch / 256) or ``none``.
LR_SCALINGS = ("linear", "none")
#: The paper's rate for 256 images; a run far above it (x :data:`FAR_ABOVE`) is named as the
#: likely cause when the collapse alarm rings.
PAPER_LR = 1e-3
FAR_ABOVE = 4.0


def scaled_lr(lr: float, scaling: str, global_batch: int) -> float:
    """The run's peak learning rate: ``lr x global_batch / 256`` (``linear``) or ``lr``.

    Args:
        lr: ``optim.lr``.
        scaling: ``optim.lr_scaling``.
        global_batch: Images per optimiser step over every device and node.

    Returns:
        The peak rate the optimiser uses.
    """
    return lr * global_batch / REFERENCE_BATCH if scaling == "linear" else lr


def lr_far_above_rule(lr: float, global_batch: int) -> str | None:
    """A sentence when the run's rate is far above the paper's for its batch, else None."""
    rule = PAPER_LR * global_batch / REFERENCE_BATCH
    if lr <= FAR_ABOVE * rule:
        return None
    return (
        f"Likely cause: the learning rate {lr:.2g} is {lr / rule:.0f}x what the paper's rule "
        f"gives for {global_batch} images per step ({PAPER_LR:g} x {global_batch} / "
        f"{REFERENCE_BATCH} = {rule:.2g}); lower optim.lr."
    )


@dataclass(frozen=True)
class ScheduleSettings:
    """Schedule settings a user chooses (the pretraining config's ``optim`` section extends them).

    Attributes:
        lr: Peak learning rate.
        min_lr: Final learning rate.
        warmup_steps: Learning-rate warm-up steps.
        weight_decay: Initial weight decay.
        weight_decay_end: Final weight decay.
        momentum: Initial teacher momentum.
        momentum_end: Final teacher momentum.
        teacher_temp_start: Teacher temperature at step 0.
        teacher_temp: Teacher temperature after its warm-up.
        teacher_temp_warmup_steps: Teacher-temperature warm-up steps.
    """

    lr: float = 1e-3
    min_lr: float = 1e-6
    warmup_steps: int = 0
    weight_decay: float = 0.04
    weight_decay_end: float = 0.2
    momentum: float = 0.992
    momentum_end: float = 1.0
    teacher_temp_start: float = 0.03
    teacher_temp: float = 0.05
    teacher_temp_warmup_steps: int = 0


@dataclass(frozen=True)
class ScheduleValues:
    """The schedules' values at one step (each a ``metrics.csv`` column).

    Attributes:
        lr: Learning rate.
        weight_decay: Weight decay.
        teacher_temp: Teacher temperature.
        momentum: Teacher momentum.
    """

    lr: float
    weight_decay: float
    teacher_temp: float
    momentum: float


@dataclass(frozen=True)
class PerASchedules(ScheduleSettings):
    """All schedules of a run, as functions of the optimiser step.

    Attributes:
        total_steps: Steps of the run (keyword only).
    """

    total_steps: int = field(kw_only=True)

    @classmethod
    def of(cls, settings: ScheduleSettings, total_steps: int) -> "PerASchedules":
        """The schedules of a run of ``total_steps`` (warm-up capped at the run's length).

        Args:
            settings: The chosen settings (any subclass; extra fields are ignored).
            total_steps: Steps of the run.

        Returns:
            The schedules.
        """
        values = {f.name: getattr(settings, f.name) for f in fields(ScheduleSettings)}
        values["warmup_steps"] = min(values["warmup_steps"], total_steps)
        return cls(total_steps=total_steps, **values)

    def __post_init__(self) -> None:
        if self.total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {self.total_steps}")
        if not 0 <= self.warmup_steps <= self.total_steps:
            raise ValueError(
                f"warmup_steps must be in [0, total_steps={self.total_steps}], "
                f"got {self.warmup_steps}"
            )

    def learning_rate(self, step: int) -> float:
        """Linear warm-up from 0 to ``lr``, then cosine to ``min_lr``."""
        return warmup_cosine(step, self.warmup_steps, self.total_steps, self.lr, self.min_lr)

    def at(self, step: int) -> ScheduleValues:
        """Every schedule's value at ``step``."""
        return ScheduleValues(
            lr=self.learning_rate(step),
            weight_decay=self.weight_decay_at(step),
            teacher_temp=self.teacher_temp_at(step),
            momentum=self.momentum_at(step),
        )

    def weight_decay_at(self, step: int) -> float:
        """Cosine from ``weight_decay`` to ``weight_decay_end``."""
        return cosine(step, self.total_steps, self.weight_decay, self.weight_decay_end)

    def momentum_at(self, step: int) -> float:
        """Cosine from ``momentum`` to ``momentum_end``."""
        return cosine(step, self.total_steps, self.momentum, self.momentum_end)

    def teacher_temp_at(self, step: int) -> float:
        """Linear warm-up from ``teacher_temp_start`` to ``teacher_temp``, then constant."""
        return linear(
            step, self.teacher_temp_warmup_steps, self.teacher_temp_start, self.teacher_temp
        )
