"""Probes, scores, intervals and health signals, checked against cases solved by hand."""

import math

import numpy as np
import pytest
import torch

from geopera.metrics.health import effective_rank, health
from geopera.metrics.probes import dense_probe, knn_predict, linear_probe
from geopera.metrics.scores import (
    accuracy,
    balanced_accuracy,
    bootstrap_interval,
    confusion,
    macro_f1,
    mean_iou,
    paired_interval,
    per_class_iou,
    per_class_recall,
)


def test_effective_rank_counts_directions() -> None:
    assert effective_rank(torch.eye(8)) == pytest.approx(8.0, rel=1e-4)  # 8 equal directions
    rank_one = torch.randn(50, 1) @ torch.randn(1, 16)
    assert effective_rank(rank_one) == pytest.approx(1.0, abs=1e-3)
    two = torch.zeros(10, 4)
    two[:5, 0], two[5:, 1] = 1.0, 1.0  # two equal directions
    assert effective_rank(two) == pytest.approx(2.0, rel=1e-4)
    two[0, 0] = float("nan")  # a non-finite step's features: no rank, no crash
    assert math.isnan(effective_rank(two))


def test_health_tells_collapse_from_spread() -> None:
    same = torch.ones(20, 8)
    h = health(same)
    assert h.mean_cosine == pytest.approx(1.0)
    assert h.std == pytest.approx(0.0, abs=1e-9)
    assert h.rank == pytest.approx(1.0, abs=1e-3)
    orthogonal = health(torch.eye(8))
    assert orthogonal.mean_cosine == pytest.approx(0.0, abs=1e-12)
    # std of one-hot columns over 8 rows: sqrt(1/8 * 7/8 * 8/7), by hand
    assert orthogonal.std == pytest.approx(math.sqrt(1 / 8), rel=1e-6)
    with pytest.raises(ValueError, match="N >= 2"):
        health(torch.ones(1, 4))


def test_knn_majority_weighted_and_leave_one_out() -> None:
    train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.2, 1.0]])
    labels = torch.tensor([0, 0, 1, 1, 1])
    test = torch.tensor([[1.0, 0.05], [0.05, 1.0]])
    assert knn_predict(train, labels, test, 2, k=2, temperature=None).tolist() == [0, 1]
    # k = 5 majority votes class 1 everywhere; the weighted vote lets near neighbours win
    assert knn_predict(train, labels, test, 2, k=5, temperature=None).tolist() == [1, 1]
    assert knn_predict(train, labels, test, 2, k=5, temperature=0.07).tolist() == [0, 1]
    # leave-one-out: a sample is never its own neighbour
    lonely = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.1, 1.0]])
    loo = knn_predict(lonely, torch.tensor([0, 1, 1]), lonely, 2, k=1, exclude_self=True)
    assert loo.tolist() == [1, 1, 1]


def _blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    centres = torch.tensor([[4.0, 0, 0, 0], [0, 4.0, 0, 0], [0, 0, 4.0, 0]])
    return centres[labels] + torch.randn(n, 4, generator=g), labels


def test_linear_probe_separates_blobs_and_reports_its_choice() -> None:
    xt, yt = _blobs(60, 0)
    xv, yv = _blobs(30, 1)
    xs, ys = _blobs(30, 2)
    fit = linear_probe(xt, yt, xv, yv, xs, 3, steps=100)
    assert accuracy(ys.numpy(), fit.predicted) > 0.95
    assert fit.val_score > 0.95
    assert fit.weight_decay in (0.0, 1e-4, 1e-2)
    assert fit.lr in (1e-3, 1e-2)


def test_dense_probe_reads_a_class_channel() -> None:
    g = torch.Generator().manual_seed(0)
    masks = torch.randint(0, 2, (12, 4, 4), generator=g)  # class per token
    tokens = torch.randn(12, 6, 4, 4, generator=g) * 0.1
    tokens[:, 0] += masks.float() * 3  # channel 0 says the class
    labels = masks.repeat_interleave(2, 1).repeat_interleave(2, 2)  # (12, 8, 8): 2 px tokens
    fit = dense_probe(tokens[:6], labels[:6], tokens[6:9], labels[6:9], tokens[9:], 2, (8, 8))
    assert fit.predicted.shape == (3, 8, 8)
    assert mean_iou(confusion(labels[9:].numpy(), fit.predicted, 2)) > 0.6


def test_scores_by_hand() -> None:
    truth = np.array([0, 0, 0, 0, 1])
    guess = np.array([0, 0, 0, 0, 0])
    assert accuracy(truth, guess) == 0.8
    assert balanced_accuracy(truth, guess) == 0.5  # recall 1 and 0
    matrix = confusion(np.array([0, 1, 1, -1]), np.array([0, 1, 0, 1]), 2)
    assert matrix.tolist() == [[1, 0], [1, 1]]
    assert mean_iou(matrix) == pytest.approx((1 / 2 + 1 / 2) / 2)


def test_bootstrap_interval_brackets_the_value() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 200)
    guess = np.where(rng.random(200) < 0.8, truth, 1 - truth)  # about 80 % right
    value, low, high = bootstrap_interval([(truth, guess)], accuracy, n_boot=500)
    assert value == accuracy(truth, guess)
    assert low < value < high
    # binomial standard error sqrt(p(1-p)/n) ~ 0.028: a 95 % interval about 0.11 wide
    assert 0.06 < high - low < 0.17
    perfect = bootstrap_interval([(truth, truth), (truth, truth)], accuracy, n_boot=50)
    assert perfect == (1.0, 1.0, 1.0)


def test_macro_f1_recall_and_iou_per_class_by_hand() -> None:
    truth = np.array([0, 0, 0, 0, 1, 2])
    guess = np.array([0, 0, 0, 1, 1, 1])
    # class 0: P 3/3, R 3/4 -> 6/7; class 1: P 1/3, R 1 -> 1/2; class 2: never right -> 0
    assert macro_f1(truth, guess) == pytest.approx((6 / 7 + 1 / 2 + 0) / 3)
    recall = per_class_recall(truth, guess, 4)
    assert recall[:3] == [0.75, 1.0, 0.0]
    assert math.isnan(recall[3])  # absent from the truth
    iou = per_class_iou(confusion(truth, guess, 3))
    assert iou == pytest.approx([3 / 4, 1 / 3, 0.0])


def test_paired_interval_sees_a_small_steady_gain_that_separate_intervals_miss() -> None:
    """A is right wherever B is, plus on 3 % more samples: the paired interval excludes 0."""
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 2, 400)
    b = np.where(rng.random(400) < 0.7, truth, 1 - truth)
    a = b.copy()
    fixed = np.flatnonzero(b != truth)[:12]  # 12 of 400 samples: +0.03
    a[fixed] = truth[fixed]
    diff, low, high = paired_interval([(truth, a, b)], accuracy, n_boot=500)
    assert diff == pytest.approx(0.03)
    assert 0 < low <= diff <= high
    _, a_low, _ = bootstrap_interval([(truth, a)], accuracy, n_boot=500)
    _, _, b_high = bootstrap_interval([(truth, b)], accuracy, n_boot=500)
    assert a_low < b_high  # alone, the two intervals overlap
    same = paired_interval([(truth, a, a)], accuracy, n_boot=50)
    assert same == (0.0, 0.0, 0.0)
