"""``geopera pretrain``: from an archive and an ROI to a pretrained backbone in a run directory.

Order of work: resolve and check the data first (archive, ROI, bands, statistics), so bad input
fails before anything is written; then create the run directory, train, and export the teacher
backbone. ``run.json`` says ``completed`` only once ``backbone.pth`` is written.
"""

import dataclasses
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch

from geopera import __version__
from geopera.core.contracts import Resume, RunState
from geopera.core.errors import (
    ArchiveGoneError,
    DiskFullError,
    GeoperaError,
    NonFiniteError,
)
from geopera.core.normalisation import Normalisation
from geopera.core.outputs import (
    remove_stale_partials,
    require_new_folder,
    write_json,
)
from geopera.core.ranks import is_worker_rank, launched_outside
from geopera.core.yaml_config import dump_config, to_plain
from geopera.data.sampling.badfiles import BadFiles
from geopera.data.sampling.datamodule import PretrainDataModule
from geopera.data.sampling.shards import PretrainData, ShardDataModule
from geopera.models.loading import BackboneSource
from geopera.pretrain.config import PretrainConfig, load_pretrain_config
from geopera.pretrain.export import export_backbone, trained_normalisation
from geopera.pretrain.init import data_channels, init_source, load_init, with_init_architecture
from geopera.pretrain.rate import run_learning_rate, tell_rate
from geopera.pretrain.rundir import LOCK_FILE, RunDir
from geopera.pretrain.task import PerATask
from geopera.pretrain.trainer import build_callbacks, build_trainer

#: Environment variable through which rank 0 hands the run directory to DDP workers.
RUN_DIR_ENV = "GEOPERA_RUN_DIR"


@dataclass
class PretrainResult:
    """What a pretraining call produced.

    Attributes:
        run_dir: The run directory.
        status: ``COMPLETED`` or ``INTERRUPTED``.
        steps: Optimiser steps done.
        signal: The signal that interrupted the run, if any.
    """

    run_dir: Path
    status: RunState
    steps: int
    signal: int | None = None


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
        if out.is_dir() and [p.name for p in out.iterdir()] == [LOCK_FILE]:
            with RunDir(out).lock():  # refuses a live owner; a dead one's lock is taken over
                pass
        require_new_folder(out, f"choose a new --out, or continue it with --resume {out}")
        return out
    base = Path("runs") / f"pera-{time.strftime('%Y%m%d-%H%M%S')}"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def _datamodule(config: PretrainConfig) -> PretrainData:
    d, t = config.data, config.trainer
    if d.shards:
        return ShardDataModule(d.shards, d, d.probe)
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
        cache=d.cache,
        cache_gb=d.cache_gb,
    )


def build_task(
    config: PretrainConfig,
    dm: PretrainData,
    norm: Normalisation,
    fresh: bool = True,
    init: BackboneSource | None = None,
) -> PerATask:
    """The pretraining task for a prepared data module, with seeded initial weights.

    With ``trainer.compile`` its transformer blocks are compiled (:meth:`PerA.compile_blocks`).

    Args:
        config: The config.
        dm: The prepared data module (bands, sources).
        norm: Its normalisation (see :meth:`PretrainDataModule.normalisation`).
        fresh: A new run: student and teacher start from ``trainer.init`` when it is set (a
            resume restores them from its checkpoint).
        init: ``trainer.init``'s weights when the caller has read them (None: read here).

    Returns:
        The task.
    """
    rgb = dm.rgb()
    L.seed_everything(config.data.seed, workers=True, verbose=False)  # same initial weights
    task = PerATask(
        to_plain(config),
        len(dm.band_names),
        rgb,
        [list(row) for row in norm.p2],
        [list(row) for row in norm.p98],
        list(norm.mean),
        list(norm.std),
    )
    if fresh and config.trainer.init is not None:
        source = (
            init if init is not None else init_source(config.trainer.init, config.model.backbone)
        )
        channels = data_channels(source, dm.band_names, dm.band_identities())
        load_init(task.model, source, len(dm.band_names), channels)
    if config.trainer.compile:
        task.model.compile_blocks()
    return task


