"""``geopera embed``: georeferenced embeddings of rasters; ``geopera embed similar``: search."""

import argparse
import sys
from pathlib import Path
from typing import Any

from geopera.cli.options import add_band_mapping, add_document_permissions, add_ranks


def register(commands: Any) -> None:
    """Add the ``embed`` command (and its ``similar`` sub-command).

    Args:
        commands: The sub-parsers object of the main parser.
    """
    p = commands.add_parser(
        "embed",
        help="embeddings of rasters: patch-level COG and chip-level GeoParquet; similarity search",
        description="Run a frozen backbone over rasters in bounded memory. Patch level: a COG "
        "whose pixels are the patch tokens, on the input's token grid. Chip level: a GeoParquet "
        "with one row per chip (footprint, source, date, pooled embedding). Interrupted runs "
        "continue with --resume. `geopera embed similar` maps the similarity to a query.",
    )
    p.add_argument(
        "--weights",
        help="run dir, .pth, publish folder, Enum.MEMBER or timm name "
        "(default: random vit_small_patch16_224)",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument("--input", nargs="+", help="input rasters")
    source.add_argument("--archive", nargs="+", help="archive folders/files (every raster)")
    p.add_argument("--roi", help="only embed inside this ROI (vector file, WKT or bbox)")
    p.add_argument("--out", type=Path, help="new output folder")
    p.add_argument("--level", default="both", choices=["patch", "chip", "both"])
    p.add_argument("--chip-size", type=int, default=224, help="chip size in pixels")
    p.add_argument(
        "--dtype", default="float16", choices=["float16", "int8"], help="patch-level storage"
    )
    p.add_argument("--batch-size", type=int, default=8, help="chips per forward pass")
    p.add_argument("--nodata", type=float, help="nodata value of inputs whose files set none")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1...")
    add_ranks(p, "the chip rows")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_band_mapping(p)
    add_document_permissions(p)
    p.set_defaults(func=_embed)
    sub = p.add_subparsers(dest="embed_command", metavar="similar")
    s = sub.add_parser(
        "similar",
        help="cosine similarity of every patch to a query; the most similar chips",
        description="Query: POINT(x y), any WKT geometry (in --crs; default the embeddings' "
        "CRS), or a chip id (NAME:ROW:COL). Writes similarity_<name>.tif on the patch grid and "
        "top_chips.geojson.",
    )
    s.add_argument("--embeddings", required=True, type=Path, help="a geopera embed folder")
    s.add_argument("--query", required=True, help="POINT(x y), WKT, or a chip id")
    s.add_argument("--crs", help="CRS of a WKT query, e.g. EPSG:4326")
    s.add_argument("--top", type=int, default=10, help="number of chips to list")
    s.add_argument("--out", required=True, type=Path, help="new output folder")
    s.set_defaults(func=_similar)


def _inputs(args: argparse.Namespace) -> list[str]:
    if args.input:
        return [str(p) for p in args.input]
    from geopera.data.roi import load_roi
    from geopera.data.sources.discover import discover

    archive = discover(args.archive, roi=load_roi(args.roi) if args.roi else None)
    paths: list[str] = []
    skipped: list[str] = []
    for src in archive.sources:
        for item in src.items:
            (skipped if item.separate else paths).append(item.paths[0])
    if skipped:
        print(
            f"note: {len(skipped)} band-separate item(s) left out (embed reads stacked rasters; "
            "build a VRT to include them)",
            file=sys.stderr,
        )
    return paths


def _embed(args: argparse.Namespace) -> int:
    from geopera.core.errors import GeoperaError

    if args.out is None or not (args.input or args.archive):
        raise GeoperaError("give --input RASTER... (or --archive PATH...) and --out DIR")
    from rich.progress import Progress

    from geopera.core.ranks import launch_rank
    from geopera.core.signals import stop_on_signals
    from geopera.embed.run import embed
    from geopera.models.bandplan import parse_mapping

    inputs = _inputs(args)
    kwargs: dict[str, Any] = {
        "weights": args.weights,
        "roi": args.roi,
        "level": args.level,
        "chip_size": args.chip_size,
        "dtype": args.dtype,
        "batch_size": args.batch_size,
        "device": args.device,
        "resume": args.resume,
        "overwrite": args.overwrite,
        "skip_outside_roi": args.archive is not None,
        "nodata": args.nodata,
        "band_map": parse_mapping(args.bands),
        "devices": args.devices,
        "num_nodes": args.num_nodes,
    }
    kept = (
        f"the chip rows done so far are kept in .{args.out.name}.partial beside {args.out}; "
        "continue with the same arguments and --resume"
    )
    with stop_on_signals(f"embedding into {args.out}", kept):
        if args.no_progress or args.devices * args.num_nodes > 1:  # no bar across processes
            summary = embed(inputs, args.out, **kwargs)
        else:
            with Progress(transient=True) as bar:
                task = bar.add_task("embedding chips", total=None)
                summary = embed(
                    inputs,
                    args.out,
                    progress=lambda d, t: bar.update(task, completed=d, total=t),
                    **kwargs,
                )
    if launch_rank() != 0:  # one of several processes torchrun or srun started: rank 0 reports
        return 0
    m = summary.manifest
    print(
        f"done: {len(m.rasters)} raster(s) embedded into {summary.out}/ "
        f"({m.model}, token {m.token_size} px, chips {m.chip_size} px)"
    )
    if summary.resumed_rows:
        print(f"  resumed {summary.resumed_rows} chip rows done by the interrupted run")
    for r in m.rasters:
        parts = [f"{r.patches} ({r.token_cols} x {r.token_rows} tokens)"] if r.patches else []
        if r.chips:
            parts.append(f"{r.chips} ({r.chips_written} chips)")
        print(f"  {r.name}: " + ", ".join(parts))
    return 0


def _similar(args: argparse.Namespace) -> int:
    from geopera.embed.similar import similar

    summary = similar(args.embeddings, args.query, args.out, crs=args.crs, top=args.top)
    print(f"done: {summary.out}/")
    for path in summary.maps:
        print(f"  {path.name}   cosine similarity on the patch grid")
    if summary.top is not None:
        print(f"  {summary.top.name}   the {args.top} most similar chips")
    return 0
