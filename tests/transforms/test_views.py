import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geopera.transforms.crops import crop_grids, random_boxes
from geopera.transforms.views import (
    AlignedViews,
    ColourJitter,
    ViewsConfig,
)

SMALL = ViewsConfig(global_size=32, local_size=16, n_global=2, n_local=3)


def _views(channels: int, rgb: list[int] | None = None, **overrides: float) -> AlignedViews:
    config = ViewsConfig(**{**SMALL.__dict__, **overrides})
    return AlignedViews(config, mean=[0.0] * channels, std=[1.0] * channels, rgb=rgb)


@settings(max_examples=10, deadline=None)
@given(channels=st.integers(1, 7), seed=st.integers(0, 1000))
def test_shapes_any_band_count_and_seeded(channels: int, seed: int) -> None:
    views = _views(channels)
    x = torch.rand(3, channels, 48, 48)
    a, b = views(x, seed=seed), views(x, seed=seed)
    assert a.student_global.shape == a.teacher_global.shape == (6, channels, 32, 32)
    assert a.student_local.shape == a.teacher_local.shape == (9, channels, 16, 16)
    assert torch.equal(a.student_global, b.student_global)
    assert torch.equal(a.teacher_local, b.teacher_local)


def test_pair_views_cover_the_same_ground() -> None:
    # Without colour changes, student and teacher views of a pair are identical crops...
    views = _views(4, student_jitter_p=0.0, teacher_jitter_p=0.0, grayscale_p=0.0)
    x = torch.rand(2, 4, 64, 64)
    out = views(x, seed=0)
    assert torch.equal(out.student_global, out.teacher_global)
    assert torch.equal(out.student_local, out.teacher_local)
    # ...and different pairs are different crops.
    assert not torch.equal(out.student_global[:2], out.student_global[2:])


def test_colour_only_differences_and_global_rng_untouched() -> None:
    views = _views(3, rgb=[0, 1, 2], student_jitter_p=1.0, teacher_jitter_p=0.0)
    # a constant-per-band image: any crop of it is the same, so only colour can differ
    x = torch.ones(2, 3, 64, 64) * torch.tensor([0.2, 0.5, 0.8]).view(1, 3, 1, 1)
    state = torch.random.get_rng_state()
    out = views(x, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.allclose(out.teacher_global, x[:1, :, :32, :32].expand(4, -1, -1, -1))
    assert not torch.allclose(out.student_global, out.teacher_global)


def test_jitter_touches_only_declared_rgb_for_saturation_and_hue() -> None:
    jitter = ColourJitter(
        brightness=0, contrast=0, saturation=0.9, hue=0.4, p=1.0, grayscale_p=1.0, rgb=[2, 1, 0]
    )
    x = torch.rand(4, 5, 8, 8)
    out = jitter(x, torch.Generator().manual_seed(0))
    assert torch.equal(out[:, 3:], x[:, 3:])  # non-RGB bands untouched
    assert not torch.equal(out[:, :3], x[:, :3])
    no_rgb = ColourJitter(brightness=0, contrast=0, saturation=0.9, hue=0.4, p=1.0, grayscale_p=1.0)
    assert torch.equal(no_rgb(x), x)  # saturation, hue, grayscale need an RGB triplet


def test_brightness_acts_on_every_band() -> None:
    jitter = ColourJitter(brightness=0.4, contrast=0, saturation=0, hue=0, p=1.0)
    x = torch.full((64, 6, 4, 4), 0.5)
    out = jitter(x, torch.Generator().manual_seed(0))
    factor = out[:, :, 0, 0] / 0.5  # (N, C): one factor per sample, shared by its bands
    assert torch.allclose(factor, factor[:, :1].expand_as(factor))
    assert float(factor.min()) >= 0.6 - 1e-6
    assert float(factor.max()) <= 1.4 + 1e-6
    assert float(factor.std()) > 0.1


def test_bad_input_shape() -> None:
    with pytest.raises(ValueError, match=r"expected \(B, 3, H, W\)"):
        _views(3)(torch.rand(2, 4, 32, 32))
    with pytest.raises(ValueError, match="exactly 3"):
        ColourJitter(0.1, 0.1, 0.1, 0.1, 1.0, rgb=[0, 1])


def test_boxes_fit_the_image_and_follow_the_scale() -> None:
    g = torch.Generator().manual_seed(0)
    boxes = random_boxes(2000, 60, 80, (0.2, 0.5), (3 / 4, 4 / 3), torch.device("cpu"), g)
    x0, y0, w, h = boxes.unbind(1)
    assert bool((x0 >= 0).all())
    assert bool((y0 >= 0).all())
    assert bool((x0 + w <= 80).all())
    assert bool((y0 + h <= 60).all())
    share = (w * h / (60 * 80)).aminmax()
    assert float(share.min) >= 0.18  # rounding to whole pixels
    assert float(share.max) <= 0.52
    ratio = (w / h).aminmax()
    assert float(ratio.min) >= 0.7
    assert float(ratio.max) <= 1.4
    assert float(x0.std()) > 3  # positions vary
    assert float(y0.std()) > 3


def test_a_whole_image_box_reproduces_the_image_and_flips_mirror_it() -> None:
    x = torch.rand(2, 3, 8, 8)
    boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0]] * 2)
    flips = torch.tensor([[False, False], [True, True]])
    grid = crop_grids(boxes, flips, 8, 8, 8, count=1)
    out = torch.nn.functional.grid_sample(x, grid, align_corners=False)
    assert torch.allclose(out[0], x[0], atol=1e-6)
    assert torch.allclose(out[1], x[1].flip(-1).flip(-2), atol=1e-6)


def test_jitter_changes_an_exact_share_of_the_rows() -> None:
    jitter = ColourJitter(brightness=0.4, contrast=0, saturation=0, hue=0, p=0.25)
    x = torch.full((40, 2, 4, 4), 0.5)
    out = jitter(x, torch.Generator().manual_seed(1))
    changed = (out != x).flatten(1).any(1)
    assert int(changed.sum()) == 10
