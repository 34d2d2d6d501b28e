"""Held-out probes and helpers shared by the quality benchmarks (bench_quality, bench_recipe).

A probe is a labelled raster set that ``geopera evaluate --data --labels`` cuts into chips:

- ``chesapeake``: the four Chesapeake NAIP scenes (256 px at 1 m, 5 land-cover classes), red,
  green and blue written with the descriptions ``B4, B3, B2`` so that the band rule selects them
  by name; 32 px chips. Another sensor, continent and resolution than the sample archive.
- ``slovenia``: the five Sentinel-2 L1C dates of the eo-learn Slovenia scene (13 bands at 10 m)
  with its land-use raster; 16 px chips. Another sensor and continent than the sample archive;
  the continued-pretraining arm of bench_quality pretrains on these images (never on the labels).
  Its chips are mostly forest: kNN predicts the majority class (balanced accuracy 0.5) for
  every backbone measured so far, so only its linear probe tells backbones apart.
- ``neon-trees``: the NEON tile OSBS_029 (400 px of RGB at 0.1 m, Florida) with its 61 tree
  boxes of the DeepForest data drawn as a label raster (tree crown / ground); 32 px chips.
- ``neon-yell``: two NEON crops of Yellowstone (0.1 m RGB, 2299 x 2472 and 1249 x 1035 px) with
  their 853 DeepForest tree boxes, drawn the same way; 32 px chips (6715). The images come in
  the ``deepforest`` wheel on PyPI (MIT; NEON data CC0), which the first run fetches with
  ``pip download`` into the work folder. The crops' place inside their 1 km NEON tile is not
  recorded: they are georeferenced at the tile's corner (named in the file, UTM 12N), which only
  cuts the chips and the spatial blocks.
"""

import json
import os
import shutil
import subprocess
import sys
import time
import warnings
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MODEL = "vit_small_patch16_224"
SAMPLE = REPO / "datasets" / "sample"
#: The release whose wheel holds the Yellowstone crops of ``neon-yell``.
DEEPFOREST = "deepforest==2.1.0"
ROI = SAMPLE / "area.geojson"


@dataclass(frozen=True)
class Probe:
    """One labelled set for ``geopera evaluate``: images, labels, chip size."""

    name: str
    data: str
    labels: str
    chip_size: int


