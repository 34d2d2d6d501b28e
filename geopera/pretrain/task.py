"""The PerA pretraining task (a LightningModule).

Per step, on the device: raw patches are scaled per source to [0, 1], the aligned views are made
with Kornia, the PerA model computes its loss; Lightning runs backward, gradient clipping and
AdamW; then the teacher takes its EMA step. Learning rate, weight decay, teacher momentum and
temperature follow :class:`~geopera.pretrain.schedules.PerASchedules` per optimiser step.

Every step reseeds torch's generator from ``(seed, step, rank)``, so views, masks and drop-path
depend only on the step: a resumed run continues exactly as an uninterrupted one.

A step whose loss or gradients are not finite is skipped: the fused AdamW step is told so on the
device (its ``found_inf``) and leaves weights, moments and step counts as they were, and the
teacher's EMA weight is 0, so the weights stay as after the last good step (the step still counts,
so the data stream and the schedules stay where a resume expects them). Under DDP the gradients are
already averaged when this is checked, so every rank agrees. Skipped steps are counted on the
device (:class:`SkipCounts`) and read at logging steps. Checkpoints with non-finite weights are
refused (:meth:`PerATask.on_save_checkpoint`).

**No host round trips.** A step that does not log reads no device value on the host: views,
masks, stochastic depth, losses, the skip decision, clipping, AdamW and the EMA stay on the device,
so the host can queue the next step while the device works. A logging step reads all its metrics
with one transfer (:meth:`PerATask.read_metrics`).
"""

import dataclasses
from typing import Any

import lightning as L
import torch
from numpy.random import SeedSequence
from torch import Tensor

from geopera.core.errors import NonFiniteError
from geopera.core.yaml_config import from_dict
from geopera.models.pera import PerA, PerAConfig
from geopera.models.pera_output import LossParts, PerAOutput, TeacherHealth
from geopera.models.vit import decays, no_decay_names
from geopera.pretrain.config import PretrainConfig
from geopera.pretrain.metrics import SkipCounts, StepInterval, StepMetrics
from geopera.pretrain.schedules import PerASchedules
from geopera.transforms.normalise import scale_unit
from geopera.transforms.views import AlignedViews, CropPairs


def step_seed(seed: int, step: int, rank: int) -> int:
    """Seed of one optimiser step on one rank.

    Args:
        seed: Base seed.
        step: Optimiser step.
        rank: Process rank.

    Returns:
        A 63-bit seed.
    """
    return int(SeedSequence([seed, step, rank]).generate_state(2, dtype="uint64")[0] >> 1)


def build_model(config: PretrainConfig, in_chans: int) -> PerA:
    """The PerA model of a config (its ``model`` section plus bands and view sizes).

    Args:
        config: The pretraining config.
        in_chans: Number of bands.

    Returns:
        The model.
    """
    v = config.views
    settings = {f.name: getattr(config.model, f.name) for f in dataclasses.fields(config.model)}
    return PerA(
        PerAConfig(
            **settings,
            in_chans=in_chans,
            global_size=v.global_size,
            n_global=v.n_global,
            n_local=v.n_local,
        )
    )


def build_views(
    config: PretrainConfig, mean: Tensor, std: Tensor, rgb: list[int] | None
) -> AlignedViews:
    """The view maker of a config (its ``views`` section is a :class:`ViewsConfig`).

    Args:
        config: The pretraining config.
        mean: (C,) mean of the [0, 1]-scaled data.
        std: (C,) std of the [0, 1]-scaled data.
        rgb: RGB band indices, or None.

    Returns:
        The view maker.
    """
    return AlignedViews(config.views, mean, std, rgb=rgb)


