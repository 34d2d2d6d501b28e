"""Scores of ``geopera evaluate``: rows with intervals, baselines, per-class detail, differences.

Every number a reader sees first sits next to what a trivial predictor scores on the same test
samples: ``majority`` (always the most frequent class of the fit images, or pixels) and, for the
balanced metrics, ``chance`` (the expected score of a uniform random guess). The headline metric
fits the data: balanced accuracy when the largest class has more than
:data:`IMBALANCE` times the images of the smallest (plain accuracy then flatters a backbone
that always answers the large class), else accuracy; mIoU for dense rows. Two backbones are
compared on the same test samples with a paired bootstrap (:func:`paired_interval`).
"""

import itertools
import warnings
from dataclasses import dataclass, field

import numpy as np

from geopera.data.labelled.sets import LabelledSet
from geopera.evaluate.protocols import Outcome
from geopera.metrics.scores import (
    Score,
    accuracy,
    balanced_accuracy,
    bootstrap_interval,
    confusion,
    macro_f1,
    mean_iou,
    paired_interval,
    per_class_iou,
)

#: Largest / smallest class size above which the classes count as imbalanced.
IMBALANCE = 1.5
#: Names of the baseline rows (``weights`` column).
BASELINES = ("majority", "chance")


@dataclass(frozen=True)
class Headline:
    """The metric a reader should look at first.

    Attributes:
        classification: ``balanced_accuracy`` (imbalanced classes) or ``accuracy``.
        imbalance: Images of the largest class / of the smallest present one.
        dense: The dense rows' metric.
    """

    classification: str
    imbalance: float
    dense: str = "mIoU"

    def of(self, row: str) -> str:
        """The headline metric of a protocol row."""
        return self.dense if row == "dense" else self.classification


def headline_of(data: LabelledSet) -> Headline:
    """Balanced accuracy when the classes are imbalanced, else accuracy."""
    counts = np.bincount(data.labels.numpy(), minlength=len(data.classes))
    present = counts[counts > 0]
    ratio = float(present.max() / present.min()) if present.size else 1.0
    return Headline("balanced_accuracy" if ratio > IMBALANCE else "accuracy", ratio)


def metrics_of(row: str, n_classes: int, headline: Headline) -> dict[str, Score]:
    """A row's metrics, the headline first (dense: mIoU; classification: three)."""
    if row == "dense":
        return {"mIoU": lambda t, p: mean_iou(confusion(t.ravel(), p.ravel(), n_classes))}
    every: dict[str, Score] = {
        "balanced_accuracy": balanced_accuracy,
        "macro_f1": macro_f1,
        "accuracy": accuracy,
    }
    first = headline.classification
    return {first: every[first]} | {k: v for k, v in every.items() if k != first}


@dataclass
class ScoredRow:
    """One metric of one protocol row of one backbone (or baseline), over every seed.

    Attributes:
        weights: The backbone, or ``majority``/``chance``.
        protocol: ``knn20``, ``knn5``, ``linear``, ``dense``; baselines: ``image`` or ``pixel``.
        metric: The metric's name.
        value: Mean over seeds.
        ci_low: Lower end of the 95 % bootstrap interval over test samples.
        ci_high: Upper end.
        n_train: Mean fit samples.
        n_test: Mean test samples.
        band_rule: How the data's bands fed the backbone ("" for baselines).
        headline: Whether this is the row's headline metric.
        per_seed: The value of every seed.
    """

    weights: str
    protocol: str
    metric: str
    value: float
    ci_low: float
    ci_high: float
    n_train: int
    n_test: int
    band_rule: str
    headline: bool
    per_seed: list[float] = field(default_factory=list)


@dataclass
class ClassDetail:
    """Per-class results of one protocol row of one backbone (JSON only).

    Attributes:
        weights: The backbone.
        protocol: The protocol row.
        recall: (K,) recall of every class, mean over seeds (NaN: absent from every test split).
        confusion: (K, K) counts summed over seeds, rows = truth.
        iou: (K,) IoU per class for dense rows, else None.
    """

    weights: str
    protocol: str
    recall: list[float]
    confusion: list[list[int]]
    iou: list[float] | None = None


@dataclass
class Difference:
    """Backbone A minus backbone B on one protocol row's headline metric, paired.

    Attributes:
        a: The first backbone.
        b: The second backbone.
        protocol: The protocol row.
        metric: The headline metric.
        difference: Mean over seeds of A's score minus B's.
        ci_low: Lower end of the paired 95 % bootstrap interval.
        ci_high: Upper end.
    """

    a: str
    b: str
    protocol: str
    metric: str
    difference: float
    ci_low: float
    ci_high: float

    def sentence(self) -> str:
        """``A is above B on P by X [lo, hi]``, or that the difference is inside the interval."""
        span = f"{self.difference:+.3f} [{self.ci_low:+.3f}, {self.ci_high:+.3f}]"
        if self.ci_low > 0:
            return f"{self.a} is above {self.b} on {self.protocol} ({self.metric}) by {span}."
        if self.ci_high < 0:
            return f"{self.a} is below {self.b} on {self.protocol} ({self.metric}) by {span}."
        return (
            f"{self.a} and {self.b} on {self.protocol} ({self.metric}): the difference "
            f"{span} is inside the interval."
        )


