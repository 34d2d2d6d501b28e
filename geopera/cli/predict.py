"""``geopera predict TASK``: a fine-tuned model over whole rasters, by the task's own writer."""

import argparse
from pathlib import Path
from typing import Any

from geopera.cli.options import add_band_mapping, add_ranks, positive_int
from geopera.finetune.registry import TASKS


def register(commands: Any) -> None:
    """Add the ``predict`` command.

    Args:
        commands: The sub-parsers object of the main parser.
    """
    p = commands.add_parser(
        "predict",
        help="run a fine-tuned model over rasters of any size (tiled, blended, georeferenced)",
        description="Sliding-window inference in bounded memory. What each task writes: "
        + "; ".join(f"{t.name}: {t.output}" for t in TASKS.values())
        + ".",
    )
    p.add_argument("task", choices=list(TASKS))
    p.add_argument("--model", required=True, type=Path, help="DIR/model.ckpt of geopera finetune")
    p.add_argument("--input", required=True, help="input raster (the first date for change)")
    p.add_argument("--after", help="change: second-date raster")
    p.add_argument("--roi", help="only predict inside this ROI (vector file, WKT or bbox)")
    p.add_argument("--output", required=True, type=Path, help=".tif (dense) or .gpkg/.geojson")
    p.add_argument("--probabilities", type=Path, help="dense: also write class probabilities")
    p.add_argument("--overlap", type=int, help="tile overlap in pixels (default: chip size / 4)")
    p.add_argument("--batch-size", type=int, default=8, help="tiles per forward pass")
    p.add_argument(
        "--band-width",
        type=positive_int,
        default=2048,
        metavar="PX",
        help="dense: columns predicted at once (memory), and the unit --devices share",
    )
    p.add_argument("--min-score", type=float, default=0.5, help="detection: lowest score kept")
    p.add_argument("--nms-iou", type=float, default=0.5, help="detection: cross-tile NMS IoU")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1...")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    add_band_mapping(p)
    add_ranks(p, "the raster's column bands (dense tasks)")
    p.set_defaults(func=_predict)


def _predict(args: argparse.Namespace) -> int:
    from geopera.core.signals import stop_on_signals

    kept = f"nothing was kept: {args.output} was not written (its scratch file was removed)"
    with stop_on_signals(f"prediction ({args.task}) of {args.input}", kept):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from geopera.core.ranks import launch_rank
    from geopera.finetune.checkpoint import load_finetuned
    from geopera.models.bandplan import parse_mapping
    from geopera.predict.catalog import describe_outputs
    from geopera.predict.request import PredictRequest
    from geopera.predict.tiled import PredictError

    task = load_finetuned(args.model)
    if task.spec.task != args.task:
        raise PredictError(
            f"{args.model} is a {task.spec.task} model; run `geopera predict {task.spec.task}`"
        )
    info = TASKS[args.task]
    if info.inputs == 2 and args.after is None:
        raise PredictError(f"{info.name} needs --after (the second date's raster)")
    if info.inputs == 1 and args.after is not None:
        raise PredictError(f"--after is for two-date tasks; {info.name} reads one --input")
    request = PredictRequest(
        model=args.model, inputs=[args.input] + ([args.after] if args.after else []),
        output=args.output, roi=args.roi, overlap=args.overlap, probabilities=args.probabilities,
        batch_size=args.batch_size, band_width=args.band_width, min_score=args.min_score,
        nms_iou=args.nms_iou, device=args.device, overwrite=args.overwrite,
        band_map=parse_mapping(args.bands), devices=args.devices, num_nodes=args.num_nodes,
    )  # fmt: skip
    summary = info.predict()(task, request)
    if launch_rank() == 0:  # one of several processes torchrun or srun started: rank 0 reports
        describe_outputs(task, request, summary)
        print(f"{summary.message}; STAC items beside it and a catalog.json")
    return 0
