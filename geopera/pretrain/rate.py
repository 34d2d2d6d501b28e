"""The run's peak learning rate: the DINO rule for a new run, the recorded rate for a resume."""

import sys

from geopera.core.contracts import LearningRate
from geopera.pretrain.config import PretrainConfig
from geopera.pretrain.rundir import RunDir
from geopera.pretrain.schedules import REFERENCE_BATCH, scaled_lr


def run_learning_rate(config: PretrainConfig, run: RunDir, resumed: bool) -> LearningRate:
    """The run's peak rate: the rule's for a new run; for a resume, the rate the run started with.

    A resume keeps the rate of run.json (whatever ``--devices`` it resumes on); a run made
    before the rule scaled rates has none recorded and keeps its absolute ``optim.lr``.
    """
    o, t = config.optim, config.trainer
    global_batch = config.data.batch_size * t.devices * t.num_nodes
    if resumed:
        status = run.status()
        if status is not None and status.learning_rate is not None:
            return status.learning_rate
        return LearningRate(o.lr, o.lr, "none", global_batch)
    return LearningRate(
        scaled_lr(o.lr, o.lr_scaling, global_batch), o.lr, o.lr_scaling, global_batch
    )


def tell_rate(run: RunDir, rate: LearningRate, resumed: bool) -> None:
    """Record the rate in run.json and say it in the run's first lines."""
    if rate.scaling == "linear":
        n = REFERENCE_BATCH
        how = f"optim.lr {rate.lr:g} per {n} images x {rate.global_batch} / {n}"
    else:
        how = "optim.lr, not scaled (optim.lr_scaling: none)"
    kept = ", as the run started" if resumed else ""
    print(f"geopera pretrain: learning rate {rate.effective:.3g} ({how}{kept})", file=sys.stderr)
    run.update_status(learning_rate=rate)
