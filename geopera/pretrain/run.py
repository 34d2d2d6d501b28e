"""``geopera pretrain``: from an archive and an ROI to a pretrained backbone in a run directory.

Order of work: resolve and check the data first (archive, ROI, bands, statistics), so bad input
fails before anything is written; then create the run directory, train, and export the teacher
backbone. ``run.json`` says ``completed`` only once ``backbone.pth`` is written.
"""

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import DDPStrategy

from geopera import __version__
from geopera.core.checkpoints import AtomicCheckpointIO
from geopera.core.config import dump_config, to_plain
from geopera.core.contracts import BackboneCard
from geopera.core.errors import GeoperaError
from geopera.core.outputs import (
    require_new_folder,
    save_torch_atomic,
    write_json,
)
from geopera.data.bands import rgb_indices
from geopera.data.datamodule import PretrainDataModule
from geopera.pretrain.callbacks import (
    CollapseAlarm,
    GracefulStop,
    KnnProbe,
    MetricsCSV,
    Previews,
    SamplingLog,
)
from geopera.pretrain.config import PretrainConfig, load_pretrain_config
from geopera.pretrain.rundir import RunDir
from geopera.pretrain.task import PerATask

#: Environment variable through which rank 0 hands the run directory to DDP workers.
RUN_DIR_ENV = "GEOPERA_RUN_DIR"


@dataclass
class PretrainResult:
    """What a pretraining call produced.

    Attributes:
        run_dir: The run directory.
        status: ``completed`` or ``interrupted``.
        steps: Optimiser steps done.
        signal: The signal that interrupted the run, if any.
    """

    run_dir: Path
    status: str
    steps: int
    signal: int | None = None


class StepProgressBar(RichProgressBar):
    """Lightning's rich bar, labelled by task: a run is one long epoch counted in steps."""

    def _get_train_description(self, current_epoch: int) -> str:
        return "pretraining"


def _is_worker_rank() -> bool:
    """Whether this process is a DDP worker launched by Lightning (not rank 0)."""
    return int(os.environ.get("LOCAL_RANK", "0")) > 0 or int(os.environ.get("NODE_RANK", "0")) > 0


def new_run_dir(out: Path | None) -> Path:
    """Choose the run directory of a new run, refusing to reuse a non-empty one.

    Args:
        out: Requested folder, or None for ``runs/pera-<timestamp>``.

    Returns:
        A folder that does not exist or is empty.

    Raises:
        FileExistsError: If ``out`` exists and is not empty.
    """
    if out is not None:
        require_new_folder(out, f"choose a new --out, or continue it with --resume {out}")
        return out
    base = Path("runs") / f"pera-{time.strftime('%Y%m%d-%H%M%S')}"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def _precision(config: PretrainConfig, accelerator: str) -> str:
    value = config.trainer.precision
    if value != "auto":
        return value
    cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if cuda and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def _datamodule(config: PretrainConfig) -> PretrainDataModule:
    d, t = config.data, config.trainer
    if not d.archive:
        raise GeoperaError("no archive given: pass --archive PATH (or build the sample archive)")
    if d.roi is None:
        raise GeoperaError("no ROI given: pass --roi FILE (GeoJSON, GeoPackage, WKT or bbox)")
    # One long epoch: the stream never ends before max_steps, also after a resume.
    samples = 2 * t.max_steps * d.batch_size * max(t.devices, 1)
    return PretrainDataModule(
        d.archive,
        d.roi,
        bands=d.bands,
        sources=d.sources,
        patch_size=d.patch_size,
        batch_size=d.batch_size,
        samples_per_epoch=samples,
        num_workers=d.num_workers,
        seed=d.seed,
        max_invalid=d.max_invalid,
        stats_patches=d.stats_patches,
    )


