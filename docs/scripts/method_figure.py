"""Make docs/img/pera-views.png: a real sample-archive patch, its two views and three masks.

Run after ``geopera data sample``: ``.venv/bin/python docs/scripts/method_figure.py``.
"""

from pathlib import Path

import torch

from geopera.data.sampling.datamodule import PretrainDataModule
from geopera.transforms.masking import DisjointMasking
from geopera.transforms.normalise import scale_unit
from geopera.transforms.views import AlignedViews, ViewsConfig
from geopera.viz.previews import plot_views_and_masks

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    """Sample one patch from the sample archive's ROI and draw it."""
    sample = REPO / "datasets" / "sample"
    dm = PretrainDataModule(
        [sample], sample / "area.geojson", bands=["B4", "B3", "B2"], patch_size=256,
        batch_size=1, samples_per_epoch=4, num_workers=0, seed=7,
    )  # fmt: skip
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    name = dm.sources[0].source.name
    norm = dm.normalisation()  # one source
    unit = scale_unit(batch["image"], torch.tensor(norm.p2[0]), torch.tensor(norm.p98[0]))
    mean, std = torch.tensor(norm.mean), torch.tensor(norm.std)
    views = AlignedViews(ViewsConfig(n_local=0), mean, std, rgb=[0, 1, 2])
    pairs = views(unit, seed=3)
    masks = DisjointMasking()(pairs.student_global.shape[0], (224 // 16) ** 2, True)
    out = plot_views_and_masks(
        batch["image"][0], pairs.student_global[0], pairs.teacher_global[0], masks, 16,
        REPO / "docs" / "img" / "pera-views.png",
        title=f"Landsat 8 ({name}, B4 B3 B2) from the sample archive: one PerA crop pair",
    )  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
