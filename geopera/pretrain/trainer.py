"""The Lightning trainer of a run: its callbacks (checkpoints, stop, health, metrics), settings."""

from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import DDPStrategy

from geopera.core.checkpoints import AtomicCheckpointIO
from geopera.core.quiet import quiet_lightning
from geopera.core.ranks import is_worker_rank
from geopera.pretrain.callbacks import GracefulStop, KnnProbe, Previews, SamplingLog, SkippedSteps
from geopera.pretrain.config import PretrainConfig
from geopera.pretrain.health import CollapseAlarm, CollapseLimits
from geopera.pretrain.metrics import MetricsCSV, StepAddition, StepProgressBar
from geopera.pretrain.rundir import RunDir
from geopera.pretrain.schedules import lr_far_above_rule


def precision(config: PretrainConfig, accelerator: str) -> str:
    """``trainer.precision``, with ``auto`` as bf16-mixed on GPUs that have it, else 32-true."""
    value = config.trainer.precision
    if value != "auto":
        return value
    cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if cuda and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


class Checkpoints(ModelCheckpoint):
    """``step*.ckpt`` every ``checkpoint_every`` steps and ``last.ckpt``, the run's final step.

    Lightning's ``save_last`` copies the last periodic checkpoint: a run of 1602 steps saved
    every 321 would leave ``last.ckpt`` at step 1284, and ``--resume --max-steps`` would train
    its last 318 steps again. A run that reaches ``max_steps`` saves its end as ``last.ckpt``.

    Args:
        run: The run directory.
        every: ``trainer.checkpoint_every``.
    """

    def __init__(self, run: RunDir, every: int) -> None:
        super().__init__(
            dirpath=run.checkpoints,
            filename="step{step:06d}",
            every_n_train_steps=every,
            save_top_k=-1,
            save_last=True,
            auto_insert_metric_name=False,
        )
        self.last = run.last_checkpoint
        self.every = every

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Save the final step as ``last.ckpt`` when the run reached ``max_steps`` off-period."""
        super().on_train_end(trainer, pl_module)
        step = trainer.global_step
        if 0 < trainer.max_steps <= step and step % self.every:
            trainer.save_checkpoint(self.last)  # every rank: the strategy writes on rank 0


@dataclass
class RunHooks:
    """The callbacks of a run, with the two whose state decides how the run ended.

    Attributes:
        stop: Saves and stops on SIGINT/SIGTERM (``requested`` holds the signal).
        skipped: Reports skipped steps and stops after too many in a row (``stopped``).
        callbacks: Every callback, for the trainer.
    """

    stop: GracefulStop
    skipped: SkippedSteps
    callbacks: list[L.Callback]


def build_callbacks(
    config: PretrainConfig,
    run: RunDir,
    rgb: list[int] | None,
    probe: Any,
    progress: bool,
    resume_step: int,
) -> RunHooks:
    """The callbacks of a run (rank 0 also writes metrics and watches for collapse).

    Args:
        config: The config.
        run: The run directory.
        rgb: Indices of the R, G, B bands (previews), or None.
        probe: The kNN probe set, or None.
        progress: Show a progress bar.
        resume_step: The step a resumed run continues from (0 for a new run).

    Returns:
        The callbacks.
    """
    t = config.trainer
    stop, skipped = GracefulStop(run), SkippedSteps(run, t.max_skipped_steps)
    checkpoints = Checkpoints(run, t.checkpoint_every)
    callbacks: list[L.Callback] = [
        checkpoints,
        stop,
        skipped,
        Previews(run, t.preview_patches, rgb),
        SamplingLog(run),
    ]
    knn = KnnProbe(run, probe, t.probe_every, t.probe_k) if probe is not None else None
    callbacks += [knn] if knn is not None else []
    if not is_worker_rank():
        alarm = _collapse_alarm(config, run)
        additions: list[StepAddition] = [alarm] if knn is None else [knn, alarm]
        callbacks += [alarm, MetricsCSV(run.path / "metrics.csv", resume_step, additions)]
    if progress:
        callbacks.append(StepProgressBar(leave=True))
    return RunHooks(stop, skipped, callbacks)


def _collapse_alarm(config: PretrainConfig, run: RunDir) -> CollapseAlarm:
    t = config.trainer
    limits = CollapseLimits.of(
        config.model.prototypes,
        t.collapse_std,
        t.collapse_entropy_fraction,
        uniform_fraction=t.collapse_uniform_fraction,
        rank_fraction=t.collapse_rank_fraction,
        after_step=config.optim.teacher_temp_warmup_steps,
    )
    global_batch = config.data.batch_size * t.devices * t.num_nodes
    cause = lr_far_above_rule(config.optim.lr, global_batch)  # the run's own (absolute) rate
    return CollapseAlarm(run, limits, t.collapse_patience, cause)


def build_trainer(
    config: PretrainConfig, run: RunDir, callbacks: list[L.Callback], progress: bool
) -> L.Trainer:
    """The Lightning trainer: DDP past one device, atomic checkpoints, TensorBoard logs.

    Args:
        config: The config.
        run: The run directory.
        callbacks: From :func:`build_callbacks`.
        progress: Show a progress bar.

    Returns:
        The trainer.
    """
    quiet_lightning()
    t = config.trainer
    strategy: Any = "auto"
    if t.devices * t.num_nodes > 1:
        cpu = t.accelerator == "cpu" or not torch.cuda.is_available()
        strategy = DDPStrategy(process_group_backend="gloo" if cpu else "nccl")
    return L.Trainer(
        max_steps=t.max_steps,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=strategy,
        precision=precision(config, t.accelerator),  # type: ignore[arg-type]
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
