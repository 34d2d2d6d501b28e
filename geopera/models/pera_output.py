"""What a PerA forward returns: the loss, its typed parts, head outputs and the teacher's health.

:class:`LossParts` and :class:`TeacherHealth` hold tensors in the model and numbers once a
logging step has read them; their fields are the columns of ``metrics.csv``.
"""

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class LossParts[V]:
    """The parts of the PerA loss (the loss is their weighted sum), as tensors or as numbers.

    Each field is a column of ``metrics.csv`` and a TensorBoard curve: a new part is a field
    here and its term in ``PerA._losses`` (:mod:`geopera.models.pera`).

    Attributes:
        dino_global: DINO loss on the global crops.
        dino_local: DINO loss on the local crops (0 without local crops).
        koleo: KoLeo regulariser, summed over the global crops.
        pixel: Masked-pixel reconstruction loss.
    """

    dino_global: V
    dino_local: V
    koleo: V
    pixel: V


@dataclass(frozen=True)
class TeacherHealth[V]:
    """The teacher's collapse signals at a logging step, as tensors or as numbers.

    Each field is a ``teacher_*`` column of ``metrics.csv``: a new signal is a field here and
    its value in ``_health`` (:mod:`geopera.models.pera`; the collapse alarm reads them by name).

    Attributes:
        std: Mean per-prototype std of the teacher outputs over the batch.
        entropy: Mean entropy of the teacher probabilities.
        rank: Effective rank of the teacher's class tokens.
    """

    std: V
    entropy: V
    rank: V


@dataclass
class PerAOutput:
    """What one forward returns.

    Attributes:
        loss: The total loss (scalar, back-propagated).
        parts: The loss parts.
        student_global: (n_global * B, K) student class-head outputs.
        student_local: (n_local * B, K).
        teacher_global: (n_global * B, K) teacher class-head outputs.
        teacher_local: (n_local * B, K).
        pixel_prediction: (n_global * B, n_m, p * p * C).
        pixel_target: (n_global * B, n_m, p * p * C).
        center_update: (1, K) batch mean that will update the DINO centre.
        health: The teacher's collapse signals; None unless asked for.
    """

    loss: Tensor
    parts: LossParts[Tensor]
    student_global: Tensor
    student_local: Tensor
    teacher_global: Tensor
    teacher_local: Tensor
    pixel_prediction: Tensor
    pixel_target: Tensor
    center_update: Tensor
    health: TeacherHealth[Tensor] | None
