"""Classification and segmentation scores, and percentile-bootstrap intervals over test samples."""

from collections.abc import Callable, Sequence

import numpy as np


def accuracy(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Share of correct predictions of (N,) labels."""
    return float((truth == predicted).mean()) if truth.size else float("nan")


def balanced_accuracy(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Mean per-class recall over the classes present in ``truth`` (chance: 1 / classes)."""
    classes = np.unique(truth)
    if classes.size == 0:
        return float("nan")
    return float(np.mean([(predicted[truth == c] == c).mean() for c in classes]))


def confusion(truth: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """(K, K) counts, rows = truth; entries with truth < 0 (unlabelled) are left out."""
    keep = truth >= 0
    index = truth[keep].astype(np.int64) * n_classes + predicted[keep].astype(np.int64)
    return np.bincount(index, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def mean_iou(matrix: np.ndarray) -> float:
    """Mean intersection over union of the classes present in truth or prediction."""
    tp = np.diag(matrix).astype(np.float64)
    union = matrix.sum(0) + matrix.sum(1) - tp
    present = union > 0
    return float((tp[present] / union[present]).mean()) if present.any() else float("nan")


#: A score of one seed's test predictions: (truth, predicted) -> value.
Score = Callable[[np.ndarray, np.ndarray], float]


def bootstrap_interval(
    runs: Sequence[tuple[np.ndarray, np.ndarray]],
    score: Score,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """The mean score over seeds, with a percentile-bootstrap interval.

    Each bootstrap replicate resamples every seed's test samples with replacement (the first
    axis of ``truth``/``predicted``: images, or whole chips for dense scores) and averages the
    seeds' scores, so the interval covers the test-set sampling of every split.

    Args:
        runs: One ``(truth, predicted)`` pair per seed, samples along the first axis.
        score: The score of one pair.
        n_boot: Bootstrap replicates.
        level: Interval coverage.
        seed: Seed of the resampling.

    Returns:
        ``(value, low, high)``.
    """
    value = float(np.mean([score(t, p) for t, p in runs]))
    rng = np.random.default_rng(seed)
    replicates = np.empty(n_boot)
    for b in range(n_boot):
        scores = []
        for truth, predicted in runs:
            pick = rng.integers(0, len(truth), len(truth))
            scores.append(score(truth[pick], predicted[pick]))
        replicates[b] = np.nanmean(scores)
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(replicates, [tail, 100 - tail])
    return value, float(low), float(high)
