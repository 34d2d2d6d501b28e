"""A pretraining step as Lightning runs it: no host round trips, operators flat in the batch.

The real :class:`PerATask` trains in a real Lightning ``Trainer`` (fused AdamW, clipping, the
teacher EMA, the skip decision); a callback counts, with :class:`StepCounter`, everything the
process does from the start of one step to the start of the next (the step, every callback,
Lightning's loop), on the CPU.
"""

import csv
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, Dataset

from geopera.core.contracts import SkippedRecord
from geopera.core.profiling import StepCounter, StepCounts
from geopera.core.yaml_config import from_dict, to_plain
from geopera.pretrain.callbacks import SkippedSteps
from geopera.pretrain.config import PretrainConfig
from geopera.pretrain.metrics import MetricsCSV, StepProgressBar
from geopera.pretrain.rundir import RunDir
from geopera.pretrain.task import PerATask

LOG_EVERY = 3
STEPS = 6  # logging steps 0 and 3, then 5 (the last)


class RawBatches(Dataset[dict[str, torch.Tensor]]):
    """Whole uint16 batches as the data module hands them over (stored dtype).

    Made up front, so that reading one adds no operator to the counted loop.
    """

    def __init__(self, batch: int, count: int = STEPS) -> None:
        g = torch.Generator().manual_seed(batch)
        self.batches = [
            {
                "image": torch.randint(0, 4000, (batch, 3, 40, 40), generator=g).to(torch.uint16),
                "source": torch.zeros(batch, dtype=torch.long),
                "bounds": torch.zeros(batch, 4, dtype=torch.float64),
                "rejected": torch.zeros(batch, dtype=torch.long),
            }
            for _ in range(count)
        ]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.batches[i]


class CountSteps(L.Callback):
    """Counts each step from its batch start to the next batch start (the last: to train end)."""

    def __init__(self) -> None:
        self.counter = StepCounter()
        self.steps: list[StepCounts] = []
        self.running = False

    def _close(self) -> None:
        if self.running:
            self.steps.append(self.counter.stop())
            self.running = False

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        self._close()
        self.counter.start()
        self.running = True

    def on_train_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        self._close()


def _config(batch: int) -> PretrainConfig:
    return from_dict(
        {
            "data": {"batch_size": batch, "patch_size": 40},
            "model": {
                "backbone": "vit_small_patch16_224",
                "backbone_kwargs": {"embed_dim": 48, "depth": 2, "num_heads": 2},
                "prototypes": 64,
                "head_hidden_dim": 32,
                "head_bottleneck_dim": 16,
                "drop_path_rate": 0.3,
            },
            "views": {"global_size": 48, "local_size": 32, "n_global": 2, "n_local": 2},
            "optim": {"warmup_steps": 2, "teacher_temp_warmup_steps": 2},
            "trainer": {"max_steps": STEPS, "log_every": LOG_EVERY, "accelerator": "cpu"},
        },
        PretrainConfig,
    )


def _train(batch: int, tmp_path: Any) -> tuple[list[StepCounts], PerATask]:
    config = _config(batch)
    torch.manual_seed(0)
    task = PerATask(
        to_plain(config), 3, [0, 1, 2], [[100.0] * 3], [[3900.0] * 3], [0.5] * 3, [0.25] * 3
    )
    counter = CountSteps()
    run = RunDir(tmp_path / f"run{batch}")
    run.path.mkdir(parents=True)
    trainer = L.Trainer(
        max_steps=STEPS,
        accelerator="cpu",
        devices=1,
        gradient_clip_val=3.0,
        callbacks=[
            counter,
            SkippedSteps(run, 3),
            MetricsCSV(run.path / "metrics.csv"),
            StepProgressBar(),
        ],
        logger=TensorBoardLogger(run.path),
        enable_checkpointing=False,
        enable_model_summary=False,
        log_every_n_steps=LOG_EVERY,
    )
    loader = DataLoader(RawBatches(batch), batch_size=None)
    trainer.fit(task, loader)
    return counter.steps, task


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("syncs")