def pretrain(
    config: PretrainConfig,
    out: Path | None = None,
    resume: Path | None = None,
    progress: bool = True,
    changes: dict[str, list[Any]] | None = None,
) -> PretrainResult | None:
    """Run (or resume) PerA pretraining.

    While it runs, the run directory is locked to this process (:meth:`RunDir.lock`).

    Args:
        config: The resolved config (for a resume: the run's own config, possibly with keys
            that are safe to change, see :data:`SAFE_ON_RESUME`).
        out: Run directory of a new run (None: ``runs/pera-<timestamp>``).
        resume: Run directory to continue.
        progress: Show the progress bar.
        changes: For a resume, the config keys changed from the run's own (``{key: [old,
            new]}``), recorded in run.json.

    Returns:
        The run directory, status and steps; None on the ranks other than 0 of a
        multi-process run (rank 0 reports).

    Raises:
        GeoperaError: On bad input; FileExistsError for an existing ``out``; RunLockedError when
            another process works on the run; DiskFullError, NonFiniteError, ArchiveGoneError
            when the run stopped for those (each message says what was kept).
    """
    worker = is_worker_rank()
    if resume is not None:
        run = RunDir(resume)
        with run.lock() if not worker else nullcontext():
            if run.last_checkpoint.is_file():
                return _pretrain(config, run, progress, True, changes)
            if not worker:  # stopped before its first checkpoint: nothing to keep
                print(f"geopera: {resume} has no checkpoint yet: starting it over", file=sys.stderr)
            return _pretrain(config, run, progress, False, None)
    init = init_source(config.trainer.init, config.model.backbone) if config.trainer.init else None
    config = with_init_architecture(config, init)  # --init (read once): its architecture
    if launched_outside() and out is None:
        raise GeoperaError(
            "under torchrun or srun every rank must write the same run: give --out RUN_DIR "
            "(on a filesystem every node sees)"
        )
    dm = _datamodule(config)
    dm.prepare()  # archive, ROI, bands, statistics: fails here, before anything is written
    if worker:  # torchrun's and srun's ranks name the run (--out); Lightning's learn it from rank 0
        outside = launched_outside() and out is not None
        run = RunDir(Path(str(out)) if outside else Path(os.environ[RUN_DIR_ENV]))
        return _pretrain(config, run, progress, False, None, dm, init)
    run = RunDir(new_run_dir(out))
    run.path.mkdir(parents=True, exist_ok=True)
    os.environ[RUN_DIR_ENV] = str(run.path.resolve())  # for the ranks Lightning starts
    try:
        with run.lock():
            return _pretrain(config, run, progress, False, None, dm, init)
    finally:  # a caller that runs again in this process must not inherit this run
        os.environ.pop(RUN_DIR_ENV, None)


def _last_step(run: RunDir) -> int | None:
    """The step of ``last.ckpt``, or None when there is none (memory-mapped: reads little)."""
    if not run.last_checkpoint.is_file():
        return None
    ckpt = torch.load(run.last_checkpoint, map_location="cpu", weights_only=True, mmap=True)
    return int(ckpt["global_step"])


def _kept(run: RunDir) -> str:
    step = _last_step(run)
    if step is None:
        return "no checkpoint was written yet"
    return (
        f"kept: {run.last_checkpoint} (step {step}); continue with "
        f"`geopera pretrain --resume {run.path}`"
    )


def _pretrain(
    config: PretrainConfig,
    run: RunDir,
    progress: bool,
    resumed: bool,
    changes: dict[str, list[Any]] | None,
    dm: PretrainData | None = None,
    init: BackboneSource | None = None,
) -> PretrainResult | None:
    """The body of :func:`pretrain` once the run is locked (``dm``, ``init``: made if None)."""
    if dm is None:
        dm = _datamodule(config)
        dm.prepare()
    probe = _probe(config, dm)
    norm = dm.normalisation()
    resume_step = (_last_step(run) or 0) if resumed else 0
    rate = run_learning_rate(config, run, resumed)
    if not is_worker_rank():
        _record_start(
            run, config, dm, norm, Resume(resume_step, changes or {}) if resumed else None
        )
        tell_rate(run, rate, resumed)
    dm.bad_files = BadFiles(run.problems)
    # the task trains with the absolute rate: checkpoints record what the optimiser used
    config = dataclasses.replace(
        config, optim=dataclasses.replace(config.optim, lr=rate.effective, lr_scaling="none")
    )
    task = build_task(config, dm, norm, fresh=not resumed, init=init)
    hooks = build_callbacks(config, run, task.hparams["rgb"], probe, progress, resume_step)
    trainer = build_trainer(config, run, hooks.callbacks, progress)
    dm.resume_batches = resume_step
    _fit(trainer, task, dm, run, resumed)
    steps = trainer.global_step
    if trainer.global_rank != 0:
        return None  # rank 0 reports
    if hooks.stop.requested is not None:
        run.update_status(status=RunState.INTERRUPTED, steps=steps, signal=hooks.stop.requested)
        return PretrainResult(run.path, RunState.INTERRUPTED, steps, hooks.stop.requested)
    if hooks.skipped.stopped is not None:
        run.update_status(status=RunState.FAILED, steps=steps, error=hooks.skipped.stopped)
        raise NonFiniteError(f"{hooks.skipped.stopped}; {_kept(run)}")
    if steps < config.trainer.max_steps:
        run.update_status(status=RunState.FAILED, steps=steps)
        raise GeoperaError(
            f"training stopped at step {steps} of {config.trainer.max_steps}; see {run.path}"
        )
    export_backbone(run, task, dm, trained_normalisation(task, dm), steps)
    finished = time.strftime("%Y-%m-%dT%H:%M:%S")
    run.update_status(status=RunState.COMPLETED, steps=steps, finished=finished)
    return PretrainResult(run.path, RunState.COMPLETED, steps)


