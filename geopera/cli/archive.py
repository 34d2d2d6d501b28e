"""``geopera archive inspect`` and ``geopera archive sample``."""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from geopera.core.errors import ArchiveError
from geopera.data.archive import Archive, Source, discover
from geopera.data.roi import ROI, load_roi

_PATHS_HELP = (
    "folders, raster files, GDAL paths or URLs; STAC catalog/collection/item/ItemCollection "
    "(path or URL); stac+https://API?collections=...; a recipe (.yaml)"
)


def register(commands: Any) -> None:
    """Add the ``archive`` command group.

    Args:
        commands: The sub-parsers object of the main parser.
    """
    parser = commands.add_parser("archive", help="inspect and sample raster archives")
    sub = parser.add_subparsers(dest="archive_command", required=True, metavar="SUBCOMMAND")

    inspect = sub.add_parser("inspect", help="list the sources and problems of an archive")
    inspect.add_argument("paths", nargs="+", help=_PATHS_HELP)
    inspect.add_argument("--roi", help="ROI file, WKT or bbox: adds each source's overlap")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of a table")
    inspect.set_defaults(func=_inspect)

    sample = sub.add_parser("sample", help="write N random ROI patches as GeoTIFF chips")
    sample.add_argument("paths", nargs="+", help=_PATHS_HELP)
    sample.add_argument("--roi", required=True, help="ROI file, WKT or bbox")
    sample.add_argument("--size", type=int, required=True, help="patch size in pixels")
    sample.add_argument("--count", type=int, required=True, help="number of chips")
    sample.add_argument("--out", type=Path, required=True, help="new output folder")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--bands", nargs="+", help="band names, 1-based indices or 'rgb'")
    sample.add_argument("--sources", nargs="+", help="restrict to these source names")
    sample.add_argument(
        "--max-nodata", type=float, default=0.1, help="largest nodata fraction of a chip"
    )
    sample.add_argument("--cache", type=Path, help="folder for tiles fetched from remote archives")
    sample.add_argument(
        "--cache-gb", type=float, default=20.0, help="size limit of --cache (default 20)"
    )
    sample.set_defaults(func=_sample)


def _overlap(source: Source, roi: ROI) -> dict[str, float]:
    try:
        local = roi.to_crs(source.crs)
    except Exception:
        return {"fraction_of_roi": 0.0, "pixels": 0.0}
    inside = local & source.footprint
    rx, ry = source.res
    return {
        "fraction_of_roi": float(inside.area / local.area) if local.area else 0.0,
        "pixels": float(inside.area / (rx * ry)),
    }


def inspect_report(archive: Archive, roi: ROI | None) -> dict[str, Any]:
    """The JSON report of ``archive inspect``.

    Args:
        archive: The discovered archive.
        roi: Optional ROI.

    Returns:
        ``{"sources": [...], "problems": [...]}`` (plus ``"roi"`` when given).
    """
    sources = []
    for s in archive.sources:
        row = s.describe()
        if roi is not None:
            row["roi_overlap"] = _overlap(s, roi)
        sources.append(row)
    report: dict[str, Any] = {
        "sources": sources,
        "problems": [{"path": p.path, "reason": p.reason} for p in archive.problems],
    }
    if roi is not None:
        report["roi"] = {"origin": roi.origin, "bounds_wgs84": list(roi.bounds_wgs84)}
    return report


def _inspect(args: argparse.Namespace) -> int:
    roi = load_roi(args.roi) if args.roi else None
    archive = discover(args.paths, roi=roi)
    report = inspect_report(archive, roi)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        console = Console(width=None if sys.stdout.isatty() else 160)
        table = Table(title=f"{len(archive.sources)} sources")
        for col in ("source", "files", "bands", "dtype", "res", "crs", "lon/lat bounds"):
            table.add_column(col)
        if roi is not None:
            table.add_column("ROI overlap")
        for row in report["sources"]:
            b = row["bounds_wgs84"]
            cells = [
                row["name"],
                str(len(row["files"])),
                ",".join(row["bands"]),
                row["dtype"],
                f"{row['res'][0]:.4g}",
                row["crs"] if len(row["crs"]) < 20 else "custom WKT",
                f"{b[0]:.3f},{b[1]:.3f},{b[2]:.3f},{b[3]:.3f}" if b else "n/a",
            ]
            if roi is not None:
                cells.append(f"{row['roi_overlap']['fraction_of_roi']:.0%}")
            table.add_row(*cells)
        console.print(table)
        if archive.problems:
            problems = Table(title=f"{len(archive.problems)} problems (skipped files)")
            problems.add_column("path")
            problems.add_column("reason")
            for p in archive.problems:
                problems.add_row(p.path, p.reason)
            console.print(problems)
    if not archive.sources:
        raise ArchiveError(
            f"no usable raster source under {' '.join(args.paths)} "
            f"({len(archive.problems)} problem files); see the problems above"
        )
    return 0


def _sample(args: argparse.Namespace) -> int:
    # torch/torchgeo imports take seconds: only the commands that sample pay for them.
    from geopera.core.outputs import require_new_folder
    from geopera.data.chips import write_chips
    from geopera.data.remote import BlockCache
    from geopera.data.sampling import (
        MixedPatchSampler,
        PatchDataset,
        prepare_sources,
        source_weights,
    )

    if args.size < 1 or args.count < 1:
        raise ValueError(f"--size and --count must be >= 1, got {args.size} and {args.count}")
    require_new_folder(args.out)
    if args.cache_gb <= 0:
        raise ValueError(f"--cache-gb must be > 0, got {args.cache_gb}")
    roi = load_roi(args.roi)
    archive = discover(args.paths, roi=roi)
    if not archive.sources:
        raise ArchiveError(f"no usable raster source under {' '.join(args.paths)}")
    chosen = archive.select(args.bands, args.sources, roi=roi)
    cache = BlockCache(args.cache, int(args.cache_gb * 1e9)) if args.cache else None
    prepared = prepare_sources(chosen, roi, args.size, cache=cache)
    sampler = MixedPatchSampler(
        prepared, args.size, args.count, source_weights(prepared, None), seed=args.seed
    )
    dataset = PatchDataset(prepared, args.size, seed=args.seed, max_invalid=args.max_nodata)
    columns = (
        TextColumn("chips"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task("chips", total=args.count)
        index = write_chips(
            dataset,
            iter(sampler),
            args.out,
            args.count,
            advance=lambda n: progress.advance(task, n),
        )
    bad = dataset.bad_files.reasons
    if bad:
        shown = []
        for source in archive.sources:
            for item in source.items:
                hit = [p for p in (*item.paths, *item.assets) if p in bad]
                if hit:
                    shown.append(f"{', '.join(item.assets or item.paths)} ({bad[hit[0]]})")
        print(
            f"warning: {len(shown)} item(s) became unreadable and were skipped (their patches "
            f"came from the rest): {'; '.join(shown)}",
            file=sys.stderr,
        )
    rejected = sum(f["properties"]["rejected_before"] for f in index["features"])
    print(
        f"wrote {len(index['features'])} chips to {args.out} (index: {args.out / 'chips.geojson'}; "
        f"{rejected} patches rejected by quality control)",
        file=sys.stdout,
    )
    return 0
