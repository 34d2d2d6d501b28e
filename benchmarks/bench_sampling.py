"""Patches per second inside an ROI: geopera's data module vs plain torchgeo vs raw rasterio.

Cases, each with 0 and 2 DataLoader workers, measured in one run (machines are noisy):

* ``geopera``: :class:`geopera.data.sampling.datamodule.PretrainDataModule` (quality control
  included);
* ``torchgeo``: a torchgeo ``RasterDataset`` (``Landsat8`` for the sample archive) with
  ``RandomPatchSampler(roi=...)`` and ``stack_samples``;
* ``raw``: random windowed ``rasterio`` reads of the same files inside the ROI (the I/O ceiling).

Archives: (a) the sample archive (``datasets/sample``, 256 px); (b) the Sentinel-2 scenes of
``../shared/data`` (13 bands, 64 px: the scenes are 100 x 101 px, so 256 px patches do not fit).

Usage: ``python -m benchmarks.bench_sampling [--patches N] [--json]``
"""

import argparse
import json
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import rasterio
import shapely
import torch
from rasterio.windows import Window
from torch.utils.data import DataLoader, Dataset
from torchgeo.datasets import Landsat8, RasterDataset, stack_samples
from torchgeo.samplers import RandomPatchSampler

from benchmarks.common.paths import REPO, shared_data_dir
from geopera.data.roi import load_roi
from geopera.data.sampling.datamodule import PretrainDataModule

SHARED = shared_data_dir()
BATCH = 8


class SentinelScenes(RasterDataset):
    """Plain torchgeo dataset of the Slovenia Sentinel-2 reference scenes."""

    filename_glob = "S2L1C_reference_scene*.tif"


class RawWindows(Dataset[torch.Tensor]):
    """Random windows inside the ROI bounds, read straight with rasterio (one file set each)."""

    def __init__(self, files: list[list[str]], roi_bounds: Any, size: int, n: int) -> None:
        self.files = files
        self.size = size
        self.n = n
        self.roi_bounds = roi_bounds
        self.handles: dict[str, Any] = {}

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        rng = np.random.default_rng(i)
        group = self.files[i % len(self.files)]
        first = self.handles.get(group[0]) or rasterio.open(group[0])
        self.handles[group[0]] = first
        left, bottom, right, top = self.roi_bounds
        col0, row0 = ~first.transform * (left, top)
        col1, row1 = ~first.transform * (right, bottom)
        col = int(rng.integers(max(col0, 0), max(min(col1, first.width) - self.size, col0 + 1)))
        row = int(rng.integers(max(row0, 0), max(min(row1, first.height) - self.size, row0 + 1)))
        window = Window(col, row, self.size, self.size)
        parts = []
        for path in group:
            handle = self.handles.get(path) or rasterio.open(path)
            self.handles[path] = handle
            parts.append(handle.read(window=window))
        return torch.from_numpy(np.concatenate(parts).astype(np.float32))


def _rate(loader: Iterable[Any], patches: int) -> float:
    """Patches per second over ``patches`` patches, after one warm-up batch."""
    iterator = iter(loader)
    next(iterator)
    start = time.perf_counter()
    seen = 0
    for batch in iterator:
        image = batch["image"] if isinstance(batch, dict) else batch
        seen += image.shape[0]
        if seen >= patches:
            break
    return seen / (time.perf_counter() - start)


def run_archive(
    name: str,
    archive: list[str],
    roi_spec: str,
    size: int,
    bands: list[str] | None,
    torchgeo_dataset: RasterDataset,
    raw_files: list[list[str]],
    patches: int,
    sources: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Measure the three readers with 0 and 2 workers on one archive."""
    roi = load_roi(roi_spec)
    rows = []
    for workers in (0, 2):
        n = patches + BATCH
        dm = PretrainDataModule(
            archive,
            roi_spec,
            bands=bands,
            sources=sources,
            patch_size=size,
            batch_size=BATCH,
            samples_per_epoch=n + BATCH,
            num_workers=workers,
            stats_patches=8,
        )
        dm.setup()
        geopera_rate = _rate(dm.train_dataloader(), patches)
        local_roi = roi.to_crs(torchgeo_dataset.crs)
        sampler = RandomPatchSampler(torchgeo_dataset, size=size, length=n + BATCH, roi=local_roi)
        tg_loader = DataLoader(
            torchgeo_dataset,
            batch_size=BATCH,
            sampler=sampler,
            num_workers=workers,
            collate_fn=stack_samples,
        )
        torchgeo_rate = _rate(tg_loader, patches)
        raw = RawWindows(raw_files, local_roi.bounds, size, n + BATCH)
        raw_rate = _rate(DataLoader(raw, batch_size=BATCH, num_workers=workers), patches)
        rows.append(
            {
                "archive": name,
                "patch_px": size,
                "workers": workers,
                "geopera": geopera_rate,
                "torchgeo": torchgeo_rate,
                "raw": raw_rate,
                "geopera_vs_torchgeo": geopera_rate / torchgeo_rate,
                "geopera_vs_raw": geopera_rate / raw_rate,
            }
        )
    return rows


def main() -> None:
    """Run both archives and print the table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=int, default=160)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows: list[dict[str, Any]] = []

    sample = REPO / "datasets" / "sample"
    if (sample / "MANIFEST.json").is_file():
        l8 = sorted((sample / "landsat8").glob("LC08_*_RT_B2.TIF"))
        rows += run_archive(
            "sample (Landsat 8, 3 bands)",
            [str(sample)],
            str(sample / "area.geojson"),
            256,
            ["B2", "B3", "B4"],
            Landsat8(paths=str(sample / "landsat8"), bands=["B2", "B3", "B4"]),
            [[str(p).replace("_B2.", f"_{b}.") for b in ("B2", "B3", "B4")] for p in l8],
            args.patches,
        )
    s2_dir = SHARED / "a_pretrain" / "sentinel2_eolearn_slovenia"
    if s2_dir.is_dir():
        scenes = sorted(s2_dir.glob("S2L1C_reference_scene*.tif"))
        with rasterio.open(scenes[0]) as src:
            footprint = shapely.box(*src.bounds)
        roi = "EPSG:32633;" + footprint.buffer(-20).wkt
        rows += run_archive(
            "shared Sentinel-2 (13 bands)",
            [str(s2_dir)],
            roi,
            64,
            None,
            SentinelScenes(paths=str(s2_dir)),
            [[str(p)] for p in scenes],
            args.patches,
            sources=["sentinel2_10m"],  # the folder also holds DEM, NDVI and cloud rasters
        )
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    header = (
        f"{'archive':30} {'px':>4} {'wrk':>3} {'geopera':>9} {'torchgeo':>9} {'raw':>9} "
        f"{'geo/tg':>7} {'geo/raw':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['archive']:30} {r['patch_px']:>4} {r['workers']:>3} {r['geopera']:>9.1f} "
            f"{r['torchgeo']:>9.1f} {r['raw']:>9.1f} {r['geopera_vs_torchgeo']:>7.2f} "
            f"{r['geopera_vs_raw']:>8.2f}"
        )
    print("(patches per second; ratios geopera/torchgeo and geopera/raw)")


if __name__ == "__main__":
    main()
