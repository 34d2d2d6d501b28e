"""``geopera archive inspect`` and ``geopera archive sample``."""

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from geopera.archive.run import SampleRequest, inspect, prepare_sample, write_sample
from geopera.archive.shards import write_shards
from geopera.cli.options import add_document_permissions, add_ranks

_PATHS_HELP = (
    "folders, raster files, GDAL paths or URLs; STAC catalog/collection/item/ItemCollection "
    "(path or URL); stac+https://API?collections=...; a recipe (.yaml)"
)

_REINDEX_HELP = "read every file's header again instead of reusing the archive's index"


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
    inspect.add_argument("--reindex", action="store_true", help=_REINDEX_HELP)
    add_document_permissions(inspect)
    inspect.set_defaults(func=_inspect)

    sample = sub.add_parser("sample", help="write N random ROI patches as GeoTIFF chips")
    _add_draw_arguments(sample)
    sample.set_defaults(func=_sample)

    shards = sub.add_parser(
        "shards",
        help="draw N patches with the pretraining sampler and write them as streaming shards",
        description="Draw N patches with the pretraining sampler (ROI, source weights, quality "
        "control) and write them as zstd-compressed LitData shards with chips.parquet "
        "(footprints, provenance) and shards.json; pretrain from them with --shards.",
    )
    _add_draw_arguments(shards)
    shards.add_argument(
        "--workers", type=int, default=2, help="processes reading patches (default 2; 0: none)"
    )
    shards.add_argument(
        "--resume", action="store_true", help="continue a killed run with the same arguments"
    )
    add_ranks(shards, "the parts of the shard set")
    shards.set_defaults(func=_shards)


def _add_draw_arguments(parser: argparse.ArgumentParser) -> None:
    """What ``sample`` and ``shards`` share: the archive, the ROI and how patches are drawn."""
    parser.add_argument("paths", nargs="+", help=_PATHS_HELP)
    parser.add_argument("--roi", required=True, help="ROI file, WKT or bbox")
    parser.add_argument("--size", type=int, required=True, help="patch size in pixels")
    parser.add_argument("--count", type=int, required=True, help="number of chips")
    parser.add_argument("--out", type=Path, required=True, help="new output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bands", nargs="+", help="band names, 1-based indices or 'rgb'")
    parser.add_argument("--sources", nargs="+", help="restrict to these source names")
    parser.add_argument(
        "--max-nodata", type=float, default=0.1, help="largest nodata fraction of a chip"
    )
    parser.add_argument("--cache", type=Path, help="folder for tiles fetched from remote archives")
    parser.add_argument(
        "--cache-gb", type=float, default=20.0, help="size limit of --cache (default 20)"
    )
    parser.add_argument("--reindex", action="store_true", help=_REINDEX_HELP)
    add_document_permissions(parser)


def _inspect(args: argparse.Namespace) -> int:
    with _progress("headers") as progress:
        task = progress.add_task("headers", total=None)
        inspect(
            args.paths,
            args.roi,
            args.json,
            args.reindex,
            lambda done, total: progress.update(task, completed=done, total=total),
        )
    return 0


def _request(args: argparse.Namespace) -> SampleRequest:
    return SampleRequest(
        paths=args.paths,
        roi=args.roi,
        size=args.size,
        count=args.count,
        out=args.out,
        seed=args.seed,
        bands=args.bands,
        sources=args.sources,
        max_nodata=args.max_nodata,
        cache=args.cache,
        cache_gb=args.cache_gb,
        reindex=args.reindex,
    )


def _progress(what: str = "chips") -> Progress:
    columns = (TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    return Progress(*columns, console=Console(stderr=True), transient=what != "chips")


def _sample(args: argparse.Namespace) -> int:
    prepared = prepare_sample(_request(args))
    with _progress() as progress:
        task = progress.add_task("chips", total=args.count)
        summary = write_sample(prepared, advance=lambda n: progress.advance(task, n))
    if summary.unreadable:
        print(
            f"warning: {len(summary.unreadable)} item(s) became unreadable and were skipped "
            f"(their patches came from the rest): {'; '.join(summary.unreadable)}",
            file=sys.stderr,
        )
    print(
        f"wrote {summary.chips} chips to {args.out} (index: {args.out / 'chips.geojson'}; "
        f"{summary.rejected} patches rejected by quality control)"
    )
    return 0


def _shards(args: argparse.Namespace) -> int:
    if args.workers < 0:
        raise ValueError(f"--workers must be >= 0, got {args.workers}")
    ranks = {"devices": args.devices, "num_nodes": args.num_nodes}
    if args.devices * args.num_nodes > 1:  # no bar across processes
        summary = write_shards(_request(args), args.workers, args.resume, **ranks)
    else:
        with _progress() as progress:
            task = progress.add_task("chips", total=args.count)
            summary = write_shards(
                _request(args),
                args.workers,
                args.resume,
                advance=lambda n: progress.advance(task, n),
            )
    if summary is None:  # a rank other than 0 under torchrun or srun: rank 0 reports
        return 0
    again = f", {summary.resumed_parts} part(s) kept from the killed run" if args.resume else ""
    print(
        f"wrote {summary.shards.count} chips ({summary.shards.dtype}, "
        f"{len(summary.shards.bands)} bands, {args.size} px) to {args.out} as shards{again}; "
        f"{summary.rejected} patches rejected by quality control; "
        f"pretrain from them: geopera pretrain --shards {args.out}"
    )
    return 0
