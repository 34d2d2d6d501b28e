"""One probe protocol on one split: test truths and predictions (scores come later)."""

from dataclasses import dataclass

import numpy as np
import torch

from geopera.data.labelled.sets import LabelledSet
from geopera.evaluate.features import Features
from geopera.metrics.probes import KNN_TEMPERATURE, dense_probe, knn_predict, linear_probe

#: Command-line protocol -> the rows it reports.
PROTOCOLS = {"knn": ("knn20", "knn5"), "linear": ("linear",), "dense": ("dense",)}


@dataclass(frozen=True)
class Outcome:
    """Test truths and predictions of one row on one split.

    Attributes:
        truth: (M,) class indices, or (M, S, S) masks for dense rows.
        predicted: Same shape.
        n_train: Training samples (train + val: kNN neighbours, refitted probes).
        n_test: Test samples.
    """

    truth: np.ndarray
    predicted: np.ndarray
    n_train: int
    n_test: int


def run_row(
    row: str, features: Features, data: LabelledSet, split: np.ndarray, seed: int
) -> Outcome:
    """Fit one probe on the train/val images and predict the test images.

    Args:
        row: ``knn20``, ``knn5``, ``linear`` or ``dense``.
        features: The backbone's features of every image.
        data: The labelled set.
        split: (N,) split name of every image.
        seed: Probe seed.

    Returns:
        The outcome.

    Raises:
        ValueError: If the row is unknown, or dense without per-pixel labels.
    """
    k = len(data.classes)
    tr, va, te = (torch.from_numpy(split == s) for s in ("train", "val", "test"))
    fit = tr | va  # kNN has nothing to tune: validation images join the neighbours
    n_fit, n_test = int(fit.sum()), int(te.sum())
    y, pooled = data.labels, features.pooled
    if row in ("knn20", "knn5"):
        weighted = row == "knn20"  # DINO's vote: k = 20, weights exp(cos / 0.07)
        guess = knn_predict(
            pooled[fit],
            y[fit],
            pooled[te],
            k,
            20 if weighted else 5,
            KNN_TEMPERATURE if weighted else None,
        )
        return Outcome(y[te].numpy(), guess.numpy(), n_fit, n_test)
    if row == "linear":
        out = linear_probe(pooled[tr], y[tr], pooled[va], y[va], pooled[te], k, seed=seed)
        return Outcome(y[te].numpy(), out.predicted, n_fit, n_test)
    if row == "dense":
        if features.tokens is None or data.masks is None:
            raise ValueError("the dense protocol needs per-pixel labels: rasters with --labels")
        t, m = features.tokens, data.masks
        size = (int(m.shape[-2]), int(m.shape[-1]))
        out = dense_probe(t[tr], m[tr], t[va], m[va], t[te], k, size, seed=seed)
        return Outcome(m[te].numpy(), out.predicted, n_fit, n_test)
    raise ValueError(f"unknown protocol row {row!r}")
