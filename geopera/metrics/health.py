"""Label-free health of an embedding: effective rank, spread and mean similarity.

A collapsed representation maps every image to (nearly) the same vector, or spreads the images
over a few directions only (dimensional collapse). Neither shows in a falling loss; both show
here, without labels.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Health:
    """Health of N embeddings of dimension D.

    Attributes:
        rank: Effective rank of the embeddings (RankMe: exp of the entropy of the normalised
            singular values), in [1, min(N, D)].
        std: Mean per-dimension standard deviation of the L2-normalised embeddings (about
            1 / sqrt(D) for well spread features, 0 when collapsed).
        mean_cosine: Mean pairwise cosine similarity between different images (1: collapsed).
    """

    rank: float
    std: float
    mean_cosine: float


def rank_of(features: Tensor, eps: float = 1e-7) -> Tensor:
    """RankMe (Garrido et al., 2023) of an embedding matrix, as a tensor on its device.

    Nothing is read on the host (the training step logs it without waiting for the device).

    Args:
        features: (N, D) embeddings.
        eps: Added to the normalised singular values before the logarithm.

    Returns:
        () float64: the effective rank, 1 <= rank <= min(N, D) (1 for a single or all-zero
        embedding; NaN when the embeddings hold non-finite values: a skipped step's health).
    """
    x = features.double()
    finite = torch.isfinite(x).all()
    singular = torch.linalg.svdvals(torch.where(finite, x, 0.0))  # (min(N, D),)
    total = singular.sum()
    p = singular / total.clamp_min(torch.finfo(x.dtype).tiny) + eps
    rank = torch.where(total > 0, torch.exp(-(p * p.log()).sum()), 1.0)
    return torch.where(finite, rank, torch.nan)


def effective_rank(features: Tensor, eps: float = 1e-7) -> float:
    """:func:`rank_of` as a Python float."""
    return float(rank_of(features, eps))


def health(features: Tensor) -> Health:
    """Effective rank, spread and mean pairwise cosine of N embeddings.

    Args:
        features: (N, D) embeddings, N >= 2.

    Returns:
        The health signals.

    Raises:
        ValueError: If fewer than 2 embeddings are given.
    """
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"health needs (N >= 2, D) embeddings, got {tuple(features.shape)}")
    x = features.double()
    unit = F.normalize(x, dim=-1)  # (N, D)
    n = unit.shape[0]
    sums = unit.sum(dim=0)  # (D,)
    # mean over i != j of <u_i, u_j> = (|sum u|^2 - sum |u_i|^2) / (N (N - 1))
    cosine = (sums @ sums - (unit * unit).sum()) / (n * (n - 1))
    return Health(
        rank=effective_rank(x),
        std=float(unit.std(dim=0).mean()),
        mean_cosine=float(cosine),
    )
