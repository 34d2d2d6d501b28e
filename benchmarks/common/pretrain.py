"""The pretraining step alone: one in-memory batch repeated, timed per step.

The baseline of end-to-end pretraining, in ``bench_pretrain`` and in the device check.
"""

import statistics
import time
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from geopera.pretrain.run import _datamodule, build_task


class RepeatBatch(Dataset[dict[str, torch.Tensor]]):
    """One batch, returned ``length`` times (DataLoader batch_size=None)."""

    def __init__(self, batch: dict[str, torch.Tensor], length: int) -> None:
        self.batch = batch
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.batch


class StepTimer(L.Callback):
    """Wall time of each optimiser step (batch start to batch end)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, *args: Any) -> None:
        """Start the clock."""
        self._start = time.perf_counter()

    def on_train_batch_end(self, *args: Any) -> None:
        """Record the step's time."""
        self.times.append(time.perf_counter() - self._start)


def step_only(config: Any, steps: int, warmup: int) -> float:
    """Median images/s of the task on one repeated in-memory batch."""
    dm = _datamodule(config)
    dm.num_workers = 0
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    task = build_task(config, dm, dm.normalisation())
    timer = StepTimer()
    trainer = L.Trainer(
        max_steps=steps,
        accelerator=config.trainer.accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=config.optim.clip_grad,
        callbacks=[timer],
    )
    trainer.fit(task, DataLoader(RepeatBatch(batch, steps), batch_size=None))
    per_step = statistics.median(timer.times[warmup:])
    return config.data.batch_size / per_step
