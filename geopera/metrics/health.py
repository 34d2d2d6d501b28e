"""Label-free health of an embedding: effective rank, spread and mean similarity.

A collapsed representation maps every image to (nearly) the same vector, or spreads the images
over a few directions only (dimensional collapse). Neither shows in a falling loss; both show
here, without labels.
"""

import math
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


def effective_rank(features: Tensor, eps: float = 1e-7) -> float:
    """RankMe (Garrido et al., 2023) of an embedding matrix.

    Args:
        features: (N, D) embeddings.
        eps: Added to the normalised singular values before the logarithm.

    Returns:
        The effective rank, 1 <= rank <= min(N, D) (1.0 for a single or all-zero embedding;
        NaN when the embeddings hold non-finite values: a skipped step's health).
    """
    if not bool(torch.isfinite(features).all()):
        return float("nan")
    singular = torch.linalg.svdvals(features.double())  # (min(N, D),)
    total = singular.sum()
    if singular.numel() == 0 or total <= 0:
        return 1.0
    p = singular / total + eps
    return float(math.exp(-(p * p.log()).sum()))


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
