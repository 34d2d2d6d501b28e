"""Probes of frozen features: kNN (DINO's weighted vote and a plain majority), linear, dense.

All work on features already extracted; none touches a backbone. Training of the linear and
dense probes is full-batch and seeded, so a probe's score depends only on the features, the
split and the seed.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from geopera.metrics.scores import balanced_accuracy, confusion, mean_iou

#: DINO's temperature for the weighted kNN vote.
KNN_TEMPERATURE = 0.07
#: Weight decays and learning rates the linear probe chooses from (on validation).
WEIGHT_DECAYS = (0.0, 1e-4, 1e-2)
LEARNING_RATES = (1e-3, 1e-2)
#: The dense probe's smaller grid: each fit upsamples logits to every labelled pixel.
DENSE_WEIGHT_DECAYS = (0.0, 1e-2)
DENSE_LEARNING_RATES = (1e-2,)


def knn_predict(
    train: Tensor,
    train_labels: Tensor,
    test: Tensor,
    n_classes: int,
    k: int,
    temperature: float | None = KNN_TEMPERATURE,
    exclude_self: bool = False,
) -> Tensor:
    """k-nearest-neighbour predictions with cosine similarity.

    Args:
        train: (N, D) features of the labelled samples.
        train_labels: (N,) their class indices.
        test: (M, D) features to classify.
        n_classes: Number of classes K.
        k: Neighbours (capped at the number of candidates).
        temperature: Weighted vote ``exp(similarity / T)`` as in DINO; None: majority vote.
        exclude_self: Leave-one-out (``test`` is ``train``; a sample is not its own neighbour).

    Returns:
        (M,) predicted class indices.
    """
    a = F.normalize(train.float(), dim=-1)
    b = F.normalize(test.float(), dim=-1)
    similarity = b @ a.T  # (M, D) @ (D, N) -> (M, N)
    if exclude_self:
        similarity.fill_diagonal_(-2.0)
    k = max(1, min(k, a.shape[0] - int(exclude_self)))
    top, index = similarity.topk(k, dim=1)  # (M, k)
    weights = torch.ones_like(top) if temperature is None else (top / temperature).exp()
    one_hot = F.one_hot(train_labels.to(index.device)[index], n_classes).float()  # (M, k, K)
    votes = (one_hot * weights.unsqueeze(-1)).sum(dim=1)  # (M, k, K) -> (M, K)
    return votes.argmax(dim=1)


@dataclass(frozen=True)
class ProbeFit:
    """What a trained probe chose, and its test predictions.

    Attributes:
        predicted: Test predictions ((M,) class indices, or (M, H, W) for dense probes).
        weight_decay: Chosen weight decay.
        lr: Chosen learning rate.
        val_score: Validation score of the choice.
    """

    predicted: np.ndarray
    weight_decay: float
    lr: float
    val_score: float


def _choose(
    val_score: Callable[[float, float], float],
    weight_decays: Sequence[float],
    learning_rates: Sequence[float],
) -> tuple[float, float, float]:
    """The (validation score, weight decay, lr) of the best grid point (first on ties)."""
    grid = [(val_score(wd, lr), wd, lr) for wd in weight_decays for lr in learning_rates]
    return max(grid, key=lambda point: point[0])


def _standardise(train: Tensor, *others: Tensor) -> list[Tensor]:
    mean = train.mean(dim=0, keepdim=True)
    std = train.std(dim=0, keepdim=True).clamp_min(1e-6) if train.shape[0] > 1 else 1.0
    return [(t - mean) / std for t in (train, *others)]


def _fit_linear(
    x: Tensor, y: Tensor, n_classes: int, wd: float, lr: float, steps: int, seed: int
) -> torch.nn.Linear:
    torch.manual_seed(seed)
    layer = torch.nn.Linear(x.shape[1], n_classes)
    opt = torch.optim.AdamW(layer.parameters(), lr=lr, weight_decay=wd)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(layer(x), y).backward()
        opt.step()
    return layer


def linear_probe(
    train: Tensor,
    train_labels: Tensor,
    val: Tensor,
    val_labels: Tensor,
    test: Tensor,
    n_classes: int,
    seed: int = 0,
    steps: int = 300,
    weight_decays: Sequence[float] = WEIGHT_DECAYS,
    learning_rates: Sequence[float] = LEARNING_RATES,
) -> ProbeFit:
    """Multinomial logistic regression on standardised pooled features.

    Weight decay and learning rate are chosen by validation balanced accuracy; the chosen probe
    is then refitted on train + validation and predicts the test samples.

    Args:
        train: (N, D) training features.
        train_labels: (N,) class indices.
        val: (V, D) validation features.
        val_labels: (V,) class indices.
        test: (M, D) test features.
        n_classes: K.
        seed: Initialisation seed.
        steps: Full-batch AdamW steps.
        weight_decays: Candidates.
        learning_rates: Candidates.

    Returns:
        The fit, with (M,) test predictions.
    """
    with torch.enable_grad():
        xt, xv = _standardise(train.float(), val.float())

        def val_score(wd: float, lr: float) -> float:
            layer = _fit_linear(xt, train_labels, n_classes, wd, lr, steps, seed)
            with torch.no_grad():
                guess = layer(xv).argmax(dim=1)
            return balanced_accuracy(val_labels.numpy(), guess.numpy())

        score, wd, lr = _choose(val_score, weight_decays, learning_rates)
        both = torch.cat([train, val]).float()
        xb, xs = _standardise(both, test.float())
        layer = _fit_linear(
            xb, torch.cat([train_labels, val_labels]), n_classes, wd, lr, steps, seed
        )
        with torch.no_grad():
            predicted = layer(xs).argmax(dim=1).numpy()
    return ProbeFit(predicted, wd, lr, score)


def _fit_dense(
    tokens: Tensor, masks: Tensor, n_classes: int, wd: float, lr: float, steps: int, seed: int
) -> torch.nn.Conv2d:
    torch.manual_seed(seed)
    conv = torch.nn.Conv2d(tokens.shape[1], n_classes, kernel_size=1)
    opt = torch.optim.AdamW(conv.parameters(), lr=lr, weight_decay=wd)
    for _ in range(steps):
        opt.zero_grad()
        logits = _dense_logits(conv, tokens, masks.shape[-2:])  # (N, K, H, W)
        F.cross_entropy(logits, masks, ignore_index=-1).backward()
        opt.step()
    return conv


def _dense_logits(conv: torch.nn.Conv2d, tokens: Tensor, size: tuple[int, ...]) -> Tensor:
    logits = conv(tokens)  # (N, D, h, w) -> (N, K, h, w)
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)  # (N, K, H, W)


def dense_probe(
    train: Tensor,
    train_masks: Tensor,
    val: Tensor,
    val_masks: Tensor,
    test: Tensor,
    n_classes: int,
    size: tuple[int, int],
    seed: int = 0,
    steps: int = 100,
    weight_decays: Sequence[float] = DENSE_WEIGHT_DECAYS,
    learning_rates: Sequence[float] = DENSE_LEARNING_RATES,
) -> ProbeFit:
    """A 1x1 convolution on frozen patch tokens, upsampled bilinearly to the label grid.

    Args:
        train: (N, D, h, w) patch tokens.
        train_masks: (N, H, W) class indices, -1 unlabelled.
        val: (V, D, h, w) tokens.
        val_masks: (V, H, W) class indices.
        test: (M, D, h, w) tokens.
        n_classes: K.
        size: (H, W) of the label grid.
        seed: Initialisation seed.
        steps: Full-batch AdamW steps.
        weight_decays: Candidates.
        learning_rates: Candidates.

    Returns:
        The fit (validation mIoU), with (M, H, W) test predictions.
    """

    def standardise(*grids: Tensor) -> list[Tensor]:
        d = grids[0].shape[1]
        flat = grids[0].permute(0, 2, 3, 1).reshape(-1, d)  # (N, D, h, w) -> (N*h*w, D)
        mean = flat.mean(0).view(1, d, 1, 1)
        std = flat.std(0).clamp_min(1e-6).view(1, d, 1, 1)
        return [(g.float() - mean) / std for g in grids]

    with torch.enable_grad():
        tt, tv = standardise(train.float(), val.float())

        def val_score(wd: float, lr: float) -> float:
            conv = _fit_dense(tt, train_masks, n_classes, wd, lr, steps, seed)
            with torch.no_grad():
                guess = _dense_logits(conv, tv, size).argmax(dim=1)
            return mean_iou(confusion(val_masks.numpy(), guess.numpy(), n_classes))

        score, wd, lr = _choose(val_score, weight_decays, learning_rates)
        tb, ts = standardise(torch.cat([train, val]).float(), test.float())
        conv = _fit_dense(tb, torch.cat([train_masks, val_masks]), n_classes, wd, lr, steps, seed)
        with torch.no_grad():
            predicted = _dense_logits(conv, ts, size).argmax(dim=1).numpy()
    return ProbeFit(predicted, wd, lr, score)
