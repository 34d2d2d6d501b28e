"""``geopera finetune``: labelled scenes -> chips -> Lightning training -> a model folder.

The folder (``--out``) is assembled in a hidden sibling and renamed into place only when
training, evaluation and export all succeeded, so a folder named ``--out`` is always complete:

* ``model.ckpt``: Lightning checkpoint; its hyper-parameters hold the spec that
  ``geopera predict`` rebuilds the model from,
* ``metrics.json``: validation and test metrics, chip counts per split, classes, band rule,
* ``config.yaml``: the resolved configuration,
* ``previews/``: predictions on validation chips,
* ``logs/``: Lightning's CSV log.
"""

import dataclasses
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning import Trainer, seed_everything
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

from geopera import __version__
from geopera.core.checkpoints import AtomicCheckpointIO
from geopera.core.contracts import FinetunedSpec, TaskSection
from geopera.core.normalisation import BandStats
from geopera.core.outputs import require_new_folder, staged_folder, write_json
from geopera.core.quiet import quiet_lightning
from geopera.core.yaml_config import dump_config
from geopera.data.labelled.chips import (
    ChipDataset,
    ClassMap,
    chip_statistics,
    collate,
    make_chips,
)
from geopera.data.labelled.labels import IGNORE
from geopera.data.labelled.scenes import (
    Scene,
    select_bands,
)
from geopera.finetune.base import FinetuneError, FinetuneTask
from geopera.finetune.checkpoint import build_task
from geopera.finetune.config import FinetuneConfig
from geopera.finetune.registry import TASKS
from geopera.models.adapters import DECODERS, FUSIONS
from geopera.models.bandplan import BandPlan, Bands, plan_for, raster_bands
from geopera.models.loading import BackboneSource, load_into, resolve_weights
from geopera.viz.overlays import display_bands


@dataclass
class ChipCounts:
    """Chips per split.

    Attributes:
        train: Training chips.
        val: Validation chips.
        test: Test chips.
    """

    train: int
    val: int
    test: int


@dataclass
class FinetuneMetrics:
    """What ``metrics.json`` holds, field by field.

    Attributes:
        val: Validation scores (the task's metrics, per class where it has classes).
        test: Test scores.
        steps: Optimiser steps done.
        fast_dev_run: Whether it was Lightning's one-batch check.
        task: The task's name.
        chips: Chips per split (``train``, ``val``, ``test``).
        scenes: The labelled images.
        classes: The class values learnt.
        bands: The data bands, in model order.
        band_rule: How the bands were matched to the backbone's inputs.
        band_plan: Per input: data band, identity, the backbone input it started from.
        weights: Where the backbone came from.
        ssl_method: The backbone's pretraining method, if known.
    """

    val: dict[str, Any]
    test: dict[str, Any]
    steps: int
    fast_dev_run: bool
    task: str
    chips: ChipCounts
    scenes: list[str]
    classes: list[Any]
    bands: list[str]
    band_rule: str
    band_plan: list[dict[str, Any]]
    weights: str
    ssl_method: str | None


@dataclass
class FinetuneResult:
    """What a fine-tuning run wrote.

    Attributes:
        out: The model folder.
        metrics: What it wrote to ``metrics.json``.
    """

    out: Path
    metrics: FinetuneMetrics


def _check_settings(kind: str, config: FinetuneConfig) -> type[FinetuneTask]:
    """The task's class, once the settings are known to work for it."""
    if kind not in TASKS:
        raise FinetuneError(f"unknown task {kind!r}; tasks are {', '.join(TASKS)}")
    m = config.model
    if m.decoder not in DECODERS:
        raise FinetuneError(f"model.decoder {m.decoder!r} is not one of {', '.join(DECODERS)}")
    task_class = TASKS[kind].load()
    task_class.check_settings(config)
    if m.decoder_channels < 32 or m.decoder_channels % 32:
        raise FinetuneError(
            f"model.decoder_channels must be a positive multiple of 32 (group norms of 32 "
            f"groups), got {m.decoder_channels}"
        )
    if m.fusion not in FUSIONS:
        raise FinetuneError(f"model.fusion {m.fusion!r} is not one of {', '.join(FUSIONS)}")
    return task_class


def _new_out(out: Path | None, kind: str) -> Path:
    if out is None:
        out = Path("runs") / f"finetune-{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    require_new_folder(out)
    return out


def _spec(
    kind: str,
    config: FinetuneConfig,
    source: BackboneSource,
    plan: BandPlan,
    data_bands: list[int],
    classes: ClassMap,
    norm: BandStats,
    head: TaskSection,
) -> FinetunedSpec:
    m, o, t = config.model, config.optim, config.trainer
    return FinetunedSpec(
        task=kind,
        model=source.model,
        model_kwargs=dict(source.model_kwargs),
        in_chans=len(plan.names),
        bands=plan.names,
        data_bands=data_bands,
        chip_size=config.data.chip_size,
        classes=classes.values,
        norm=norm,
        head=head,
        freeze_backbone=m.freeze_backbone,
        augment=t.augment,
        weights=source.origin,
        ssl_method=source.ssl_method,
        band_rule=plan.rule,
        band_identities=plan.identities if any(plan.identities) else None,
        optim=dataclasses.replace(o, max_steps=t.max_steps),
        geopera_version=__version__,
    )


def _loader(ds: ChipDataset, config: FinetuneConfig, shuffle: bool) -> DataLoader[Any]:
    d = config.data
    return DataLoader(
        ds,
        batch_size=d.batch_size,
        shuffle=shuffle,
        drop_last=shuffle and len(ds) > d.batch_size,
        num_workers=d.num_workers,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(d.seed) if shuffle else None,
    )


