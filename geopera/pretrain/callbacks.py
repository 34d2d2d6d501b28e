"""Lightning callbacks of a pretraining run: signals, skipped steps, previews, sampling, probe.

The metrics file and the progress bar are in :mod:`geopera.pretrain.metrics`, the collapse alarm
in :mod:`geopera.pretrain.health`.
"""

import signal
import sys
from types import FrameType
from typing import Any, cast

import lightning as L
import torch

from geopera.core.contracts import ProbeRecord, SkippedRecord
from geopera.core.errors import ArchiveGoneError
from geopera.pretrain.metrics import SkipCounts, TaskView
from geopera.pretrain.rundir import RunDir


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
        task = cast(TaskView, pl_module)
        counts: SkipCounts = task.skips
        if not task.is_logging_step(trainer.global_step - 1) or not self._report(trainer, counts):
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
        task = cast(TaskView, pl_module)
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
        task = cast(TaskView, pl_module)
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(0)
            pairs = task.make_views({"image": self.images, "source": sources})
            masks, _ = task.model.draw_masks(pairs)
        plot_views_and_masks(
            self.images[0],
            pairs.student_global[0],
            pairs.teacher_global[0],
            masks,
            task.model.token_size,
            self.run.previews / "views_and_masks.png",
            rgb=self.rgb,
            title="first batch: patch, one crop pair, disjoint masks",
        )
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
        #: Its ``metrics.csv`` column; a score at a step that does not log writes its own row.
        self.column, self.makes_row = "probe_knn", True
        self.k = k
        self.history: list[tuple[int, float]] = []
        self._step: int = -1
        self._score: float | None = None

    def at_step(self, trainer: L.Trainer, task: TaskView, step: int) -> float | None:
        """The probe's accuracy at ``step``, evaluated once (None at steps that do not probe)."""
        if step != self._step:
            self._step, self._score = step, self._evaluate(trainer, task, step)
        return self._score

    def _evaluate(self, trainer: L.Trainer, task: TaskView, step: int) -> float | None:
        from geopera.pretrain.probe import knn_accuracy

        last = step + 1 >= task.schedules.total_steps
        if trainer.global_rank != 0 or not (step % self.every == 0 or last):
            return None
        accuracy = knn_accuracy(task, self.probe, self.k)
        self.history.append((step, accuracy))
        task.publish({"train/probe_knn": accuracy}, step)
        self.run.update_status(
            probe=ProbeRecord(self.probe.classes, len(self.probe.labels), list(self.history))
        )
        return accuracy

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Evaluate on probe steps."""
        self.at_step(trainer, cast(TaskView, pl_module), trainer.global_step - 1)

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