@pytest.fixture(scope="module")
def counted(folder: Path) -> dict[int, list[StepCounts]]:
    return {batch: _train(batch, folder)[0] for batch in (4, 16)}


def test_logging_steps_reach_tensorboard_and_metrics_csv(
    counted: dict[int, list[StepCounts]], folder: Path
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logged = [0, LOG_EVERY, STEPS - 1]
    events = EventAccumulator(str(next((folder / "run4").rglob("events.out.tfevents.*"))))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == logged
    assert [e.step for e in events.Scalars("train/data_wait")] == logged
    with open(folder / "run4" / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == logged
    assert all(0.0 <= float(r["data_wait"]) <= 1.0 for r in rows)
    assert all(float(r["images_per_s"]) > 0 for r in rows)
    assert all(r["skipped"] == "0" for r in rows)


def test_a_step_that_does_not_log_waits_for_nothing(counted: dict[int, list[StepCounts]]) -> None:
    steps = counted[4]
    assert len(steps) == STEPS
    quiet = [s for i, s in enumerate(steps) if i % LOG_EVERY != 0 and i != STEPS - 1]
    assert quiet, "no non-logging step was counted"
    for counts in quiet:
        assert counts.syncs == 0, counts.describe()
        assert counts.operators > 500  # the whole step was counted


def test_a_logging_step_reads_the_device_once(counted: dict[int, list[StepCounts]]) -> None:
    for i in (LOG_EVERY, STEPS - 1):
        counts = counted[4][i]
        assert counts.syncs == 1, counts.describe()
        assert counts.sync_calls == {"Tensor.tolist": 1}


def test_operator_count_does_not_grow_with_the_batch(
    counted: dict[int, list[StepCounts]],
) -> None:
    for i in range(1, STEPS):  # step 0 also creates the optimiser state
        small, large = counted[4][i], counted[16][i]
        assert small.operators == large.operators, (
            small.by_operator - large.by_operator,
            large.by_operator - small.by_operator,
        )


def test_the_counter_sees_what_synchronises() -> None:
    x = torch.rand(8)
    with StepCounter() as counter:
        _ = float(x.sum())
        _ = x[x > 0.5]
        _ = x.nonzero()
        _ = x.tolist()
        _ = bool(x.any())
    calls = counter.counts.sync_calls
    assert calls["aten._local_scalar_dense"] == 2
    assert calls["aten.index"] == 1
    assert calls["aten.nonzero"] >= 1
    assert calls["Tensor.tolist"] == 1
    with StepCounter() as counter:
        _ = torch.where(x > 0.5, x, 0.0).sum() * 2
    assert counter.counts.syncs == 0
    assert counter.counts.operators >= 4


def test_a_skipped_step_changes_nothing_and_is_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(4)
    torch.manual_seed(0)
    task = PerATask(
        to_plain(config), 3, [0, 1, 2], [[100.0] * 3], [[3900.0] * 3], [0.5] * 3, [0.25] * 3
    )
    batch = RawBatches(4)[0]
    optimiser = task.configure_optimizers()
    task._loss_finite = torch.tensor(True)
    task.model(task.make_views(batch, 0), teacher_temp=0.04).loss.backward()
    for p in task.model.parameters():
        if p.grad is not None:
            p.grad[...] = float("nan")
            break
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    task.configure_gradient_clipping(optimiser, 3.0)
    optimiser.step()
    task.model.update_teacher(0.9, task.step_ok)
    after = task.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not bool(task.step_ok)
    total, in_a_row, _, _, code = task.skip_state.tolist()
    assert (total, in_a_row, code) == (1, 1, 2)
    # a skip after the last logging step is still reported when the run ends
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    SkippedSteps(run, 3).on_train_end(trainer, task)
    status = run.status()
    assert status is not None
    assert status.skipped_steps == SkippedRecord(count=1, last=0, reason="non-finite gradients")
    assert "1 step(s) skipped up to step 0: non-finite gradients" in capsys.readouterr().err
