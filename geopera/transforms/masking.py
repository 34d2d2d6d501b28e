"""Spatially disjoint patch sets for the student, the mask tokens and the teacher.

For each crop row, uniform noise ``u`` over the ``L`` patches of the ViT grid gives
``order = argsort(u)``. Following the authors' implementation, the sets are taken on ``order``
itself (not on the rank of each patch)::

    student = order < round(student_ratio * L)
    token   = round(student_ratio * L) <= order < round(2 * student_ratio * L)   (global crops)
    teacher = order >= round((1 - teacher_ratio) * L)

Because ``order`` is a permutation, each set has an exact size on every row, so index tensors
have fixed shapes and can be gathered without padding. Local crops have no mask tokens.
"""

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class MaskSets:
    """Index sets of one crop batch, each ascending along dim 1.

    Attributes:
        student: (N, n_s) patch indices the student sees.
        token: (N, n_m) patch indices replaced by the mask token (empty for local crops).
        teacher: (N, n_t) patch indices the teacher sees.
        num_patches: L, the number of patches per crop.
    """

    student: Tensor
    token: Tensor
    teacher: Tensor
    num_patches: int

    def boolean(self, which: str) -> Tensor:
        """A boolean mask (N, L) of one set.

        Args:
            which: ``"student"``, ``"token"`` or ``"teacher"``.

        Returns:
            True at the set's patches.
        """
        index: Tensor = getattr(self, which)
        mask = torch.zeros(index.shape[0], self.num_patches, dtype=torch.bool, device=index.device)
        return mask.scatter_(1, index, True)


def _indices(mask: Tensor, count: int) -> Tensor:
    """(N, L) boolean mask with ``count`` True per row -> (N, count) ascending indices.

    The count is known from the ratios, so no device value is read on the host.
    """
    # stable sort of ~mask puts the True positions first, in ascending order
    order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices  # (N, L)
    return order[:, :count]


def disjoint_masks(
    noise: Tensor, student_ratio: float = 0.2, teacher_ratio: float = 0.6, mask_tokens: bool = True
) -> MaskSets:
    """Turn uniform noise into disjoint student / mask-token / teacher index sets.

    Args:
        noise: (N, L) uniform noise, one row per crop.
        student_ratio: Fraction of patches for the student (and, for global crops, for the mask
            tokens).
        teacher_ratio: Fraction of patches for the teacher.
        mask_tokens: Whether to draw mask-token patches (global crops) or not (local crops).

    Returns:
        The index sets.

    Raises:
        ValueError: If the ratios overlap or leave a set empty.
    """
    if noise.ndim != 2:
        raise ValueError(f"noise must have shape (N, L), got {tuple(noise.shape)}")
    n_patches = noise.shape[1]
    k_student = round(student_ratio * n_patches)
    k_hidden = round(2 * student_ratio * n_patches)  # student + mask tokens
    k_teacher_start = round((1 - teacher_ratio) * n_patches)
    if k_student < 1 or k_teacher_start >= n_patches:
        raise ValueError(
            f"ratios student={student_ratio}, teacher={teacher_ratio} leave an empty set on a "
            f"grid of {n_patches} patches; use a larger crop or larger ratios"
        )
    if k_teacher_start < (k_hidden if mask_tokens else k_student):
        raise ValueError(
            f"student ({student_ratio}) and teacher ({teacher_ratio}) ratios overlap: the sets "
            "would not be disjoint; keep 2 * student_ratio + teacher_ratio <= 1"
        )
    order = torch.argsort(noise, dim=1)  # (N, L)
    student = order < k_student
    token = (order >= k_student) & (order < k_hidden) if mask_tokens else torch.zeros_like(student)
    teacher = order >= k_teacher_start
    k_token = k_hidden - k_student if mask_tokens else 0
    return MaskSets(
        _indices(student, k_student),
        _indices(token, k_token),
        _indices(teacher, n_patches - k_teacher_start),
        n_patches,
    )


class DisjointMasking(nn.Module):
    """Draws the noise on the input's device and returns the mask sets (Kornia-style module).

    Args:
        student_ratio: Fraction of patches for the student.
        teacher_ratio: Fraction of patches for the teacher.
    """

    def __init__(self, student_ratio: float = 0.2, teacher_ratio: float = 0.6) -> None:
        super().__init__()
        self.student_ratio = student_ratio
        self.teacher_ratio = teacher_ratio

    def forward(
        self,
        rows: int,
        num_patches: int,
        mask_tokens: bool,
        device: torch.device | str = "cpu",
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> MaskSets:
        """Draw masks for ``rows`` crops of ``num_patches`` patches.

        Args:
            rows: Number of crops.
            num_patches: Patches per crop.
            mask_tokens: True for global crops.
            device: Device of the noise.
            noise: Injected noise (N, L) for tests and parity; drawn when None.
            generator: Random generator (on ``device``).

        Returns:
            The index sets.
        """
        if noise is None:
            noise = torch.rand(rows, num_patches, device=device, generator=generator)
        return disjoint_masks(noise, self.student_ratio, self.teacher_ratio, mask_tokens)
