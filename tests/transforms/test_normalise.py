import pytest
import torch

from geopera.transforms.normalise import scale_unit, scaled_moments


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


def test_scaled_moments_follow_the_affine_map() -> None:
    stats = {
        "sources": {
            "a": {"mean": [50.0], "std": [10.0], "p2": [0.0], "p98": [100.0]},
            "b": {"mean": [300.0], "std": [40.0], "p2": [200.0], "p98": [400.0]},
        }
    }
    mean, std = scaled_moments(stats, ["a", "b"], weights=[3, 1])
    assert mean.tolist() == pytest.approx([0.75 * 0.5 + 0.25 * 0.5])
    assert std.tolist() == pytest.approx([0.75 * 0.1 + 0.25 * 0.2])
