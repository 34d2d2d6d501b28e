"""``geopera finetune segmentation|detection|change``: a backbone on labelled rasters."""

import argparse
from pathlib import Path
from typing import Any

from geopera.cli.options import add_band_mapping, add_min_per_class

HELP = {
    "segmentation": "per-pixel classes from a label raster, polygons or label chips",
    "detection": "boxes from a CSV table, Pascal VOC file or polygons",
    "change": "change mask from two dates",
}


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--weights", help="run dir, backbone .pth, publish folder, Enum.MEMBER or timm name"
    )
    p.add_argument("--config", type=Path, help="YAML config (see configs/finetune/)")
    p.add_argument("--max-steps", type=int, help="optimiser steps")
    p.add_argument("--freeze-backbone", action="store_true", help="train the head only (probe)")
    p.add_argument(
        "--out", type=Path, help="new output folder (default: runs/finetune-<task>-<time>)"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override any config key, e.g. --set data.chip_size=64",
    )
    p.add_argument(
        "--fast-dev-run", action="store_true", help="one batch of each stage (smoke test)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_band_mapping(p)
    p.add_argument(
        "--extra-bands",
        choices=["ignore", "adapt"],
        help="data bands the backbone has no input for: ignore them (default), or adapt the "
        "patch embedding with new inputs started from the nearest-wavelength one",
    )
    add_min_per_class(p, default=None)


def register(commands: Any) -> None:
    """Add the ``finetune`` command and its three tasks.

    Args:
        commands: The sub-parsers object of the main parser.
    """
    p = commands.add_parser(
        "finetune",
        help="fine-tune a backbone for segmentation, detection or change detection",
        description="Fine-tune a pretrained (or random) ViT on labelled rasters. Writes "
        "OUT/model.ckpt, OUT/metrics.json and OUT/previews/.",
    )
    tasks = p.add_subparsers(dest="task", required=True, metavar="TASK")
    seg = tasks.add_parser(
        "segmentation", help=HELP["segmentation"], description=HELP["segmentation"]
    )
    seg.add_argument("--images", nargs="+", help="image files, folders or quoted globs")
    seg.add_argument(
        "--labels", help="label raster or vector file, or a folder/glob of label chips"
    )
    seg.add_argument("--class-field", help="vector labels: integer class attribute")
    det = tasks.add_parser("detection", help=HELP["detection"], description=HELP["detection"])
    det.add_argument("--images", nargs="+", help="image files, folders or quoted globs")
    det.add_argument(
        "--boxes", help="CSV (image_path,xmin,ymin,xmax,ymax,label), VOC .xml or vector"
    )
    det.add_argument(
        "--box-coords", choices=["pixel", "map"], help="CSV coordinates (default pixel)"
    )
    det.add_argument("--class-field", help="vector boxes: class-name attribute")
    chg = tasks.add_parser("change", help=HELP["change"], description=HELP["change"])
    chg.add_argument("--before", help="first-date raster")
    chg.add_argument("--after", help="second-date raster")
    chg.add_argument("--labels", help="change raster (0 = no change) or polygons of change")
    for sub in (seg, det, chg):
        _common(sub)
        sub.set_defaults(func=_finetune)


def _finetune(args: argparse.Namespace) -> int:
    from geopera.core.signals import stop_on_signals
    from geopera.core.yaml_config import apply_override, load_config
    from geopera.finetune.config import FinetuneConfig
    from geopera.finetune.run import finetune
    from geopera.models.bandplan import parse_mapping

    config = load_config(args.config, FinetuneConfig) if args.config else FinetuneConfig()
    d = config.data
    for key in ("images", "labels", "class_field", "boxes", "box_coords", "before", "after"):
        value = getattr(args, key, None)
        if value is not None:
            setattr(d, key, [str(v) for v in value] if key == "images" else str(value))
    for assignment in args.set:
        apply_override(config, assignment)
    if args.weights is not None:
        config.model.weights = args.weights
    if args.freeze_backbone:
        config.model.freeze_backbone = True
    if args.bands:
        config.model.band_map = parse_mapping(args.bands) or {}
    if args.extra_bands is not None:
        config.model.extra_bands = args.extra_bands
    if args.min_per_class is not None:
        config.data.min_per_class = args.min_per_class
    if args.max_steps is not None:
        config.trainer.max_steps = args.max_steps
    if args.fast_dev_run:
        config.trainer.fast_dev_run = True
    where = str(args.out) if args.out else "its output folder"
    with stop_on_signals(
        f"fine-tuning ({args.task})",
        f"nothing was kept: {where} was not created and its staging folder was removed",
    ):
        result = finetune(args.task, config, args.out, progress=not args.no_progress)
    m = result.metrics
    key = {"segmentation": "miou", "change": "f1", "detection": "map_50"}[args.task]
    value = m["test"].get(key)
    shown = "n/a" if value is None else f"{value:.3f}"
    print(
        f"fine-tuned {args.task} for {m['steps']} steps on {m['chips']['train']} chips "
        f"(weights: {m['weights']}); test {key} {shown}\n"
        f"  {result.out}/model.ckpt\n  {result.out}/metrics.json\n  {result.out}/previews/"
    )
    return 0