def non_finite(state: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors of a state dict that hold NaN or Inf.

    Args:
        state: A state dict.

    Returns:
        The names (empty when every value is finite).
    """
    return [
        k
        for k, v in state.items()
        if isinstance(v, Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]


class PerATask(L.LightningModule):
    """PerA pretraining.

    Args:
        config: The pretraining config as a nested dict (see :mod:`geopera.pretrain.config`).
        in_chans: Number of bands.
        rgb: RGB band indices, or None.
        p2: (S, C) per-source 2nd percentiles of the raw bands.
        p98: (S, C) per-source 98th percentiles.
        mean: (C,) mean of the [0, 1]-scaled data.
        std: (C,) std of the [0, 1]-scaled data.
    """

    p2: Tensor
    p98: Tensor
    skip_state: Tensor
    step_ok: Tensor

    def __init__(
        self,
        config: dict[str, Any],
        in_chans: int,
        rgb: list[int] | None,
        p2: list[list[float]],
        p98: list[list[float]],
        mean: list[float],
        std: list[float],
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.config = from_dict(config, PretrainConfig)
        self.model = build_model(self.config, in_chans)
        self.views = build_views(self.config, torch.tensor(mean), torch.tensor(std), rgb)
        self.register_buffer("p2", torch.tensor(p2, dtype=torch.float32))
        self.register_buffer("p98", torch.tensor(p98, dtype=torch.float32))
        self.schedules = PerASchedules.of(self.config.optim, self.config.trainer.max_steps)
        self.last_output: PerAOutput | None = None
        #: The metrics of the last logging step (empty after a step that did not log).
        #: What the last step measured (None unless it was a logging step).
        self.step_metrics: StepMetrics | None = None
        #: Skipped steps as read at the last logging step.
        self.skips = SkipCounts(0, 0, -1, -1, None)
        #: What the progress bar shows (set at logging steps).
        self.shown: dict[str, str] = {}
        # on the device: [total, in a row, first in row, last, reason code] and this step's
        # verdict; read only at logging steps
        self.register_buffer("skip_state", torch.tensor([0, 0, -1, -1, 0]), persistent=False)
        self.register_buffer("step_ok", torch.ones((), dtype=torch.bool), persistent=False)
        self._loss_finite: Tensor | None = None
        self._step = 0
        self._interval = StepInterval()

    def is_logging_step(self, step: int) -> bool:
        """Whether ``step`` logs (and so may read device values on the host)."""
        return step % self.config.trainer.log_every == 0 or step + 1 >= self.schedules.total_steps

    def make_views(self, batch: dict[str, Tensor], seed: int | None = None) -> CropPairs:
        """Scale a batch per source on the device and make its crop pairs.

        Args:
            batch: ``image`` (B, C, H, W) raw, in the archive's stored dtype; ``source`` (B,).
            seed: Seed of the views (see :class:`AlignedViews`).

        Returns:
            The crop pairs.
        """
        source = batch["source"].long()
        unit = scale_unit(batch["image"], self.p2[source], self.p98[source])  # (B, C, H, W)
        return self.views(unit, seed=seed)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """One PerA step: views, masks, teacher, student, loss.

        Args:
            batch: A batch from the pretraining data module.
            batch_idx: Index within the epoch.

        Returns:
            The loss.
        """
        step = self.global_step
        self._step = step
        seed = step_seed(self.config.data.seed, step, self.global_rank)
        torch.manual_seed(seed)
        pairs = self.make_views(batch, seed)
        log_now = self.is_logging_step(step)
        out = self.model(
            pairs, teacher_temp=self.schedules.teacher_temp_at(step), with_health=log_now
        )
        self.last_output = out
        self._loss_finite = torch.isfinite(out.loss.detach())
        self._interval.add_step(batch["image"].shape[0] * self.trainer.world_size)
        self.step_metrics = self.read_metrics(out, batch, step) if log_now else None
        if self.step_metrics is not None:
            values = self.step_metrics.values()
            self.publish({f"train/{k}": v for k, v in values.items()}, step)
            self.shown = self.step_metrics.shown()
        return out.loss

    def publish(self, metrics: dict[str, float], step: int) -> None:
        """Send host values to the run's logger (TensorBoard) at ``step``.

        Not through ``self.log``: Lightning keeps logged values as device tensors and reads
        them back at every step for the progress bar, a host round trip per value and step.
        """
        if self.logger is not None and self.global_rank == 0:
            self.logger.log_metrics(metrics, step=step)

    def read_metrics(self, out: PerAOutput, batch: dict[str, Tensor], step: int) -> StepMetrics:
        """The metrics of a logging step, read from the device in one transfer.

        Args:
            out: The step's model output (with health).
            batch: The step's batch.
            step: The step.

        Returns:
            Loss and its parts, schedules, rates and health; the skipped-step counts (as of
            the previous step) also go to :attr:`skips`.
        """
        if out.health is None:
            raise RuntimeError("a logging step needs the model's health signals (with_health)")
        parts, health = _fields_of(out.parts), _fields_of(out.health)
        rejected = batch["rejected"].sum()
        values = [out.loss, *parts, *health, rejected]
        stacked = torch.stack([v.detach().float() for v in values])  # (n,)
        read = torch.cat([stacked, self.skip_state.float()]).tolist()  # the one synchronisation
        self.skips = SkipCounts.of(read[len(values) :])
        loss, rest = read[0], read[1 : len(values)]
        n_parts, n_health = len(parts), len(health)
        images_per_s, data_wait = self._interval.close()
        rejected_count = rest[n_parts + n_health]
        return StepMetrics(
            step=step,
            loss=loss,
            parts=LossParts(*rest[:n_parts]),
            schedules=self.schedules.at(step),
            health=TeacherHealth(*rest[n_parts : n_parts + n_health]),
            images_per_s=images_per_s,
            data_wait=data_wait,
            rejected_rate=rejected_count / (rejected_count + batch["image"].shape[0]),
            skipped=self.skips.total,
        )

    def read_skips(self) -> SkipCounts:
        """Read the skip counters now (a host-device synchronisation: at the end of a run)."""
        self.skips = SkipCounts.of(self.skip_state.tolist())
        return self.skips

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Set this step's learning rate and weight decay; note the wait for this batch."""
        self._interval.batch_arrived()
        step = self.global_step
        frozen = step < self.config.optim.freeze_backbone_steps  # only the heads learn yet
        for group in self.optimizers().optimizer.param_groups:  # type: ignore[union-attr]
            group["lr"] = (
                0.0 if frozen and group.get("backbone") else self.schedules.learning_rate(step)
            )
            if group["weight_decay"] > 0 or group.get("decay", False):
                group["weight_decay"] = self.schedules.weight_decay_at(step)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Note the end of the step (the wait for the next batch starts here)."""
        self._interval.step_done()

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: int | float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip by the global norm and decide, on the device, whether the step is skipped.

        A step whose loss or gradient norm is not finite is skipped: the fused AdamW step gets
        ``found_inf`` and changes nothing, and the teacher keeps its weights. Nothing is read on
        the host.

        Args:
            optimizer: The optimiser (its parameters' gradients are clipped).
            gradient_clip_val: Largest global gradient norm (None or 0: no clipping).
            gradient_clip_algorithm: Only ``"norm"`` is supported.
        """
        grads = [
            p.grad
            for group in optimizer.param_groups
            for p in group["params"]
            if p.grad is not None
        ]
        loss_ok = self._loss_finite if self._loss_finite is not None else self.step_ok
        if grads:
            norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
            grads_ok = torch.isfinite(norm)
            if gradient_clip_val:
                torch.nn.utils.clip_grads_with_norm_(grads, gradient_clip_val, norm)
        else:
            grads_ok = torch.zeros_like(self.step_ok)
        self.step_ok.copy_(loss_ok & grads_ok)
        # read by the fused AdamW step, as GradScaler's found_inf is
        optimizer.found_inf = (~self.step_ok).float()  # type: ignore[attr-defined]
        self._count_skip(loss_ok)

    def _count_skip(self, loss_ok: Tensor) -> None:
        """Update the on-device skip counters with this step's verdict (branch-free)."""
        skipped = (~self.step_ok).long()
        total, in_a_row, first, last, code = self.skip_state.unbind()
        step = torch.full_like(total, self._step)
        reason = torch.where(loss_ok, 2, 1)
        self.skip_state.copy_(
            torch.stack(
                [
                    total + skipped,
                    (in_a_row + 1) * skipped,
                    torch.where(skipped.bool(), torch.where(in_a_row > 0, first, step), -1),
                    torch.where(skipped.bool(), step, last),
                    torch.where(skipped.bool(), reason, code),
                ]
            )
        )

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """AdamW step, then the teacher's EMA step (neither changes anything on a skipped step).

        The EMA happens here, not in ``on_train_batch_end``: Lightning runs callbacks (and so
        checkpoint saving) before the module's batch-end hook, and a checkpoint must hold the
        teacher after this step's update.
        """
        super().optimizer_step(*args, **kwargs)
        momentum = self.schedules.momentum_at(self._step)
        self.model.update_teacher(momentum, self.step_ok)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse to write a checkpoint whose weights are not finite (the last one stays).

        Args:
            checkpoint: The checkpoint being written.

        Raises:
            NonFiniteError: If any weight is NaN or infinite.
        """
        bad = non_finite(checkpoint["state_dict"])
        if bad:
            raise NonFiniteError(
                f"refusing to write a checkpoint at step {self.global_step}: {len(bad)} "
                f"weight tensors are not finite (e.g. {bad[0]}); the previous checkpoint is kept"
            )

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """AdamW; no weight decay on biases, norms, position embedding and tokens."""
        o = self.config.optim
        split = o.freeze_backbone_steps > 0  # backbone groups apart (old runs keep two groups)
        found: dict[tuple[bool, bool], list[Tensor]] = {}
        exempt = no_decay_names(self.model)
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            backbone = split and name.startswith("student.backbone.")
            found.setdefault((decays(name, param, exempt), backbone), []).append(param)
        groups = [
            {"params": params, "weight_decay": o.weight_decay if decay else 0.0, "decay": decay,
             "backbone": backbone}
            for (decay, backbone), params in sorted(found.items(), reverse=True)
        ]  # fmt: skip
        # Fused AdamW: the fastest (3x on the CPU), and it skips a step on the device (found_inf).
        # Clipping is ours (configure_gradient_clipping), so Lightning's mixed-precision plugins,
        # which refuse to clip for an optimiser that unscales itself, never see it.
        return torch.optim.AdamW(
            groups, lr=o.lr, betas=(o.betas[0], o.betas[1]), eps=o.eps, fused=True
        )


def _fields_of(record: Any) -> list[Tensor]:
    """A record's field values in order, the tensors themselves (``astuple`` would copy them)."""
    return [getattr(record, f.name) for f in dataclasses.fields(record)]
