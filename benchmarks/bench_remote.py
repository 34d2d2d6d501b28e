"""Remote COG reads: patches/s and HTTP requests per patch, local vs over HTTP, geopera vs raw.

The three 30 m bands (B2, B3, B4) of a Landsat 8 scene of the sample archive (2041 x 1860 px)
are written as single-band COGs (512 px tiles, DEFLATE, like the Landsat Collection 2 COGs on
public buckets) with a static STAC item, and served by ``tests.fakes.http.FakeStorage`` on
127.0.0.1 with an added latency per request (default 20 ms, standing for object storage). Each
case reads the same seeded patch windows, in a fresh process (no GDAL cache shared between
cases), one patch after the other:

* ``local raw``: rasterio windowed reads of the local COGs (the local ceiling);
* ``remote raw``: the same reads through ``/vsicurl/`` with GDAL's default settings (the raw
  remote ceiling the goal refers to);
* ``remote geopera``: ``discover`` on the served ``catalog.json`` (opens no raster) and
  geopera's reader: COG settings, windows moved onto the tiles (``SourceReader.align``);
* ``remote geopera + cache (cold)`` / ``(warm)``: the same with ``--cache`` (whole tiles kept on
  the local disk); warm reads the windows a second time in the same process.

Two rates per case: over all patches with the files' opening included (a run opens each file
once per worker), and "steady", after the opening and the first patch.

Requests are counted by the server (HEAD, GET and ranges alike). Goal: geopera >= 70 % of the
raw remote patches/s, and no more requests per patch than raw.

Usage: ``python -m benchmarks.bench_remote [--patches N] [--size PX] [--latency-ms MS] [--json]``
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from benchmarks.common.paths import REPO, child_env, module_command
from tests.fakes.http import FakeStorage
from tests.fakes.stac import write_cog

SCENE = "LC08_L1TP_224077_20200518_20200518_01_RT"
BANDS = ("B2", "B3", "B4")
COMMON = {"B2": "blue", "B3": "green", "B4": "red"}


def build(work: Path) -> dict[str, Any]:
    """COGs + a static catalog under ``work`` (from datasets/sample; `make sample` builds it)."""
    sample = REPO / "datasets" / "sample" / "landsat8"
    if not (sample / f"{SCENE}_B2.TIF").is_file():
        raise SystemExit("the sample archive is missing: run `make sample` first")
    assets = {}
    for band in BANDS:
        with rasterio.open(sample / f"{SCENE}_{band}.TIF") as src:
            write_cog(src.read(), src.profile, work / "scene" / f"{band}.tif", block=512)
            meta = {
                "crs": src.crs.to_epsg(),
                "shape": [src.height, src.width],
                "transform": list(src.transform)[:6],
                "bounds": list(src.bounds),
            }
        assets[band] = {
            "href": f"./{band}.tif",
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "roles": ["data"],
            "eo:bands": [{"name": band, "common_name": COMMON[band]}],
            "raster:bands": [{"data_type": "uint16", "nodata": 0}],
        }
    from rasterio.warp import transform_bounds

    bbox = list(transform_bounds(f"EPSG:{meta['crs']}", "EPSG:4326", *meta["bounds"]))
    item = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": SCENE,
        "collection": "landsat-bench",
        "geometry": {
            "type": "Polygon",
            "coordinates": [
                [
                    [bbox[0], bbox[1]],
                    [bbox[2], bbox[1]],
                    [bbox[2], bbox[3]],
                    [bbox[0], bbox[3]],
                    [bbox[0], bbox[1]],
                ]
            ],
        },
        "bbox": bbox,
        "properties": {
            "datetime": "2020-05-18T13:40:00Z",
            "platform": "landsat-8",
            "proj:code": f"EPSG:{meta['crs']}",
            "proj:shape": meta["shape"],
            "proj:transform": meta["transform"],
        },
        "assets": assets,
        "links": [{"rel": "root", "href": "../catalog.json"}],
    }
    (work / "scene" / "item.json").write_text(json.dumps(item))
    catalog = {
        "type": "Catalog",
        "stac_version": "1.0.0",
        "id": "bench",
        "description": "bench",
        "links": [
            {"rel": "root", "href": "./catalog.json"},
            {"rel": "item", "href": "./scene/item.json"},
        ],
    }
    (work / "catalog.json").write_text(json.dumps(catalog))
    return meta


def windows(meta: dict[str, Any], size: int, n: int, seed: int = 0) -> list[tuple[int, int]]:
    """Seeded (col, row) patch origins inside the scene's valid middle (no nodata border)."""
    rows, cols = meta["shape"]
    rng = np.random.default_rng(seed)
    margin = 300
    xs = rng.integers(margin, cols - margin - size, n)
    ys = rng.integers(margin, rows - margin - size, n)
    return [(int(x), int(y)) for x, y in zip(xs, ys, strict=True)]


# --- the cases (each in its own process) --------------------------------------------------------


