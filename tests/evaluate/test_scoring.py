"""The numbers beside the scores: headline choice, the chance baseline, the majority baseline."""

import numpy as np
import pytest
import torch

from geopera.data.labelled.sets import LabelledSet
from geopera.evaluate.scoring import chance_rows, headline_of, majority_outcomes
from geopera.metrics.scores import macro_f1


def _labelled(labels: list[int], classes: int = 3) -> LabelledSet:
    n = len(labels)
    return LabelledSet(
        images=torch.zeros(n, 1, 4, 4),
        labels=torch.tensor(labels),
        classes=[f"c{i}" for i in range(classes)],
        groups=[str(i) for i in range(n)],
        band_names=["b1"],
        origin="by hand",
    )


def test_the_headline_is_balanced_accuracy_past_one_and_a_half() -> None:
    assert headline_of(_labelled([0] * 15 + [1] * 10 + [2] * 10)).classification == "accuracy"
    lopsided = headline_of(_labelled([0] * 16 + [1] * 10 + [2] * 10))
    assert lopsided.classification == "balanced_accuracy"
    assert lopsided.imbalance == pytest.approx(1.6)


def test_chance_is_what_uniform_guessing_scores_on_average() -> None:
    labels = [0] * 1200 + [1] * 600 + [2] * 200
    data = _labelled(labels)
    split = np.array(["test"] * len(labels))
    rows = {r.metric: r.value for r in chance_rows(data, [split], headline_of(data))}
    rng = np.random.default_rng(0)
    truth = np.array(labels)
    guessed = [macro_f1(truth, rng.integers(0, 3, truth.size)) for _ in range(200)]
    assert rows["macro_f1"] == pytest.approx(np.mean(guessed), abs=0.005)
    assert rows["balanced_accuracy"] == pytest.approx(1 / 3)


def test_the_majority_answers_the_commonest_fit_class() -> None:
    data = _labelled([0, 1, 1, 2, 0, 0])
    split = np.array(["train", "train", "val", "train", "test", "test"])  # fit: 0, 1, 1, 2
    (outcome,) = majority_outcomes("image", data, [split])
    assert outcome.predicted.tolist() == [1, 1]
    assert outcome.truth.tolist() == [0, 0]
