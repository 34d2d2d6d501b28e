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


def macro_f1(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Mean F1 over the classes present in ``truth`` (a class never predicted scores 0)."""
    classes = np.unique(truth)
    if classes.size == 0:
        return float("nan")
    f1 = []
    for c in classes:
        hit = float(((predicted == c) & (truth == c)).sum())
        guessed, actual = float((predicted == c).sum()), float((truth == c).sum())
        f1.append(2 * hit / (guessed + actual))  # actual > 0: c is in truth
    return float(np.mean(f1))


def per_class_recall(truth: np.ndarray, predicted: np.ndarray, n_classes: int) -> list[float]:
    """Recall of every class (NaN for a class absent from ``truth``)."""
    return [
        float((predicted[truth == c] == c).mean()) if (truth == c).any() else float("nan")
        for c in range(n_classes)
    ]


def per_class_iou(matrix: np.ndarray) -> list[float]:
    """IoU of every class of a (K, K) confusion matrix (NaN where a class is nowhere)."""
    tp = np.diag(matrix).astype(np.float64)
    union = matrix.sum(0) + matrix.sum(1) - tp
    return [float(t / u) if u > 0 else float("nan") for t, u in zip(tp, union, strict=True)]


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
    replicates = _replicates([(t, p, None) for t, p in runs], score, n_boot, seed)
    return (value, *_percentiles(replicates, level))


def paired_interval(
    runs: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    score: Score,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Score of A minus score of B on the same test samples, with a paired-bootstrap interval.

    Every replicate draws one resample of a seed's test samples and scores both predictions
    on it, so what the two backbones have in common (which samples are hard) cancels out.

    Args:
        runs: One ``(truth, predicted_a, predicted_b)`` triple per seed.
        score: The score of one (truth, predicted) pair.
        n_boot: Bootstrap replicates.
        level: Interval coverage.
        seed: Seed of the resampling.

    Returns:
        ``(difference, low, high)``; "A above B" when ``low > 0``.
    """
    value = float(np.mean([score(t, a) - score(t, b) for t, a, b in runs]))
    replicates = _replicates(runs, score, n_boot, seed)
    return (value, *_percentiles(replicates, level))


def _replicates(
    runs: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray | None]],
    score: Score,
    n_boot: int,
    seed: int,
) -> np.ndarray:
    """(n_boot,) mean over seeds of the score (or of A - B, when a third array is given)."""
    rng = np.random.default_rng(seed)
    replicates = np.empty(n_boot)
    for b in range(n_boot):
        scores = []
        for truth, first, second in runs:
            pick = rng.integers(0, len(truth), len(truth))
            value = score(truth[pick], first[pick])
            if second is not None:
                value -= score(truth[pick], second[pick])
            scores.append(value)
        replicates[b] = np.nanmean(scores)
    return replicates


def _percentiles(replicates: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(replicates, [tail, 100 - tail])
    return float(low), float(high)