def score_rows(
    weights: str,
    row: str,
    outcomes: list[Outcome],
    metrics: dict[str, Score],
    band_rule: str = "",
) -> list[ScoredRow]:
    """Every metric of one row over the seeds' outcomes, each with its interval."""
    pairs = [(o.truth, o.predicted) for o in outcomes]
    scored = []
    for n, (metric, score) in enumerate(metrics.items()):
        value, low, high = bootstrap_interval(pairs, score)
        scored.append(
            ScoredRow(
                weights, row, metric, value, low, high,
                int(np.mean([o.n_train for o in outcomes])),
                int(np.mean([o.n_test for o in outcomes])),
                band_rule, n == 0, [float(score(t, p)) for t, p in pairs],
            )
        )  # fmt: skip
    return scored


def class_detail(weights: str, row: str, outcomes: list[Outcome], n_classes: int) -> ClassDetail:
    """Per-class recall and the confusion matrix (and IoU for dense rows) of one row."""
    matrices = [confusion(o.truth.ravel(), o.predicted.ravel(), n_classes) for o in outcomes]
    total = np.sum(matrices, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a class absent from every test split
        recalls = [np.diag(m) / m.sum(1) for m in matrices]  # NaN where a class is absent
        recall = [float(v) for v in np.nanmean(np.where(np.isfinite(recalls), recalls, np.nan), 0)]
    iou = per_class_iou(total) if row == "dense" else None
    return ClassDetail(weights, row, recall, total.tolist(), iou)


def majority_outcomes(row: str, data: LabelledSet, splits: list[np.ndarray]) -> list[Outcome]:
    """Always the most frequent class of each split's fit images (dense: fit pixels)."""
    outcomes = []
    for split in splits:
        fit, test = split != "test", split == "test"
        if row == "dense":
            if data.masks is None:
                raise ValueError("the dense protocol needs per-pixel labels")
            pixels = data.masks[fit].numpy().ravel()
            common = int(np.bincount(pixels[pixels >= 0]).argmax())
            truth = data.masks[test].numpy()
        else:
            common = int(np.bincount(data.labels[fit].numpy()).argmax())
            truth = data.labels[test].numpy()
        guess = np.full_like(truth, common)
        outcomes.append(Outcome(truth, guess, int(fit.sum()), int(test.sum())))
    return outcomes


def chance_rows(data: LabelledSet, splits: list[np.ndarray], headline: Headline) -> list[ScoredRow]:
    """Expected scores of a uniform random guess among the K classes (exact: no interval).

    A uniform guess is right 1/K of the time on every class (accuracy and balanced accuracy
    1/K); its precision on class c is c's share p_c of the test images, so its F1 on c is
    2 p_c / K / (p_c + 1 / K).
    """
    k = len(data.classes)
    f1s = []
    for split in splits:
        truth = data.labels[split == "test"].numpy()
        shares = np.bincount(truth, minlength=k)[np.unique(truth)] / max(1, truth.size)
        f1s.append(float(np.mean(2 * shares / k / (shares + 1 / k))))
    n_test = int(np.mean([(s == "test").sum() for s in splits]))
    exact = {"balanced_accuracy": [1 / k] * len(splits), "macro_f1": f1s}
    exact["accuracy"] = exact["balanced_accuracy"]
    return [
        ScoredRow("chance", "image", m, float(np.mean(exact[m])), float(np.mean(exact[m])),
                  float(np.mean(exact[m])), 0, n_test, "", m == headline.classification, exact[m])
        for m in metrics_of("image", k, headline)
    ]  # fmt: skip


def differences(
    outcomes: dict[tuple[str, str], list[Outcome]],
    rows: list[str],
    headline: Headline,
    n_classes: int,
) -> list[Difference]:
    """Every pair of backbones (in the order given) on every row's headline metric, paired."""
    names = list(dict.fromkeys(w for w, _ in outcomes))
    found = []
    for a, b in itertools.combinations(names, 2):
        for row in rows:
            metric = headline.of(row)
            score = metrics_of(row, n_classes, headline)[metric]
            runs = [
                (x.truth, x.predicted, y.predicted)
                for x, y in zip(outcomes[a, row], outcomes[b, row], strict=True)
            ]
            value, low, high = paired_interval(runs, score)
            found.append(Difference(a, b, row, metric, value, low, high))
    return found