def _export_backbone(
    run: RunDir, task: PerATask, dm: PretrainDataModule, norm: dict[str, Any], steps: int
) -> None:
    cfg = task.config
    save_torch_atomic(task.model.teacher_state_dict(), run.path / "backbone.pth")
    inventory = dm.describe()
    in_chans = len(dm.band_names)
    card = BackboneCard(
        model=cfg.model.backbone,
        model_kwargs=dict(cfg.model.backbone_kwargs),
        in_chans=in_chans,
        bands=list(dm.band_names),
        token_size=task.model.patch,
        img_size=cfg.views.global_size,
        normalisation={
            "mean": norm["raw_mean"],
            "std": norm["raw_std"],
            "units": "raw pixel values of the sources, weighted by their sampling weight",
            "per_source": {
                n: {"p2": p2, "p98": p98}
                for n, p2, p98 in zip(norm["sources"], norm["p2"], norm["p98"], strict=True)
            },
        },
        resolution={s["name"]: s["res"] for s in inventory["sources"]},
        ssl_method="pera",
        roi=inventory["roi"],
        sources=[
            {k: s[k] for k in ("name", "crs", "res", "bands", "dtype", "selected_bands", "files")}
            for s in inventory["sources"]
        ],
        steps=steps,
        geopera_version=__version__,
        load_with=(
            f"timm.create_model({cfg.model.backbone!r}, in_chans={in_chans}, "
            f"img_size={cfg.views.global_size}, num_classes=0, **model_kwargs); "
            "model.load_state_dict(torch.load('backbone.pth', weights_only=True))"
        ),
    )
    card.write(run.path / "backbone.json")


def build_task(config: PretrainConfig, dm: PretrainDataModule, norm: dict[str, Any]) -> PerATask:
    """The pretraining task for a prepared data module, with seeded initial weights.

    With ``trainer.compile`` its transformer blocks are compiled (:meth:`PerA.compile_blocks`).

    Args:
        config: The config.
        dm: The prepared data module (bands, sources).
        norm: Its normalisation (see :meth:`PretrainDataModule.normalisation`).

    Returns:
        The task.
    """
    rgb = rgb_indices(dm.sources[0].source.family, dm.band_names)
    L.seed_everything(config.data.seed, workers=True, verbose=False)  # same initial weights
    task = PerATask(
        to_plain(config),
        len(dm.band_names),
        rgb,
        norm["p2"],
        norm["p98"],
        norm["mean"],
        norm["std"],
    )
    if config.trainer.compile:
        task.model.compile_blocks()
    return task


