"""Helpers for the fault-injection suite: a two-tile archive, processes to kill, a small disk."""

import json
import os
import resource
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

from tests.pretrain.conftest import TINY, geopera_exe, run_cli

#: Origin of the two tiles (UTM 21S, like the fake Landsat archive).
ORIGIN = (700000.0, -2790000.0)
TILE = 512  # pixels: 1.5 MB per uint16 tile, more than the GDAL cache the runs get
#: The ROI: both tiles, side by side (30 m pixels).
ROI = (
    f"EPSG:32621;POLYGON(({ORIGIN[0]} {ORIGIN[1] - TILE * 30}, {ORIGIN[0] + 2 * TILE * 30} "
    f"{ORIGIN[1] - TILE * 30}, {ORIGIN[0] + 2 * TILE * 30} {ORIGIN[1]}, {ORIGIN[0]} {ORIGIN[1]}, "
    f"{ORIGIN[0]} {ORIGIN[1] - TILE * 30}))"
)
#: GDAL's block cache small enough that reads reach the files (MB).
ENV = {**os.environ, "GDAL_CACHEMAX": "1"}


def two_tile_archive(folder: Path, dtype: str = "uint16", nan_fraction: float = 0.0) -> Path:
    """Two adjacent 3-band tiles of one source, textured, tiled 64 x 64.

    Args:
        folder: Where to write (created).
        dtype: Pixel type.
        nan_fraction: Fraction of pixels set to NaN (float types; below the QC threshold).

    Returns:
        The folder.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:TILE, 0:TILE]
    for i, name in enumerate(("west", "east")):
        base = 5000 + 3000 * np.sin(xx / 17.0 + i) * np.cos(yy / 23.0)
        data = np.stack([base + rng.normal(0, 400, base.shape) for _ in range(3)])
        data = data.astype(dtype)
        if nan_fraction:
            data[:, rng.random((TILE, TILE)) < nan_fraction] = np.nan
        profile = {
            "driver": "GTiff",
            "width": TILE,
            "height": TILE,
            "count": 3,
            "dtype": dtype,
            "crs": "EPSG:32621",
            "transform": from_origin(ORIGIN[0] + i * TILE * 30, ORIGIN[1], 30, 30),
            "tiled": True,
            "blockxsize": 64,
            "blockysize": 64,
        }
        with rasterio.open(folder / f"LC08_tile_{name}.tif", "w", **profile) as dst:
            dst.write(data)
            dst.descriptions = ("B4", "B3", "B2")
    return folder


def pretrain_args(archive: Path, *extra: str) -> list[str]:
    """``geopera pretrain`` on a two-tile archive with the tiny test model."""
    return ["pretrain", "--archive", str(archive), "--roi", ROI, *TINY, *extra]


def start(*args: str, limit_bytes: int | None = None) -> subprocess.Popen[str]:
    """Start ``geopera ARGS`` (optionally under a file-size limit, which stands for a full disk).

    ``RLIMIT_FSIZE`` makes every write past the limit fail with EFBIG, as a full disk fails
    writes with ENOSPC; Python ignores SIGXFSZ, so the write raises.
    """

    def limit() -> None:
        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.Popen(
        [geopera_exe(), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        preexec_fn=limit,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str]:
    """Wait for a process; its exit code and stderr."""
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def wait_until(
    proc: subprocess.Popen[str], ready: Callable[[], bool], timeout: float = 240
) -> bool:
    """Poll until ``ready()`` (True) or the process ends (False)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if ready():
            return True
        time.sleep(0.05)
    return False


def metric_steps(run: Path) -> list[int]:
    """Steps logged in metrics.csv so far."""
    path = run / "metrics.csv"
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()[1:]
    return [int(line.split(",")[0]) for line in lines if line]


def status(run: Path) -> dict:
    """run.json."""
    return json.loads((run / "run.json").read_text())


def hidden(folder: Path) -> list[str]:
    """Hidden partial/scratch names left in a folder."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


__all__ = [
    "ROI",
    "TINY",
    "finish",
    "hidden",
    "metric_steps",
    "pretrain_args",
    "run_cli",
    "signal",
    "start",
    "status",
    "two_tile_archive",
    "wait_until",
]
