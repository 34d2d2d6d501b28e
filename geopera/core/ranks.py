"""Work over several processes, devices and nodes with Lightning Fabric (torch.distributed).

One node: geopera starts the processes itself (``--devices N``: Fabric's ``ddp_spawn``). Several
nodes: ``torchrun`` or SLURM's ``srun`` starts one process per device with the environment
variables Lightning documents (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...), and every process
runs the same command with ``--devices`` and ``--num-nodes``.

Under torchrun or srun the ranks first meet (:func:`meet`): each reports to rank 0, which waits
at most ``GEOPERA_RANKS_TIMEOUT`` seconds (default 600) and names the ranks that never came, so
that a rank launched without the others ends in one line instead of hanging.

Work is shared by :func:`share` (deterministic, balanced). A step that fails on one rank stops
every rank: :func:`together` runs a step everywhere and, if any rank failed, every rank raises
:class:`RankError` naming the first failure, so that no rank waits forever at a barrier.
"""

import os
import socket
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import torch

from geopera.core.errors import GeoperaError, GeoperaNote
from geopera.core.quiet import notes_as_lines, quiet_lightning

T = TypeVar("T")
# A spawned rank imports this module (through the function it runs) before Lightning sets up its
# process group: from here on, Lightning's banner lines stay quiet in every rank.
quiet_lightning()
#: How long rank 0 waits for the other ranks to report, in seconds (environment variable).
TIMEOUT_VARIABLE = "GEOPERA_RANKS_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0


class RankError(GeoperaError):
    """A step failed on one rank, so every rank stopped."""


def launcher() -> Any | None:
    """Lightning's cluster environment of torchrun or srun, when it started several processes."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    for kind in (TorchElasticEnvironment, SLURMEnvironment):
        if kind.detect():
            env = kind()
            return env if env.world_size() > 1 else None
    return None


def launched_outside() -> bool:
    """Whether torchrun or SLURM started this process as one rank of several."""
    return launcher() is not None


def launch_rank() -> int:
    """This process's global rank under torchrun or srun (0 when geopera starts the ranks)."""
    env = launcher()
    return int(env.global_rank()) if env is not None else 0


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
    accelerator = "cpu" if device.type == "cpu" else "cuda"
    env = launcher()
    if env is not None:
        meet(env, "gloo" if accelerator == "cpu" else "nccl", devices * num_nodes)
    strategy = "ddp" if env is not None else "ddp_spawn"
    return Fabric(accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy)


def _timeout() -> float:
    """``GEOPERA_RANKS_TIMEOUT`` in seconds (a positive number)."""
    text = os.environ.get(TIMEOUT_VARIABLE, str(DEFAULT_TIMEOUT_S))
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ValueError(f"{TIMEOUT_VARIABLE}={text!r}: give a number of seconds above 0")
    return seconds


def meet(env: Any, backend: str, expected: int) -> None:
    """Every rank reports to rank 0 before any work, then the process group is set up.

    Rank 0 waits at most ``GEOPERA_RANKS_TIMEOUT`` seconds and names the ranks that did not
    come; the others wait as long for rank 0. The store is the launcher's: torchrun's agent
    hosts it, otherwise rank 0 does, at ``MASTER_ADDR:MASTER_PORT`` (SLURM: Lightning's).

    Args:
        env: The launcher's cluster environment (:func:`launcher`).
        backend: ``gloo`` or ``nccl``.
        expected: Processes asked for, ``--devices`` x ``--num-nodes``.

    Raises:
        RankError: On a launcher/flag mismatch, or a rank that did not come in time (named).
    """
    if torch.distributed.is_initialized():  # met already (an earlier step of this command)
        return
    world, rank = int(env.world_size()), int(env.global_rank())
    if world != expected:
        raise RankError(
            f"the launcher started {world} processes, but --devices x --num-nodes is {expected}: "
            "give --devices per node and --num-nodes as torchrun or srun start them"
        )
    seconds = _timeout()
    store = _store(env, rank, world, seconds)
    prefix = f"geopera/meet/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/"
    if rank == 0:
        _roll_call(store, prefix, world, seconds)
        store.set(prefix + "go", "1")
    else:
        store.set(prefix + str(rank), "1")
        try:
            store.wait([prefix + "go"], timedelta(seconds=seconds))
        except RuntimeError as err:  # torch's DistError: timed out, or rank 0 went away
            raise RankError(
                f"rank {rank} of {world}: rank 0 did not start the work within {seconds:g} s "
                "(see rank 0's error)"
            ) from err
    torch.distributed.init_process_group(backend, store=store, rank=rank, world_size=world)