def _probe(config: PretrainConfig, dm: PretrainData) -> Any:
    """The kNN probe set of ``data.probe``, or None (``--shards`` refuses a probe up front)."""
    if not config.data.probe or not isinstance(dm, PretrainDataModule):
        return None
    from geopera.pretrain.probe import load_probe

    return load_probe(config.data.probe, dm.sources, len(dm.band_names), config.data.patch_size)


def _record_start(
    run: RunDir,
    config: PretrainConfig,
    dm: PretrainData,
    norm: Normalisation,
    resume: Resume | None,
) -> None:
    """Write what the run starts from (config, inventory, statistics) and mark it running."""
    remove_stale_partials(run.last_checkpoint)  # a checkpoint write cut by SIGKILL
    dump_config(config, run.path / "config.yaml")
    inventory = {k: v for k, v in dm.describe().items() if k != "stats"}
    write_json(run.path / "inventory.json", inventory)
    write_json(run.path / "stats.json", {**dm.stats.to_dict(), "normalisation": asdict(norm)})
    fields: dict[str, Any] = {}
    if resume is not None:
        earlier = run.status()
        fields["resumes"] = [*(earlier.resumes if earlier else []), resume]
    else:
        fields["started"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    run.update_status(
        status=RunState.RUNNING,
        command=" ".join(sys.argv),
        geopera_version=__version__,
        max_steps=config.trainer.max_steps,
        **fields,
    )


def _fit(trainer: L.Trainer, task: PerATask, dm: PretrainData, run: RunDir, resumed: bool) -> None:
    """Train; a crash records ``failed`` and says what is kept and how to continue."""
    try:
        trainer.fit(
            task,
            datamodule=dm,
            ckpt_path=str(run.last_checkpoint) if resumed else None,
            weights_only=True,  # a checkpoint is data: no code in it runs
        )
    except BaseException as err:  # a crash must not leave "running" behind
        if is_worker_rank():
            raise
        run.record_failure(err)
        if isinstance(err, ArchiveGoneError):
            raise ArchiveGoneError(
                f"every source of the archive became unreadable during the run (see "
                f"{run.problems}): stopped; {_kept(run)} once the files are back"
            ) from err
        if isinstance(err, DiskFullError):
            raise DiskFullError(f"{err}. Pretraining stopped; {_kept(run)}") from err
        if isinstance(err, NonFiniteError):
            raise NonFiniteError(f"{err}. Pretraining stopped; {_kept(run)}") from err
        raise


def resume_config(
    run_dir: Path, max_steps: int | None, check_complete: bool = True
) -> PretrainConfig:
    """The config of a run to resume, with an optionally extended ``max_steps``.

    Args:
        run_dir: The run directory.
        max_steps: New total steps, or None to keep the run's own.
        check_complete: Refuse a complete run unless ``max_steps`` goes beyond its steps.

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
    if (
        check_complete
        and status is not None
        and status.status is RunState.COMPLETED
        and config.trainer.max_steps <= (status.steps or 0)
    ):
        raise GeoperaError(
            f"{run_dir} is already complete ({status.steps} steps); pass a larger "
            "--max-steps to train further"
        )
    return config
