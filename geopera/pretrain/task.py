"""The PerA pretraining task (a LightningModule).

Per step, on the device: raw patches are scaled per source to [0, 1], the aligned views are made
with Kornia, the PerA model computes its loss; Lightning runs backward, gradient clipping and
AdamW; then the teacher takes its EMA step. Learning rate, weight decay, teacher momentum and
temperature follow :class:`~geopera.pretrain.schedules.PerASchedules` per optimiser step.

Every step reseeds torch's generator from ``(seed, step, rank)``, so views, masks and drop-path
depend only on the step: a resumed run continues exactly as an uninterrupted one.

A step whose loss or gradients are not finite is skipped: its gradients are dropped before the
optimiser sees them and the teacher takes no EMA step, so the weights stay as after the last good
step (the step still counts, so the data stream and the schedules stay where a resume expects
them). Under DDP the gradients are already averaged when this is checked, so every rank agrees.
Checkpoints with non-finite weights are refused (:meth:`PerATask.on_save_checkpoint`).
"""

import dataclasses
import time
from typing import Any

import lightning as L
import torch
from numpy.random import SeedSequence
from torch import Tensor

from geopera.core.config import from_dict
from geopera.core.errors import NonFiniteError
from geopera.models.pera import PerA, PerAConfig, PerAOutput
from geopera.pretrain.config import PretrainConfig
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
        k for k, v in state.items()
        if isinstance(v, Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]  # fmt: skip


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
        self.last_metrics: dict[str, float] = {}
        #: Whether the current step was skipped (non-finite loss or gradients), and why.
        self.skipped: str | None = None
        self._loss_finite = True
        self._step = 0
        self._tick = time.perf_counter()

    def make_views(self, batch: dict[str, Tensor]) -> CropPairs:
        """Scale a batch per source and make its crop pairs.

        Args:
            batch: ``image`` (B, C, H, W) raw, ``source`` (B,).

        Returns:
            The crop pairs.
        """
        source = batch["source"].long()
        unit = scale_unit(batch["image"], self.p2[source], self.p98[source])  # (B, C, H, W)
        return self.views(unit)

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
        torch.manual_seed(step_seed(self.config.data.seed, step, self.global_rank))
        pairs = self.make_views(batch)
        log_now = (
            step % self.config.trainer.log_every == 0 or step + 1 >= self.schedules.total_steps
        )
        out = self.model(
            pairs, teacher_temp=self.schedules.teacher_temp_at(step), with_health=log_now
        )
        self.last_output = out
        self.skipped = None
        self._loss_finite = bool(torch.isfinite(out.loss.detach()))
        batch_size = batch["image"].shape[0]
        rejected = float(batch["rejected"].sum())
        now = time.perf_counter()
        images_per_s = batch_size * self.trainer.world_size / max(now - self._tick, 1e-9)
        self._tick = now
        metrics = {
            "loss": float(out.loss.detach()),
            **{k: float(v.detach()) for k, v in out.parts.items()},
            "lr": self.schedules.learning_rate(step),
            "weight_decay": self.schedules.weight_decay_at(step),
            "teacher_temp": self.schedules.teacher_temp_at(step),
            "momentum": self.schedules.momentum_at(step),
            "images_per_s": images_per_s,
            "rejected_rate": rejected / (rejected + batch_size),
            **{k: float(v) for k, v in out.health.items()},
        }
        self.last_metrics = metrics
        self.log("loss", metrics["loss"], prog_bar=True, batch_size=batch_size)
        self.log("img/s", images_per_s, prog_bar=True, batch_size=batch_size)
        self.log("rejected", metrics["rejected_rate"], prog_bar=True, batch_size=batch_size)
        if log_now:
            self.log_dict({f"train/{k}": v for k, v in metrics.items()}, batch_size=batch_size)
        return out.loss

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Set this step's learning rate and weight decay."""
        step = self.global_step
        for group in self.optimizers().optimizer.param_groups:  # type: ignore[union-attr]
            group["lr"] = self.schedules.learning_rate(step)
            if group["weight_decay"] > 0 or group.get("decay", False):
                group["weight_decay"] = self.schedules.weight_decay_at(step)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Drop the gradients of a step whose loss or gradients are not finite (a skipped step).

        Args:
            optimizer: The optimiser (its parameters' gradients are checked).
        """
        grads = [
            p.grad for group in optimizer.param_groups for p in group["params"]
            if p.grad is not None
        ]  # fmt: skip
        if grads and self._loss_finite:
            norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
            if bool(torch.isfinite(norm)):
                return
            self.skipped = "non-finite gradients"
        else:
            self.skipped = "non-finite loss" if not self._loss_finite else "no gradients"
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None  # AdamW leaves parameters without gradients untouched

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """AdamW step, then the teacher's EMA step (neither changes anything on a skipped step).

        The EMA happens here, not in ``on_train_batch_end``: Lightning runs callbacks (and so
        checkpoint saving) before the module's batch-end hook, and a checkpoint must hold the
        teacher after this step's update.
        """
        super().optimizer_step(*args, **kwargs)
        if self.skipped is None:
            self.model.update_teacher(self.schedules.momentum_at(self._step))

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
        decay, no_decay = [], []
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            if param.ndim <= 1 or name.endswith(("pos_embed", "cls_token", "mask_token")):
                no_decay.append(param)
            else:
                decay.append(param)
        o = self.config.optim
        groups = [
            {"params": decay, "weight_decay": o.weight_decay, "decay": True},
            {"params": no_decay, "weight_decay": 0.0, "decay": False},
        ]
        # Fused AdamW is the fastest (3x on the CPU), but Lightning's mixed-precision plugins
        # (bf16-mixed, the default on CUDA) refuse to clip the gradients of an optimiser that
        # unscales them itself, as the fused one does: there, the multi-tensor one.
        mixed = self._trainer is not None and "mixed" in str(self.trainer.precision)
        return torch.optim.AdamW(
            groups, lr=o.lr, betas=(o.betas[0], o.betas[1]), eps=o.eps,
            fused=not mixed, foreach=mixed or None,
        )  # fmt: skip
