"""``geopera archive shards``: one process, or several (``--devices``, torchrun, srun).

One process holds ``--out`` (a lock) and its work folder; with several, each writes every
``world``-th part (:mod:`geopera.archive.shard_parts`) and rank 0 merges them when all are done,
so the shards equal one process's.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from geopera.archive.run import SampleRequest, prepare_sample
from geopera.archive.shard_parts import (
    ShardSummary,
    draw_settings,
    finish,
    open_work,
    parts_of,
    write_parts,
)
from geopera.core.errors import GeoperaError


@dataclass(frozen=True)
class _ShardJob:
    """What every rank of ``archive shards`` needs (pickled to the ranks Fabric starts)."""

    request: SampleRequest
    workers: int
    resume: bool


def write_shards(
    request: SampleRequest,
    workers: int = 0,
    resume: bool = False,
    devices: int = 1,
    num_nodes: int = 1,
    advance: Callable[[int], None] | None = None,
) -> ShardSummary | None:
    """``geopera archive shards``: draw the patches once and write them as shards.

    One process holds ``--out`` (a lock) and its work folder; with several processes
    (``--devices``, ``--num-nodes``, torchrun or srun) each writes every ``world``-th part
    and rank 0 merges them when all are done, so the shards equal one process's.

    Args:
        request: The archive, ROI, sizes and ``out`` (a new folder).
        workers: DataLoader workers reading patches, in each process.
        resume: Continue a killed run of the same arguments.
        devices: Processes per node.
        num_nodes: Nodes (started by torchrun or SLURM).
        advance: Called with the chips just written (one process only).

    Returns:
        What was written: rank 0's summary (None on the other ranks torchrun or srun started).

    Raises:
        GeoperaError: On bad arguments, or when a rank failed (named).
    """
    from geopera.core.locks import hold
    from geopera.core.ranks import launch_rank, launched_outside

    request.out.parent.mkdir(parents=True, exist_ok=True)
    lock = request.out.parent / f".{request.out.name}.lock"
    job = _ShardJob(request, workers, resume)
    if devices * num_nodes == 1 and not launched_outside():
        with hold(lock, f"the output {request.out}"):
            return _shards_rank(job, None, advance)
    if launch_rank() != 0:  # a rank torchrun or srun started: rank 0 holds the lock
        return _shard_ranks(job, devices, num_nodes)
    with hold(lock, f"the output {request.out}"):
        return _shard_ranks(job, devices, num_nodes)


def _shard_ranks(job: _ShardJob, devices: int, num_nodes: int) -> ShardSummary | None:
    """Run the job on ``devices`` x ``num_nodes`` CPU ranks; a failed rank is one line."""
    import pickle

    import torch

    from geopera.core.ranks import fabric_for, launch

    fabric = fabric_for(torch.device("cpu"), devices, num_nodes)
    result = launch(fabric, _shard_rank_main, pickle.dumps(job), "archive")
    if isinstance(result, str):
        raise GeoperaError(result)
    summary: ShardSummary | None = pickle.loads(result)  # our own summary, pickled by the rank
    return summary


def _shard_rank_main(fabric: Any, job: bytes) -> bytes:
    """One rank of :func:`_shard_ranks` (its own job, pickled there); its summary, pickled.

    Fabric walks what a rank returns and refuses frozen dataclasses: the summary travels as
    bytes.
    """
    import pickle

    return pickle.dumps(_shards_rank(pickle.loads(job), fabric, None))


def _shards_rank(
    job: _ShardJob, fabric: Any | None, advance: Callable[[int], None] | None
) -> ShardSummary | None:
    """This rank's parts; rank 0 opens the work folder first and merges last."""
    from geopera.core.ranks import share, together

    rank, world = (fabric.global_rank, fabric.world_size) if fabric is not None else (0, 1)

    def step[R](work: Callable[[], R]) -> R:  # every rank, stopped together when one fails
        return together(fabric, work) if fabric is not None else work()

    out = job.request.out
    settings = draw_settings(job.request)
    kept = step(lambda: open_work(out, job.resume, settings) if rank == 0 else 0)
    prepared = step(lambda: prepare_sample(job.request))
    mine = share(parts_of(job.request.count), rank, world)
    step(lambda: write_parts(prepared, mine, job.workers, advance))
    return step(lambda: finish(prepared, kept) if rank == 0 else None)