def _store(env: Any, rank: int, world: int, seconds: float) -> Any:
    """The launcher's key-value store (a client, or the server on rank 0 without torchrun's)."""
    host, port = env.main_address, int(env.main_port)
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    server = rank == 0 and not agent
    try:
        if not server:  # torch's own client retries noisily: knock first, quietly
            _knock(host, port, time.monotonic() + seconds)
        return torch.distributed.TCPStore(
            host, port, is_master=server, timeout=timedelta(seconds=seconds),
            wait_for_workers=False, multi_tenant=True,
        )  # fmt: skip
    except (OSError, RuntimeError) as err:  # nothing listens; torch's DistNetworkError
        raise RankError(
            f"rank {rank} of {world}: nothing answered at {host}:{port} within {seconds:g} s; "
            "rank 0 was not started, or MASTER_ADDR/MASTER_PORT differ between the ranks"
        ) from err


def _knock(host: str, port: int, deadline: float) -> None:
    """Wait until something listens at ``host:port``.

    Raises:
        OSError: If nothing did before ``deadline`` (``time.monotonic``).
    """
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _roll_call(store: Any, prefix: str, world: int, seconds: float) -> None:
    """Rank 0: wait until every other rank has reported; name those that did not."""
    deadline = time.monotonic() + seconds
    missing = list(range(1, world))
    while missing := [r for r in missing if not store.check([prefix + str(r)])]:
        if time.monotonic() > deadline:
            names = ", ".join(str(r) for r in missing)
            raise RankError(
                f"rank{'s' if len(missing) > 1 else ''} {names} of {world} did not start within "
                f"{seconds:g} s: start every rank with the same command (torchrun "
                f"--nproc-per-node, srun --ntasks), or raise {TIMEOUT_VARIABLE}"
            )
        time.sleep(0.05)


def launch[T](fabric: Any, main: Callable[[Any, bytes], T], job: bytes, command: str) -> T | str:
    """Run ``main(fabric, job)`` on every rank: rank 0's result, or the failed rank's line.

    Notes are printed once (by rank 0) as ``geopera CMD: note:`` lines; a :class:`RankError`
    ends every rank with one line; ranks that geopera spawned close their process group
    before they exit (an open gloo group can abort the process as it exits).

    Args:
        fabric: From :func:`fabric_for`.
        main: A module-level function (spawned ranks receive it by name).
        job: The pickled job (Fabric walks plain arguments, and refuses frozen dataclasses).
        command: The command's name, for the notes.

    Returns:
        ``main``'s result on rank 0 (torchrun, srun: on this rank), or the failure's line.
    """
    return fabric.launch(_ranked, main, job, command)


def _ranked[T](fabric: Any, main: Callable[[Any, bytes], T], job: bytes, command: str) -> T | str:
    """One rank of :func:`launch`."""
    with notes_as_lines(command):
        if fabric.global_rank != 0:  # notes once, from rank 0
            warnings.simplefilter("ignore", GeoperaNote)
        try:
            return main(fabric, job)
        except RankError as err:
            return str(err)
        finally:
            if not launched_outside() and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()


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


def is_worker_rank() -> bool:
    """Whether this process is a rank other than 0, launched by Lightning, torchrun or srun.

    The one test of "not rank 0" before a process group exists; such a rank's command returns
    None instead of a result (rank 0 reports).
    """
    if launched_outside():
        return launch_rank() != 0
    return int(os.environ.get("LOCAL_RANK", "0")) > 0 or int(os.environ.get("NODE_RANK", "0")) > 0
