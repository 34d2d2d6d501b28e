"""KoLeo regulariser (Sablayrolles et al., 2019): spread the batch on the sphere.

``-mean(log(d_i + eps))`` where ``d_i`` is the distance from each L2-normalised row to its
nearest other row, as in DINOv2 (``PairwiseDistance`` adds ``eps`` to the difference).
"""

import torch
import torch.nn.functional as F
from torch import Tensor


def koleo_loss(x: Tensor, eps: float = 1e-8) -> Tensor:
    """KoLeo loss of one batch.

    Args:
        x: (B, D) features, B >= 2.
        eps: Numerical guard.

    Returns:
        A scalar.

    Raises:
        ValueError: If the batch has fewer than 2 rows.
    """
    if x.shape[0] < 2:
        raise ValueError(f"KoLeo needs at least 2 rows per batch, got {x.shape[0]}")
    x = F.normalize(x.float(), p=2, dim=-1, eps=eps)
    with torch.no_grad():
        dots = x @ x.t()  # (B, D) @ (D, B) -> (B, B)
        dots.fill_diagonal_(-1.0)
        nearest = dots.argmax(dim=1)  # (B,)
    distances = F.pairwise_distance(x, x[nearest], p=2, eps=eps)  # (B,)
    return -torch.log(distances + eps).mean()
