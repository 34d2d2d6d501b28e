"""Lightning callbacks of a pretraining run: metrics file, collapse alarm, signals, previews."""

import csv
import math
import signal
import sys
import warnings
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar
from rich.console import Console

from geopera.core.contracts import CollapseRecord, ProbeRecord, SkippedRecord
from geopera.core.errors import ArchiveGoneError
from geopera.pretrain.rundir import RunDir
from geopera.pretrain.task import SkipCounts

METRIC_COLUMNS = [
    "step",
    "loss",
    "dino_global",
    "dino_local",
    "koleo",
    "pixel",
    "lr",
    "weight_decay",
    "teacher_temp",
    "momentum",
    "teacher_std",
    "teacher_entropy",
    "teacher_rank",
    "images_per_s",
    "data_wait",
    "rejected_rate",
    "probe_knn",
    "collapse_alarm",
    "skipped",
]


def _logged(task: Any, step: int) -> bool:
    return bool(task.is_logging_step(step))


class StepProgressBar(RichProgressBar):
    """Lightning's rich bar, labelled by task: a run is one long epoch counted in steps.

    It shows the task's :attr:`~geopera.pretrain.task.PerATask.shown` values, host strings set
    at logging steps, so drawing the bar never reads the device.
    """

    def _get_train_description(self, current_epoch: int) -> str:
        return "pretraining"

    def get_metrics(
        self, trainer: L.Trainer, pl_module: L.LightningModule
    ) -> dict[str, int | str | float | dict[str, float]]:
        """Lightning's entries plus the task's shown values."""
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        items.update(getattr(pl_module, "shown", {}))
        return items


class MetricsCSV(L.Callback):
    """Appends one row per logged step to ``RUN_DIR/metrics.csv`` (rank 0).

    ``images_per_s`` and ``data_wait`` (the share of wall time the loop waited for data) cover
    the steps since the previous row; ``skipped`` counts the steps skipped so far.

    On resume, rows at or after the resumed step (logged after the last checkpoint by the
    interrupted process) are dropped, so the file reads as one uninterrupted run.

    Args:
        path: The CSV file.
        resume_step: First step of this process (0 for a new run).
    """

    def __init__(self, path: Path, resume_step: int = 0) -> None:
        self.path = path
        self.alarm = 0
        if path.is_file():
            with open(path, newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["step"]) < resume_step]
        else:
            rows = []
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, METRIC_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Write the step's metrics."""
        step = trainer.global_step - 1
        metrics: dict[str, float] = getattr(pl_module, "last_metrics", {})
        if trainer.global_rank != 0 or not (_logged(pl_module, step) or "probe_knn" in metrics):
            return
        row = {k: metrics.get(k, "") for k in METRIC_COLUMNS}
        task: Any = pl_module
        row.update(step=step, collapse_alarm=self.alarm, skipped=task.skips.total)
        with open(self.path, "a", newline="") as fh:
            csv.DictWriter(fh, METRIC_COLUMNS).writerow(row)


class CollapseAlarm(L.Callback):
    """Warns loudly when the teacher collapses, and records it.

    A check fails on any of three collapses:

    * **constant**: the teacher-output std is below ``min_std``;
    * **sharp**: the mean entropy of the teacher probabilities is below
      ``entropy_fraction * log(K)`` (every image on one prototype);
    * **uniform**: after the teacher-temperature warm-up, that entropy is above
      ``uniform_fraction * log(K)`` (the teacher spreads every image over all prototypes
      alike: its outputs carry no information, and the loss still falls);
    * **dimensional**: the effective rank of the teacher's class tokens falls below
      ``rank_fraction`` times its value at the first check (the features span ever fewer
      directions).

    ``patience`` failed checks in a row raise the alarm.

    Args:
        run: The run directory (the alarm is written to run.json).
        metrics: The metrics writer (gets a ``collapse_alarm`` flag).
        prototypes: K.
        min_std: Std threshold.
        entropy_fraction: Low-entropy threshold as a fraction of log(K).
        patience: Failed checks in a row before the alarm.
        uniform_fraction: High-entropy threshold as a fraction of log(K).
        rank_fraction: Rank threshold as a fraction of the first check's rank.
        after_step: Steps before the uniform test applies (the temperature warm-up).
    """

    def __init__(
        self,
        run: RunDir,
        metrics: MetricsCSV,
        prototypes: int,
        min_std: float,
        entropy_fraction: float,
        patience: int,
        uniform_fraction: float = 0.97,
        rank_fraction: float = 0.25,
        after_step: int = 0,
    ) -> None:
        self.run = run
        self.metrics = metrics
        self.min_entropy = entropy_fraction * math.log(prototypes)
        self.max_entropy = uniform_fraction * math.log(prototypes)
        self.rank_fraction = rank_fraction
        self.after_step = after_step
        self.min_std = min_std
        self.patience = patience
        self.failed = 0
        self.raised = False
        self.first_rank: float | None = None

    def reasons(self, m: dict[str, float], step: int) -> list[str]:
        """The collapses a step's health signals show (empty: healthy)."""
        found = []
        if m["teacher_std"] < self.min_std:
            found.append(f"teacher-output std {m['teacher_std']:.2e} < {self.min_std:.0e}")
        if m["teacher_entropy"] < self.min_entropy:
            found.append(
                f"entropy {m['teacher_entropy']:.3f} < {self.min_entropy:.3f} (one prototype)"
            )
        if step >= self.after_step and m["teacher_entropy"] > self.max_entropy:
            found.append(
                f"entropy {m['teacher_entropy']:.3f} > {self.max_entropy:.3f} (near-uniform "
                "teacher outputs)"
            )
        rank = m.get("teacher_rank")
        if rank is not None and math.isfinite(rank):
            if self.first_rank is None:
                self.first_rank = rank
            elif rank < self.rank_fraction * self.first_rank:
                found.append(
                    f"effective rank {rank:.1f} < {self.rank_fraction:g} x {self.first_rank:.1f} "
                    "at the start (dimensional collapse)"
                )
        return found

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Check the step's health signals (when they were computed)."""
        m: dict[str, float] = getattr(pl_module, "last_metrics", {})
        if "teacher_std" not in m:
            return
        step = trainer.global_step - 1
        found = self.reasons(m, step)
        self.failed = self.failed + 1 if found else 0
        if self.failed >= self.patience and not self.raised:
            self.raised = True
            self.metrics.alarm = 1
            message = (
                f"COLLAPSE ALARM at step {step}: {'; '.join(found)} for {self.failed} checks in "
                "a row. The representation is collapsing: lower the learning rate, raise the "
                "teacher temperature warm-up, check the centring and the data (constant "
                "patches?), and judge the backbone with `geopera evaluate`."
            )
            if trainer.global_rank == 0:
                Console(stderr=True).print(f"[bold red]{message}[/bold red]")
                self.run.update_status(
                    collapse_alarm=CollapseRecord(
                        step=step,
                        reasons=found,
                        teacher_std=m["teacher_std"],
                        teacher_entropy=m["teacher_entropy"],
                        teacher_rank=m.get("teacher_rank"),
                    )
                )
            warnings.warn(message, stacklevel=1)