def pretrain(
    config: PretrainConfig,
    out: Path | None = None,
    resume: Path | None = None,
    progress: bool = True,
) -> PretrainResult:
    """Run (or resume) PerA pretraining.

    Args:
        config: The resolved config (for a resume: the run's own config, possibly with a new
            ``trainer.max_steps``).
        out: Run directory of a new run (None: ``runs/pera-<timestamp>``).
        resume: Run directory to continue.
        progress: Show the progress bar.

    Returns:
        The run directory, status and steps.

    Raises:
        GeoperaError: On bad input; FileExistsError for an existing ``out``.
    """
    if resume is not None:
        run = RunDir(resume)
        if not run.last_checkpoint.is_file():
            raise FileNotFoundError(
                f"{run.last_checkpoint} not found: {resume} is not a resumable run"
            )
    dm = _datamodule(config)
    dm.prepare()  # archive, ROI, bands, statistics: fails here, before anything is written
    probe = None
    if config.data.probe:
        from geopera.pretrain.probe import load_probe

        probe = load_probe(
            config.data.probe, dm.sources, len(dm.band_names), config.data.patch_size
        )
    worker = _is_worker_rank()
    if resume is None:
        if worker:
            run = RunDir(Path(os.environ[RUN_DIR_ENV]))
        else:
            run = RunDir(new_run_dir(out))
            run.path.mkdir(parents=True, exist_ok=True)
            os.environ[RUN_DIR_ENV] = str(run.path.resolve())
    norm = dm.normalisation()
    if not worker:
        dump_config(config, run.path / "config.yaml")
        write_json(
            run.path / "inventory.json", {k: v for k, v in dm.describe().items() if k != "stats"}
        )
        write_json(run.path / "stats.json", {**dm.stats, "normalisation": norm})
        run.update_status(
            status="running",
            started=time.strftime("%Y-%m-%dT%H:%M:%S"),
            command=" ".join(sys.argv),
            geopera_version=__version__,
            max_steps=config.trainer.max_steps,
        )
    task = build_task(config, dm, norm)
    rgb = task.hparams["rgb"]
    resume_step = 0
    if resume is not None:
        resume_step = int(
            torch.load(run.last_checkpoint, map_location="cpu", weights_only=True)["global_step"]
        )
    t = config.trainer
    metrics = MetricsCSV(run.path / "metrics.csv", resume_step) if not worker else None
    stop = GracefulStop(run)
    callbacks: list[L.Callback] = [
        ModelCheckpoint(
            dirpath=run.checkpoints,
            filename="step{step:06d}",
            every_n_train_steps=t.checkpoint_every,
            save_top_k=-1,
            save_last=True,
            auto_insert_metric_name=False,
        ),
        stop,
        Previews(run, t.preview_patches, rgb),
        SamplingLog(run),
    ]
    if probe is not None:
        callbacks.append(KnnProbe(run, probe, t.probe_every, t.probe_k))  # before MetricsCSV
    if metrics is not None:  # the alarm before the metrics writer, so a row shows its step
        callbacks.append(
            CollapseAlarm(
                run,
                metrics,
                config.model.prototypes,
                t.collapse_std,
                t.collapse_entropy_fraction,
                t.collapse_patience,
            )
        )
        callbacks.append(metrics)
    if progress:
        callbacks.append(StepProgressBar(leave=True))
    accelerator = t.accelerator
    strategy: Any = "auto"
    if t.devices * t.num_nodes > 1:
        backend = "gloo" if accelerator == "cpu" or not torch.cuda.is_available() else "nccl"
        strategy = DDPStrategy(process_group_backend=backend)
    trainer = L.Trainer(
        max_steps=t.max_steps,
        accelerator=accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=strategy,
        precision=_precision(config, accelerator),  # type: ignore[arg-type]
        gradient_clip_val=config.optim.clip_grad,
        callbacks=callbacks,
        logger=TensorBoardLogger(save_dir=run.path, name="tensorboard", version=""),
        plugins=[AtomicCheckpointIO()],
        use_distributed_sampler=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        log_every_n_steps=t.log_every,
        num_sanity_val_steps=0,
        default_root_dir=run.path,
    )
    dm.resume_batches = resume_step
    try:
        trainer.fit(
            task,
            datamodule=dm,
            ckpt_path=str(run.last_checkpoint) if resume else None,
            weights_only=True,  # a checkpoint is data: no code in it runs
        )
    except BaseException as err:  # a crash must not leave "running" behind
        if not worker:
            run.update_status(status="failed", error=f"{type(err).__name__}: {err}")
        raise
    steps = trainer.global_step
    if trainer.global_rank != 0:
        return PretrainResult(run.path, "worker", steps)
    if stop.requested is not None:
        run.update_status(status="interrupted", steps=steps, signal=stop.requested)
        return PretrainResult(run.path, "interrupted", steps, stop.requested)
    if steps < t.max_steps:
        run.update_status(status="failed", steps=steps)
        raise GeoperaError(f"training stopped at step {steps} of {t.max_steps}; see {run.path}")
    _export_backbone(run, task, dm, norm, steps)
    run.update_status(status="completed", steps=steps, finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
    return PretrainResult(run.path, "completed", steps)


def resume_config(run_dir: Path, max_steps: int | None) -> PretrainConfig:
    """The config of a run to resume, with an optionally extended ``max_steps``.

    Args:
        run_dir: The run directory.
        max_steps: New total steps, or None to keep the run's own.

    Returns:
        The config.

    Raises:
        FileNotFoundError: If the run has no config.yaml.
        GeoperaError: If the run is already complete and max_steps is not raised.
    """
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {run_dir} is not a geopera run directory")
    config = load_pretrain_config(path)
    status = RunDir(run_dir).status()
    if max_steps is not None:
        config.trainer.max_steps = max_steps
    if status.get("status") == "completed" and config.trainer.max_steps <= int(
        status.get("steps", 0)
    ):
        raise GeoperaError(
            f"{run_dir} is already complete ({status.get('steps')} steps); pass a larger "
            "--max-steps to train further"
        )
    return config
