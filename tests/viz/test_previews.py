from pathlib import Path

import numpy as np
import torch
from PIL import Image

from geopera.transforms.masking import disjoint_masks
from geopera.viz.previews import mask_overlay, plot_views_and_masks


def test_mask_overlay_colours_each_set() -> None:
    masks = disjoint_masks(torch.rand(1, 16))
    overlay = mask_overlay(masks, 0, (4, 4)).reshape(16, 3)
    orange = (overlay == np.array([0.95, 0.55, 0.1])).all(axis=1)
    assert orange.sum() == 3
    assert set(np.flatnonzero(orange)) == set(masks.student[0].tolist())


def test_plot_writes_a_png(tmp_path: Path) -> None:
    masks = disjoint_masks(torch.rand(1, 16))
    path = plot_views_and_masks(
        torch.rand(5, 80, 80),
        torch.rand(5, 64, 64),
        torch.rand(5, 64, 64),
        masks,
        16,
        tmp_path / "sub" / "views.png",
        rgb=[2, 1, 0],
        title="test",
    )
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width > 3 * image.height