def shared_data() -> Path:
    """``../shared/data`` beside the checkout, or ``$GEOPERA_SHARED_DATA``."""
    env = os.environ.get("GEOPERA_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def geopera(*args: str) -> str:
    """Run the geopera CLI of this environment; its stdout, or exit with its stderr's tail."""
    exe = str(Path(sys.executable).with_name("geopera"))
    result = subprocess.run([exe, *args], cwd=REPO, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"geopera {' '.join(args)} failed:\n{result.stderr[-4000:]}")
    return result.stdout


def built(folder: Path, build: Callable[[Path], None]) -> Path:
    """``folder``, made once by ``build`` in a temporary folder renamed into place."""
    if not folder.is_dir():
        tmp = folder.with_name(f".{folder.name}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        build(tmp)
        tmp.rename(folder)
    return folder


def chesapeake(work: Path) -> Probe:
    """The Chesapeake NAIP scenes as RGB GeoTIFFs named like Landsat 8's bands, + labels."""
    import rasterio

    def build(tmp: Path) -> None:
        source = shared_data() / "b_segmentation" / "chesapeake_naip_geobench"
        for image in sorted(source.glob("*_naip_RGBN.tif")):
            key = image.name.removesuffix("_naip_RGBN.tif")
            with rasterio.open(image) as ds:
                rgb = ds.read([1, 2, 3])  # NAIP: red, green, blue, near infrared
                profile = ds.profile | {"count": 3}
            with rasterio.open(tmp / f"{key}_rgb.tif", "w", **profile) as dst:
                dst.write(rgb)
                dst.descriptions = ("B4", "B3", "B2")
            shutil.copy(source / f"{key}_landcover.tif", tmp / f"{key}_labels.tif")

    out = built(work / "chesapeake_scenes", build)
    return Probe("chesapeake", str(out / "*_rgb.tif"), str(out / "*_labels.tif"), 32)


def slovenia() -> Probe:
    """The Slovenia Sentinel-2 dates with their land use: the shared suite's ``slovenia-lulc``."""
    from geopera.evaluate.suites import SUITES

    found = next(s for s in SUITES["shared"] if s.name == "slovenia-lulc")
    labels = str(shared_data() / found.labels) if found.labels else ""
    return Probe("slovenia", str(shared_data() / found.data), labels, found.chip_size)


def neon_trees(work: Path) -> Probe:
    """The NEON tile OSBS_029 with its tree boxes as a label raster (1 ground, 2 tree crown)."""
    import csv

    import numpy as np
    import rasterio

    def build(tmp: Path) -> None:
        source = shared_data() / "d_detection" / "neon_trees_deepforest"
        with rasterio.open(source / "OSBS_029.tif") as ds:
            rgb, profile = ds.read(), ds.profile
        with rasterio.open(tmp / "OSBS_029_rgb.tif", "w", **profile) as dst:
            dst.write(rgb)
            dst.descriptions = ("red", "green", "blue")
        labels = np.ones(rgb.shape[1:], np.uint8)  # (400, 400): ground
        with open(source / "OSBS_029.csv", newline="") as fh:
            for box in csv.DictReader(fh):
                x0, y0, x1, y1 = (int(box[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
                labels[y0:y1, x0:x1] = 2  # tree crown
        mask = profile | {"count": 1, "dtype": "uint8", "nodata": 0}
        with rasterio.open(tmp / "OSBS_029_labels.tif", "w", **mask) as dst:
            dst.write(labels[None])

    out = built(work / "neon_trees", build)
    return Probe("neon-trees", str(out / "*_rgb.tif"), str(out / "*_labels.tif"), 32)


def _deepforest_wheel(work: Path) -> Path:
    """The ``deepforest`` wheel in ``work/wheels``, fetched from PyPI the first time."""
    folder = work / "wheels"
    found = sorted(folder.glob("deepforest-*.whl"))
    if not found:
        print(f"fetching {DEEPFOREST} from PyPI (the images of the neon-yell probe)", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", DEEPFOREST,
             "-d", str(folder)],
            check=True,
        )  # fmt: skip
        found = sorted(folder.glob("deepforest-*.whl"))
    return found[-1]


def neon_yell(work: Path) -> Probe:
    """Two NEON crops of Yellowstone with their tree boxes as label rasters (1 ground, 2 tree)."""
    import numpy as np
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.transform import from_origin

    def build(tmp: Path) -> None:
        with zipfile.ZipFile(_deepforest_wheel(work)) as wheel:
            names = [n for n in wheel.namelist() if "/data/2019_YELL_" in n]
            wheel.extractall(tmp / "wheel", names)
        for png in sorted((tmp / "wheel").rglob("2019_YELL_*.png")):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)  # a PNG
                with rasterio.open(png) as ds:
                    rgb = ds.read()  # (3, H, W)
            east, north = (int(v) for v in png.stem.split("_")[3:5])  # the tile's SW corner
            height, width = rgb.shape[1:]
            profile = {"driver": "GTiff", "width": width, "height": height, "crs": "EPSG:32612",
                       "transform": from_origin(east, north + height * 0.1, 0.1, 0.1)}  # fmt: skip
            with rasterio.open(tmp / f"{png.stem}_rgb.tif", "w", count=3, dtype="uint8",
                               **profile) as dst:  # fmt: skip
                dst.write(rgb)
                dst.descriptions = ("red", "green", "blue")
            labels = np.ones((height, width), np.uint8)  # ground
            for box in ET.parse(png.with_suffix(".xml")).getroot().iter("bndbox"):
                x0, y0, x1, y1 = (int(float(box.findtext(k, "0"))) for k in
                                  ("xmin", "ymin", "xmax", "ymax"))  # fmt: skip
                labels[y0:y1, x0:x1] = 2  # tree crown
            with rasterio.open(tmp / f"{png.stem}_labels.tif", "w", count=1, dtype="uint8",
                               nodata=0, **profile) as dst:  # fmt: skip
                dst.write(labels[None])
        shutil.rmtree(tmp / "wheel")

    out = built(work / "neon_yell", build)
    return Probe("neon-yell", str(out / "*_rgb.tif"), str(out / "*_labels.tif"), 32)


def held_out_probes(work: Path) -> list[Probe]:
    """Every probe the sample archive's pretraining never saw."""
    return [chesapeake(work), neon_trees(work), neon_yell(work), slovenia()]


def evaluate(
    probe: Probe, weights: list[str], work: Path, protocols: list[str], seeds: int
) -> dict[str, Any]:
    """``geopera evaluate PROTOCOLS`` of every backbone on the probe: its results.json.

    An earlier evaluation in ``work`` of the same backbones, probe and seeds is reused.
    """
    for done in sorted(work.glob(f"eval_{probe.name}_*/results.json"), reverse=True):
        earlier: dict[str, Any] = json.loads(done.read_text())
        if list(earlier["backbones"]) == weights and earlier["seeds"] == seeds:
            return earlier
    out = work / f"eval_{probe.name}_{time.strftime('%Y%m%d_%H%M%S')}"
    geopera(
        "evaluate", *protocols, "--weights", *weights, "--data", probe.data,
        "--labels", probe.labels, "--chip-size", str(probe.chip_size), "--out", str(out),
        "--seeds", str(seeds), "--no-progress", "--no-cache",
    )  # fmt: skip
    results: dict[str, Any] = json.loads((out / "results.json").read_text())
    return results


def gain(results: dict[str, Any], better: str, than: str, protocol: str) -> str:
    """The paired difference ``better - than`` (headline metric) with its 95 % interval."""
    for d in results["differences"]:
        if d["protocol"] == protocol and {d["a"], d["b"]} == {better, than}:
            sign = 1 if d["a"] == better else -1
            low, high = sorted((sign * d["ci_low"], sign * d["ci_high"]))
            return f"{sign * d['difference']:+.3f} [{low:+.3f}, {high:+.3f}]"
    raise KeyError(f"no paired difference of {better} and {than} on {protocol}")


def score_cell(results: dict[str, Any], weights: str, protocol: str) -> str:
    """The headline score of one backbone and protocol with its 95 % interval."""
    r = next(
        r
        for r in results["rows"]
        if r["weights"] == weights and r["protocol"] == protocol and r["headline"]
    )
    return f"{r['value']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