class GracefulStop(L.Callback):
    """On SIGINT/SIGTERM: finish the current step, save ``last.ckpt``, stop.

    A second signal stops at once (the last checkpoint stays as it was).

    Args:
        run: The run directory.
    """

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self.requested: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signum
        print(
            f"\ngeopera: {signal.Signals(signum).name} received: saving a checkpoint after this "
            "step (send again to stop at once)",
            file=sys.stderr,
        )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Install the signal handlers."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handler)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Save and stop when a signal arrived."""
        if self.requested is not None and not trainer.should_stop:
            trainer.save_checkpoint(self.run.last_checkpoint)
            trainer.should_stop = True

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """When every source of the archive is gone, save ``last.ckpt`` before stopping.

        The error comes from reading the next batch, so the model is as after the last
        completed step, which is what the checkpoint records.
        """
        if isinstance(exception, ArchiveGoneError) and trainer.global_rank == 0:
            trainer.save_checkpoint(self.run.last_checkpoint)
        self.on_train_end(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Restore the previous handlers."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


class SkippedSteps(L.Callback):
    """Reports steps skipped for non-finite values, and stops after too many in a row.

    The counts are kept on the device and read at logging steps (:class:`SkipCounts`), so a
    step that does not log waits for nothing. At a logging step, new skipped steps get a line on
    stderr and are counted in run.json (``skipped_steps``). When ``limit`` or more steps in a row
    have been skipped the run saves ``last.ckpt`` (its weights are those of the last good step:
    skipped steps change nothing) and stops; :attr:`stopped` says why.

    Args:
        run: The run directory.
        limit: Skipped steps in a row that stop the run.
    """

    def __init__(self, run: RunDir, limit: int) -> None:
        self.run = run
        self.limit = limit
        self.reported = 0
        self.stopped: str | None = None

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """At logging steps: report new skipped steps; stop after too many in a row."""
        task: Any = pl_module
        counts: SkipCounts = task.skips
        if not _logged(task, trainer.global_step - 1) or not self._report(trainer, counts):
            return
        if counts.in_a_row >= self.limit and not trainer.should_stop:
            self.stopped = (
                f"{counts.in_a_row} steps in a row (steps {counts.first_in_row}-{counts.last}) "
                f"had a {counts.reason}: stopped. Check the data (NaN/Inf pixels) or lower "
                "optim.lr"
            )
            trainer.save_checkpoint(self.run.last_checkpoint)
            trainer.should_stop = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Report the steps skipped since the last logging step (the last steps included)."""
        task: Any = pl_module
        self._report(trainer, task.read_skips())

    def _report(self, trainer: L.Trainer, counts: SkipCounts) -> bool:
        """One line and run.json for skipped steps not reported yet; whether there were any."""
        if counts.total == self.reported:
            return False
        new, self.reported = counts.total - self.reported, counts.total
        if trainer.global_rank == 0:
            print(
                f"geopera: {new} step(s) skipped up to step {counts.last}: {counts.reason}",
                file=sys.stderr,
            )
            self.run.update_status(
                skipped_steps=SkippedRecord(counts.total, counts.last, counts.reason)
            )
        return True


class Previews(L.Callback):
    """PNG previews of a run (rank 0).

    Views and masks of the first batch; PCA maps of teacher features at the start and the end;
    loss curves at the end.

    Args:
        run: The run directory.
        patches: How many patches the PCA maps show.
        rgb: Bands shown as RGB.
    """

    def __init__(self, run: RunDir, patches: int, rgb: list[int] | None) -> None:
        self.run = run
        self.patches = patches
        self.rgb = rgb
        self.images: torch.Tensor | None = None
        self.sources: torch.Tensor | None = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """At the first step of a new run: views/masks and the first PCA map."""
        if trainer.global_rank != 0 or self.images is not None:
            return
        from geopera.viz.features import plot_feature_pca
        from geopera.viz.previews import plot_views_and_masks

        self.images = batch["image"][: self.patches].detach().clone()
        sources = batch["source"][: self.patches].detach().clone()
        self.sources = sources
        if trainer.global_step > 0:
            return  # resumed run: the start previews exist already
        task: Any = pl_module
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(0)
            pairs = task.make_views({"image": self.images, "source": sources})
            masks, _ = task.model.draw_masks(pairs)
        plot_views_and_masks(
            self.images[0], pairs.student_global[0], pairs.teacher_global[0], masks,
            task.model.patch, self.run.previews / "views_and_masks.png", rgb=self.rgb,
            title="first batch: patch, one crop pair, disjoint masks",
        )  # fmt: skip
        plot_feature_pca(task, self.images, sources, self.run.previews / "pca_start.png", self.rgb)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """PCA map of the trained teacher and the loss curves."""
        if trainer.global_rank != 0 or self.images is None or self.sources is None:
            return
        from geopera.viz.features import plot_feature_pca, plot_loss_curves

        try:
            plot_feature_pca(
                pl_module, self.images, self.sources, self.run.previews / "pca_end.png", self.rgb
            )
        except RuntimeError as err:  # features of a run stopped for non-finite values
            print(f"geopera: no end-of-run PCA preview ({type(err).__name__})", file=sys.stderr)
        plot_loss_curves(self.run.path / "metrics.csv", self.run.previews / "loss_curves.png")


class SamplingLog(L.Callback):
    """Records, per rank, where the first batch came from (``sampling/rank<r>.json``).

    Lets a user (and the tests) check that DDP ranks draw different patches.

    Args:
        run: The run directory.
    """

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self.done = False

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Write the first batch's sources and bounds."""
        if self.done:
            return
        self.done = True
        from geopera.core.outputs import write_json

        folder = self.run.path / "sampling"
        folder.mkdir(exist_ok=True)
        write_json(
            folder / f"rank{trainer.global_rank}.json",
            {
                "step": trainer.global_step,
                "world_size": trainer.world_size,
                "sources": batch["source"].tolist(),
                "bounds": batch["bounds"].tolist(),
            },
        )


class KnnProbe(L.Callback):
    """kNN accuracy of frozen teacher features on a labelled probe set, every N steps (rank 0).

    The score goes to metrics.csv (``probe_knn``), TensorBoard and run.json; at the end
    ``previews/probe_knn.png`` plots it against the step.

    Args:
        run: The run directory.
        probe: The labelled samples.
        every: Steps between evaluations (also at the first and the last step).
        k: Neighbours.
    """

    def __init__(self, run: RunDir, probe: Any, every: int, k: int) -> None:
        self.run = run
        self.probe = probe
        self.every = every
        self.k = k
        self.history: list[tuple[int, float]] = []

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Evaluate on probe steps."""
        from geopera.pretrain.probe import knn_accuracy

        task: Any = pl_module
        step = trainer.global_step - 1
        task.last_metrics.pop("probe_knn", None)
        last = step + 1 >= task.schedules.total_steps
        if trainer.global_rank != 0 or not (step % self.every == 0 or last):
            return
        accuracy = knn_accuracy(task, self.probe, self.k)
        task.last_metrics["probe_knn"] = accuracy
        self.history.append((step, accuracy))
        task.publish({"train/probe_knn": accuracy}, step)
        self.run.update_status(
            probe=ProbeRecord(self.probe.classes, len(self.probe.labels), list(self.history))
        )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Plot the probe curve."""
        if trainer.global_rank != 0 or not self.history:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        steps, values = zip(*self.history, strict=True)
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot(steps, values, marker="o")
        chance = 1 / len(self.probe.classes)
        ax.axhline(chance, color="gray", linestyle="--", label=f"chance ({chance:.2f})")
        ax.set_xlabel("step")
        ax.set_ylabel(f"{self.k}-NN accuracy")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)
        ax.set_title(
            f"kNN probe: {len(self.probe.labels)} samples, {len(self.probe.classes)} classes",
            fontsize=9,
        )
        fig.tight_layout()
        self.run.previews.mkdir(parents=True, exist_ok=True)
        fig.savefig(self.run.previews / "probe_knn.png", dpi=100)
        plt.close(fig)
