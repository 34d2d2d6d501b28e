import numpy as np
import pytest
import torch

from geopera.core.normalisation import BandStats, Normalisation
from geopera.transforms.normalise import scale_unit


def test_scale_unit_per_band_and_per_sample() -> None:
    image = torch.tensor(
        [[[[0.0, 50.0, 100.0, 200.0]], [[10.0, 20.0, 30.0, 40.0]]]]
    )  # (1, 2, 1, 4)
    out = scale_unit(image, torch.tensor([0.0, 10.0]), torch.tensor([100.0, 30.0]))
    assert out[0, 0, 0].tolist() == [0.0, 0.5, 1.0, 1.0]  # clamped above p98
    assert out[0, 1, 0].tolist() == [0.0, 0.5, 1.0, 1.0]
    per_sample = scale_unit(
        image.expand(2, -1, -1, -1), torch.zeros(2, 2), torch.full((2, 2), 200.0)
    )
    assert per_sample[1, 0, 0, 1] == pytest.approx(0.25)


def test_band_stats_of_pixels_equal_numpy() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.gamma(2.0, 100.0, size=(3, 5000))  # (C, N), skewed like reflectance
    stats = BandStats.of_pixels(pixels)
    for c in range(3):
        lo, hi = np.percentile(pixels[c], [2, 98])
        scaled = np.clip((pixels[c] - lo) / (hi - lo), 0, 1)
        assert stats.p2[c] == pytest.approx(lo)
        assert stats.p98[c] == pytest.approx(hi)
        assert stats.mean[c] == pytest.approx(scaled.mean())
        assert stats.std[c] == pytest.approx(scaled.std())
    assert BandStats.from_dict(stats.to_dict()) == stats
    with pytest.raises(ValueError, match="lack std"):
        BandStats.from_dict({"p2": [0], "p98": [1], "mean": [0]})


def test_normalisation_mixes_sources_by_weight() -> None:
    a = BandStats((0.0,), (100.0,), (0.5,), (0.1,))
    b = BandStats((200.0,), (400.0,), (0.5,), (0.2,))
    norm = Normalisation.mix({"a": a, "b": b}, weights=[3, 1])
    assert norm.sources == ("a", "b")
    assert norm.p2 == ((0.0,), (200.0,))
    assert norm.mean == pytest.approx((0.5,))
    assert norm.std == pytest.approx((0.75 * 0.1 + 0.25 * 0.2,))
    # raw units: p2 + mean * span per source, weighted
    assert norm.raw_mean == pytest.approx((0.75 * 50.0 + 0.25 * 300.0,))
    assert norm.raw_std == pytest.approx((0.75 * 0.125 * 100.0 + 0.25 * 0.125 * 200.0,))
