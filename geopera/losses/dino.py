"""DINO class-token loss with a centred, sharpened teacher.

Teacher probabilities are ``softmax((t - centre) / T_t)``; student log-probabilities are
``log_softmax(s / T_s)``. Each student crop is matched with the teacher output of the same crop
only (PerA's pairs are aligned crop by crop). The centre is an EMA of the teacher outputs; the
update computed from a batch is applied *before the next* teacher softmax, so a step's loss uses
the centre of the previous steps.
"""

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


class DINOLoss(nn.Module):
    """Cross-entropy between centred teacher and student prototype distributions.

    Args:
        out_dim: Number of prototypes K.
        student_temp: Student temperature (0.1).
        center_momentum: EMA momentum of the centre (0.9).
    """

    center: Tensor
    pending: Tensor
    has_pending: Tensor

    def __init__(
        self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9
    ) -> None:
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.register_buffer("pending", torch.zeros(1, out_dim))
        self.register_buffer("has_pending", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def teacher_probabilities(self, teacher: Tensor, teacher_temp: float) -> Tensor:
        """Centre and sharpen teacher outputs, after applying any pending centre update.

        Args:
            teacher: (N, K) teacher head outputs of all crops.
            teacher_temp: Teacher temperature.

        Returns:
            (N, K) probabilities.
        """
        self.apply_pending_center()
        return F.softmax((teacher - self.center) / teacher_temp, dim=-1)

    def cross_entropy(self, student: Tensor, teacher_probs: Tensor) -> Tensor:
        """Mean over the batch of ``-sum(p_t * log_softmax(s / T_s))``.

        Args:
            student: (B, K) student head outputs of one crop.
            teacher_probs: (B, K) teacher probabilities of the same crop.

        Returns:
            A scalar.
        """
        log_p = F.log_softmax(student / self.student_temp, dim=-1)
        return -(teacher_probs * log_p).sum(dim=-1).mean()

    def forward(self, student: Tensor, teacher_probs: Tensor, n_crops: int) -> Tensor:
        """Sum over crops of the per-crop cross-entropy.

        Args:
            student: (n_crops * B, K) student outputs, crop-major.
            teacher_probs: (n_crops * B, K) teacher probabilities, crop-major.
            n_crops: Number of crops in the rows.

        Returns:
            A scalar: the sum over crops (divide by the total number of crops outside).
        """
        s = student.chunk(n_crops)  # (n*B, K) -> n x (B, K)
        t = teacher_probs.chunk(n_crops)
        return sum(
            (self.cross_entropy(si, ti) for si, ti in zip(s, t, strict=True)), student.new_zeros(())
        )

    @torch.no_grad()
    def update_center(self, teacher: Tensor) -> Tensor:
        """Record the batch mean of teacher outputs (averaged over DDP ranks) as pending.

        Args:
            teacher: (N, K) teacher head outputs of all crops.

        Returns:
            (1, K) the batch mean that will update the centre.
        """
        mean = teacher.mean(dim=0, keepdim=True)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(mean)
            mean /= dist.get_world_size()
        finite = torch.isfinite(mean).all()  # a skipped step's mean is not kept (no host sync)
        self.pending.copy_(torch.where(finite, mean, torch.zeros_like(mean)))
        self.has_pending.copy_(finite)
        return mean

    @torch.no_grad()
    def apply_pending_center(self) -> None:
        """Fold the pending batch mean into the centre (EMA).

        A step whose teacher outputs are not finite is skipped by training; its mean is not
        pending (:meth:`update_center`), so it cannot poison the centre.
        """
        # branch-free, so no device value is read on the host: a weight of 0 keeps the centre
        weight = self.has_pending.to(self.center.dtype) * (1 - self.center_momentum)
        self.center.add_(weight * (self.pending - self.center))
        self.has_pending.fill_(False)
