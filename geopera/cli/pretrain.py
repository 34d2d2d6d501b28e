"""``geopera pretrain``: PerA pretraining from an archive inside an ROI."""

import argparse
import copy
import signal
import sys
from pathlib import Path
from typing import Any

from geopera.cli.options import add_document_permissions
from geopera.core.contracts import RunState
from geopera.core.errors import GeoperaError


def register(commands: Any) -> None:
    """Add the ``pretrain`` command.

    Args:
        commands: The sub-parsers object of the main parser.
    """
    p = commands.add_parser(
        "pretrain",
        help="PerA pretraining on ROI patches of a raster archive",
        description=(
            "Pretrain a ViT with PerA on patches sampled inside an ROI. Without --archive the "
            "sample archive (datasets/sample) is used, and built on first use. Every config key "
            "can be set with --set section.key=value."
        ),
    )
    p.add_argument("--roi", help="ROI: vector file, WKT or bbox (required for a new run)")
    p.add_argument(
        "--archive",
        nargs="+",
        help="archive folders/files, STAC catalogs or searches, recipes (default: datasets/sample)",
    )
    p.add_argument(
        "--shards",
        help="stream the chips of `geopera archive shards` (a folder, or an s3://, gs:// or "
        "https:// prefix) instead of sampling an archive; no --roi needed",
    )
    p.add_argument(
        "--config", type=Path, help="YAML config (default: configs/pretrain/pera_vit_tiny_cpu.yaml)"
    )
    p.add_argument("--bands", nargs="+", help="band names, 1-based indices or 'rgb'")
    p.add_argument(
        "--cache", help="folder for tiles fetched from remote archives (data.cache_gb bounds it)"
    )
    p.add_argument("--max-steps", type=int, help="optimiser steps")
    p.add_argument("--batch-size", type=int, help="patches per step and device")
    p.add_argument("--devices", type=int, help="number of devices (DDP when > 1)")
    p.add_argument(
        "--num-nodes", type=int, help="nodes, each started by torchrun or srun (docs/scale.md)"
    )
    p.add_argument("--accelerator", choices=["cpu", "gpu", "auto"], help="device type")
    p.add_argument("--workers", type=int, help="DataLoader workers")
    p.add_argument(
        "--probe",
        help="labelled vector file or chip folder: kNN accuracy of the teacher every N steps",
    )
    p.add_argument("--out", type=Path, help="new run directory (default: runs/pera-<time>)")
    p.add_argument("--resume", type=Path, help="continue an interrupted run directory")
    p.add_argument(
        "--init",
        metavar="WEIGHTS",
        help="start from these weights (run dir, .pth, publish folder, Enum.MEMBER): continued "
        "pretraining; fresh heads (optim.freeze_backbone_steps lets them warm up first)",
    )
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_document_permissions(p)
    p.set_defaults(func=_pretrain)


def _check_resume(args: argparse.Namespace) -> None:
    """``--resume`` continues a run in place, from its checkpoint: no --out, no --init."""
    if args.out is not None:
        raise GeoperaError("--resume continues a run in place; leave out --out")
    if args.init is not None:
        raise GeoperaError(
            "--resume continues a run from its checkpoint; --init only starts a new run"
        )
    if not args.resume.is_dir():
        raise FileNotFoundError(f"run directory {args.resume} does not exist")


def _check_shards(args: argparse.Namespace) -> None:
    """``--shards`` replaces ``--archive`` and ``--roi``: naming both is a mistake."""
    if args.shards and (args.archive or args.roi):
        raise GeoperaError(
            "--shards streams chips drawn by `archive shards` inside their own ROI: give "
            "--shards alone, or --archive and --roi to sample an archive"
        )


def _pretrain(args: argparse.Namespace) -> int:
    if args.resume is not None:
        _check_resume(args)
    _check_shards(args)
    # heavy imports (torch, Lightning, TorchGeo) only once the arguments make sense
    from geopera.archive.sample_archive import DEFAULT_DIR, build_sample_archive, is_complete
    from geopera.core.yaml_config import apply_override, set_key
    from geopera.pretrain.config import SAFE_ON_RESUME, config_changes, load_pretrain_config
    from geopera.pretrain.run import pretrain, resume_config

    changes = None
    if args.resume is not None:
        own = resume_config(args.resume, None, check_complete=False)
        config = load_pretrain_config(args.config) if args.config else copy.deepcopy(own)
    else:
        config = load_pretrain_config(args.config)
        if args.roi is None and config.data.roi is None and not (args.shards or config.data.shards):
            raise GeoperaError("--roi is required (e.g. --roi datasets/sample/area.geojson)")
    for assignment in args.set:
        apply_override(config, assignment)
    for name, section, key in (
        ("roi", "data", "roi"),
        ("probe", "data", "probe"),
        ("archive", "data", "archive"),
        ("shards", "data", "shards"),
        ("bands", "data", "bands"),
        ("cache", "data", "cache"),
        ("batch_size", "data", "batch_size"),
        ("workers", "data", "num_workers"),
        ("max_steps", "trainer", "max_steps"),
        ("init", "trainer", "init"),
        ("devices", "trainer", "devices"),
        ("num_nodes", "trainer", "num_nodes"),
        ("accelerator", "trainer", "accelerator"),
    ):
        value = getattr(args, name)
        if value is not None:
            set_key(config, section, key, value)
    if args.resume is not None:
        changes = config_changes(own, config)
        fixed = {k: v for k, v in changes.items() if k not in SAFE_ON_RESUME}
        if fixed:
            listed = "; ".join(f"{k}: {v[0]!r} -> {v[1]!r}" for k, v in fixed.items())
            raise GeoperaError(
                f"a resumed run keeps its own config, and these keys would change: {listed}. "
                f"Only {', '.join(sorted(SAFE_ON_RESUME))} may change on --resume; start a new "
                "run for the others"
            )
        resume_config(args.resume, config.trainer.max_steps)  # refuses a complete run
    if not config.data.archive and not config.data.shards:
        if not is_complete(DEFAULT_DIR):
            print(
                f"no --archive given: building the sample archive in {DEFAULT_DIR} (once)",
                file=sys.stderr,
            )
            build_sample_archive(DEFAULT_DIR, log=lambda m: print(m, file=sys.stderr))
        set_key(config, "data", "archive", [str(DEFAULT_DIR)])
    result = pretrain(
        config, out=args.out, resume=args.resume, progress=not args.no_progress, changes=changes
    )
    if result is None:  # a rank other than 0: rank 0 reports
        return 0
    if result.status is RunState.INTERRUPTED:
        name = signal.Signals(result.signal).name if result.signal else "signal"
        print(
            f"interrupted by {name} at step {result.steps}: checkpoint saved. Continue with\n"
            f"  geopera pretrain --resume {result.run_dir}",
            file=sys.stderr,
        )
        return 128 + int(result.signal or signal.SIGINT)
    run = result.run_dir
    print(
        f"done: {result.steps} steps. Outputs in {run}/\n"
        f"  backbone.pth + backbone.json   teacher backbone (timm state dict) and its description\n"
        f"  checkpoints/last.ckpt          resumable checkpoint\n"
        f"  metrics.csv, tensorboard/      losses, schedules, health, throughput\n"
        f"  previews/                      views and masks, PCA maps, loss curves"
    )
    return 0