def _raw(prefix: str, origins: list[tuple[int, int]], size: int) -> dict[str, float]:
    from rasterio.windows import Window

    t0 = time.perf_counter()  # opening counts, as it does for geopera's reader
    handles = [rasterio.open(f"{prefix}/scene/{band}.tif") for band in BANDS]
    first = 0.0
    for k, (col, row) in enumerate(origins):
        window = Window(col, row, size, size)
        patch = np.concatenate([h.read(1, window=window)[None] for h in handles])  # (3, H, W)
        if patch.shape != (3, size, size):
            raise RuntimeError(f"short read {patch.shape}")
        if k == 0:
            first = time.perf_counter() - t0
    return {"cold": time.perf_counter() - t0, "first": first}


def _geopera(
    url: str, origins: list[tuple[int, int]], size: int, cache: str | None
) -> dict[str, float]:
    from geopera.data.sampling.readers import SourceReader
    from geopera.data.sources.discover import discover
    from geopera.data.sources.remote import BlockCache

    archive = discover([f"{url}/catalog.json"])  # metadata from the catalog: no raster opened
    source = archive.sources[0]
    tiles = BlockCache(Path(cache), 10**10) if cache else None
    reader = SourceReader(source, list(BANDS), cache=tiles)
    left, _, _, top = source.first.bounds
    rx, ry = source.res
    out: dict[str, float] = {}
    for label in ("cold", "warm") if cache else ("cold",):
        t0 = time.perf_counter()
        for k, (col, row) in enumerate(origins):
            x0, y1 = left + col * rx, top - row * ry
            box = reader.align((x0, y1 - size * ry, x0 + size * rx, y1))
            patch = reader.read(*box)  # (3, H, W)
            if patch.shape != (3, size, size):
                raise RuntimeError(f"short read {patch.shape}")
            if k == 0 and label == "cold":
                out["first"] = time.perf_counter() - t0
        out[label] = time.perf_counter() - t0
    return out


def run_case() -> None:
    """Child process: run one case, print its timings as JSON."""
    case, url, size, cache = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
    origins = [(int(c), int(r)) for c, r in json.loads(sys.stdin.read())]
    if case in ("local raw", "remote raw"):
        prefix = url if case == "local raw" else f"/vsicurl/{url}"
        print(json.dumps(_raw(prefix, origins, size)))
    else:
        print(json.dumps(_geopera(url, origins, size, cache if cache != "-" else None)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=int, default=150)
    parser.add_argument("--size", type=int, default=128, help="patch size in pixels")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_remote_") as tmp:
        work = Path(tmp)
        meta = build(work)
        origins = windows(meta, args.size, args.patches)
        env = {k: v for k, v in child_env().items() if not k.startswith(("GDAL_", "CPL_", "VSI_"))}
        with FakeStorage(work, latency=args.latency_ms / 1000) as server:
            cases = [
                ("local raw", str(work), "-"),
                ("remote raw", server.url, "-"),
                ("remote geopera", server.url, "-"),
                ("remote geopera + cache", server.url, str(work / "tiles")),
            ]
            for case, url, cache in cases:
                server.requests.clear()
                proc = subprocess.run(
                    [
                        *module_command("benchmarks.bench_remote"),
                        "--case",
                        case,
                        url,
                        str(args.size),
                        cache,
                    ],
                    input=json.dumps(origins),
                    capture_output=True,
                    text=True,
                    env=env,
                    check=True,
                )
                result = json.loads(proc.stdout.strip().splitlines()[-1])
                # raster requests (the catalog's JSON documents left out)
                tif = sum(n for p, n in server.requests.items() if not p.endswith(".json"))
                for label in ("cold", "warm"):
                    if label not in result:
                        continue
                    n = args.patches
                    rows.append(
                        {
                            "case": case,
                            "pass": label,
                            "patches_per_s": n / result[label],
                            # after opening the files and reading the first patch
                            "steady_per_s": (n - 1) / (result[label] - result["first"])
                            if label == "cold"
                            else n / result[label],
                            # the warm pass runs after the cold one in the same process
                            "requests_per_patch": tif / n if label == "cold" else None,
                        }
                    )
    raw = next(r for r in rows if r["case"] == "remote raw")
    for r in rows:
        r["vs_remote_raw"] = r["patches_per_s"] / raw["patches_per_s"]
        r["steady_vs_remote_raw"] = r["steady_per_s"] / raw["steady_per_s"]
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(
        f"{args.patches} patches of {args.size} px x 3 bands, 512-px COG tiles, "
        f"{args.latency_ms:g} ms per request"
    )
    print(
        f"{'case':<24}{'pass':<6}{'patches/s':>10}{'ratio':>7}{'steady/s':>10}{'ratio':>7}"
        f"{'requests/patch':>16}"
    )
    for r in rows:
        req = r["requests_per_patch"]
        shown = f"{req:.2f}" if req is not None else "(with cold)"
        rates = f"{r['patches_per_s']:>10.1f}{r['vs_remote_raw']:>7.2f}"
        steady = f"{r['steady_per_s']:>10.1f}{r['steady_vs_remote_raw']:>7.2f}"
        print(f"{r['case']:<24}{r['pass']:<6}{rates}{steady}{shown:>16}")
    print("ratio: against remote raw; steady: after opening the files and reading the first patch")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--case":
        run_case()
    else:
        main()
