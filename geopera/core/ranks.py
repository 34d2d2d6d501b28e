"""Work over several processes, devices and nodes with Lightning Fabric (torch.distributed).

One node: geopera starts the processes itself (``--devices N``: Fabric's ``ddp_spawn``). Several
nodes: ``torchrun`` or SLURM's ``srun`` starts one process per device with the environment
variables Lightning documents (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...), and every process
runs the same command with ``--devices`` and ``--num-nodes``.

Work is shared by :func:`share` (deterministic, balanced). A step that fails on one rank stops
every rank: :func:`together` runs a step everywhere and, if any rank failed, every rank raises
:class:`RankError` naming the first failure, so that no rank waits forever at a barrier.
"""

import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

from geopera.core.errors import GeoperaError
from geopera.core.quiet import quiet_lightning

T = TypeVar("T")
# A spawned rank imports this module (through the function it runs) before Lightning sets up its
# process group: from here on, Lightning's banner lines stay quiet in every rank.
quiet_lightning()
#: The environment variables a multi-process launcher (torchrun, srun) sets.
LAUNCHED = ("TORCHELASTIC_RUN_ID", "SLURM_NTASKS")


class RankError(GeoperaError):
    """A step failed on one rank, so every rank stopped."""


def launched_outside() -> bool:
    """Whether torchrun or SLURM started this process as one rank of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and any(k in os.environ for k in LAUNCHED)


def fabric_for(device: torch.device, devices: int, num_nodes: int) -> Any:
    """A Lightning Fabric for ``devices`` x ``num_nodes`` processes (gloo on the CPU, NCCL on GPUs).

    Raises:
        ValueError: If ``devices`` or ``num_nodes`` is below 1.
    """
    from lightning.fabric import Fabric

    if devices < 1 or num_nodes < 1:
        raise ValueError(
            f"--devices and --num-nodes must be at least 1, got {devices}, {num_nodes}"
        )
    quiet_lightning()
    strategy = "ddp" if launched_outside() else "ddp_spawn"
    accelerator = "cpu" if device.type == "cpu" else "cuda"
    return Fabric(accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy)


def share[T](items: Sequence[T], rank: int, world: int) -> list[T]:
    """This rank's share of ``items``: every ``world``-th one from ``rank`` (balanced to one).

    Args:
        items: The work, in a fixed order.
        rank: This process's global rank.
        world: The number of ranks.

    Returns:
        The items of this rank, in order.
    """
    return list(items[rank::world])


def together[T](fabric: Any, step: Callable[[], T]) -> T:
    """Run ``step`` on every rank; if it failed on any, raise :class:`RankError` everywhere.

    Args:
        fabric: The launched Fabric.
        step: The work of this rank.

    Returns:
        The step's result on this rank.

    Raises:
        RankError: With the first failing rank's error, on every rank.
    """
    error: str | None = None
    result: T | None = None
    try:
        result = step()
    except Exception as err:  # told to every rank below, then raised as one line
        error = " ".join(str(err).split()) or type(err).__name__
    world = fabric.world_size
    mark = torch.tensor([fabric.global_rank if error is not None else world], device=fabric.device)
    first = int(fabric.all_reduce(mark, reduce_op="min").item())  # the first failed rank, or world
    if first < world:
        message = fabric.broadcast(error, src=first)
        raise RankError(f"rank {first} of {world} failed: {message}")
    return result  # type: ignore[return-value]