def finetune(
    kind: str, config: FinetuneConfig, out: Path | None = None, progress: bool = True
) -> FinetuneResult:
    """Fine-tune a backbone on labelled scenes (see the module docstring for the outputs).

    Args:
        kind: ``"segmentation"``, ``"change"`` or ``"detection"``.
        config: The configuration (data paths included).
        out: New output folder (default: ``runs/finetune-<task>-<time>``).
        progress: Show Lightning's progress bar.

    Returns:
        The folder and its metrics.

    Raises:
        FinetuneError: On inconsistent inputs or settings.
        FileExistsError: If ``out`` exists and is not empty.
    """
    task_class = _check_settings(kind, config)
    out = _new_out(out, kind)
    seed_everything(config.data.seed, verbose=False)
    d = config.data
    scenes = _labelled_scenes(task_class, config)
    paths = [s.image for s in scenes] + [s.after for s in scenes if s.after]
    data_indices, data_names = select_bands(paths, d.bands)
    source = _backbone(config)
    every = raster_bands(paths[0])
    data = Bands(data_names, [every.identity(i) for i in data_indices])
    plan = plan_for(source, data, config.model.band_map or None, extra=config.model.extra_bands)
    bands = [data_indices[i] for i in plan.indices]
    chips = make_chips(scenes, d.chip_size, d.block_chips, d.val_fraction, d.test_fraction, d.seed)
    classes = task_class.class_map(scenes, chips, d.min_per_class)
    by_split = {s: [c for c in chips if c.split == s] for s in ("train", "val", "test")}
    datasets = {
        s: task_class.dataset(config, scenes, cs, bands, classes) for s, cs in by_split.items()
    }
    norm = chip_statistics(datasets["train"], seed=d.seed)
    head = task_class.head_section(config, datasets["train"], classes)
    task = build_task(_spec(kind, config, source, plan, bands, classes, norm, head))
    token = int(task.vit.patch_embed.patch_size[0])
    if d.chip_size % token:
        raise FinetuneError(
            f"data.chip_size {d.chip_size} is not a multiple of the ViT token size {token}"
        )
    load_into(task.vit, source, len(bands), plan.channels)
    with staged_folder(out) as work:
        metrics = FinetuneMetrics(
            **_train(task, config, datasets, work, progress),
            task=kind,
            chips=ChipCounts(**{s: len(cs) for s, cs in by_split.items()}),
            scenes=[s.image for s in scenes],
            classes=classes.values,
            bands=plan.names,
            band_rule=plan.rule,
            band_plan=plan.describe(),
            weights=source.origin,
            ssl_method=source.ssl_method,
        )
        write_json(work / "metrics.json", dataclasses.asdict(metrics))
        dump_config(config, work / "config.yaml")
        _previews(task, datasets["val"], work / "previews", config.trainer.preview_chips)
    return FinetuneResult(out, metrics)


def _labelled_scenes(task_class: type[FinetuneTask], config: FinetuneConfig) -> list[Scene]:
    """The scenes, with ``data.ignore_value`` turned into the ignore label."""
    scenes = task_class.scenes(config)
    ignore = config.data.ignore_value
    if ignore is not None:
        for scene in scenes:
            if scene.labels is not None:
                scene.labels[scene.labels == ignore] = IGNORE
    return scenes


def _backbone(config: FinetuneConfig) -> BackboneSource:
    """The backbone's weights; ``model.backbone_kwargs`` only shape a random initialisation."""
    source = resolve_weights(config.model.weights, config.model.backbone)
    kwargs = dict(config.model.backbone_kwargs)
    if kwargs:  # an architecture for random initialisation; pretrained weights bring their own
        if source.state_dict is not None and kwargs != source.model_kwargs:
            raise FinetuneError(
                f"model.backbone_kwargs {kwargs} differs from the architecture of the weights "
                f"({source.origin}: {source.model_kwargs or 'standard'}); leave it empty to use "
                "the weights' own"
            )
        source.model_kwargs = kwargs
    return source


def _train(
    task: FinetuneTask,
    config: FinetuneConfig,
    datasets: dict[str, ChipDataset],
    work: Path,
    progress: bool,
) -> dict[str, Any]:
    quiet_lightning()
    t = config.trainer
    trainer = Trainer(
        max_steps=t.max_steps,
        fast_dev_run=t.fast_dev_run,
        val_check_interval=max(1, min(t.val_every, t.max_steps)),
        check_val_every_n_epoch=None,
        accelerator=t.accelerator,
        devices=t.devices,
        precision=t.precision,  # type: ignore[arg-type]
        logger=CSVLogger(work, name="logs", version=""),
        enable_checkpointing=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=5,
        plugins=[AtomicCheckpointIO()],
    )
    train = _loader(datasets["train"], config, shuffle=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
        trainer.fit(task, train, _loader(datasets["val"], config, shuffle=False))
        trainer.validate(task, _loader(datasets["val"], config, shuffle=False), verbose=False)
        trainer.test(task, _loader(datasets["test"], config, shuffle=False), verbose=False)
    trainer.save_checkpoint(work / "model.ckpt")
    return {
        "val": task.results.get("val", {}),
        "test": task.results.get("test", {}),
        "steps": int(trainer.global_step),
        "fast_dev_run": bool(t.fast_dev_run),
    }


@torch.no_grad()
def _previews(task: FinetuneTask, ds: ChipDataset, folder: Path, count: int) -> None:
    task.eval()
    rgb = display_bands(task.spec.band_identities, len(task.spec.bands))
    for i in range(min(count, len(ds))):
        task.preview(collate([ds[i]]), folder / f"val_{i:02d}.png", rgb)
