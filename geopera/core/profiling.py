"""Count what a training step asks of the device: operators and host-device synchronisations.

A synchronisation makes the host wait until the device has finished all queued work, because a
device value is needed on the host (``.item()``, ``bool(t)``, ``.tolist()``, ``nonzero``,
boolean-mask indexing, a copy to the host...). On a GPU each one stalls the step; a step without
any can run ahead of the device, be captured as a CUDA graph and be compiled whole.

:class:`StepCounter` sees them on any device, the CPU included, with PyTorch's own hooks: a
``TorchDispatchMode`` for the operators (``aten._local_scalar_dense`` is what every
``.item()``/``bool()``/``float()`` becomes) and a ``TorchFunctionMode`` for the tensor methods
that read memory without an operator (``.tolist()``, ``.numpy()``). On CUDA,
``torch.cuda.set_sync_debug_mode("error")`` is the device's own check; :func:`cuda_sync_check`
turns it on for a block.

Both modes are thread-local: only the calling thread is counted (on the CPU, autograd runs the
backward pass on the calling thread).
"""

import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

#: Operators that always need a device value on the host.
SYNC_OPS = frozenset(
    {
        "aten._local_scalar_dense",  # .item(), bool(t), float(t), int(t), if t:
        "aten.nonzero",
        "aten.nonzero_static",
        "aten.masked_select",
        "aten._unique",
        "aten._unique2",
        "aten.unique_dim",
        "aten.unique_consecutive",
        "aten.equal",
    }
)

#: Tensor methods that read device memory without an operator the dispatch mode sees.
SYNC_METHODS = ("tolist", "numpy")


def _op_name(func: Any) -> str:
    """``aten.add.Tensor`` -> ``aten.add``."""
    packet = getattr(func, "overloadpacket", func)
    return f"aten.{getattr(packet, '__name__', str(packet))}"


def _has_bool_index(args: tuple[Any, ...]) -> bool:
    """Whether ``aten.index``/``index_put`` got a boolean mask (its output size is data)."""
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(t, torch.Tensor) and t.dtype == torch.bool for t in indices or ())


def _is_sync(name: str, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    if name in SYNC_OPS:
        return True
    if name in ("aten.index", "aten.index_put", "aten.index_put_", "aten._index_put_impl_"):
        return _has_bool_index(args)
    if name == "aten.repeat_interleave":
        return "output_size" not in kwargs and isinstance(args[0], torch.Tensor)
    if name in ("aten._to_copy", "aten.copy_"):  # a device -> host copy waits for the device
        src = args[1] if name == "aten.copy_" else args[0]
        dst_device = args[0].device if name == "aten.copy_" else kwargs.get("device")
        return (
            isinstance(src, torch.Tensor)
            and src.device.type != "cpu"
            and dst_device is not None
            and torch.device(dst_device).type == "cpu"
        )
    return False


@dataclass
class StepCounts:
    """What one counted block did.

    Attributes:
        operators: aten operators dispatched.
        syncs: Host-device synchronisations (operators and tensor methods).
        sync_calls: The synchronising calls by name, with counts.
        sync_sites: Where they were made: the innermost line of code outside torch, with counts.
        by_operator: Every operator by name, with counts.
    """

    operators: int = 0
    syncs: int = 0
    sync_calls: Counter[str] = field(default_factory=Counter)
    sync_sites: Counter[str] = field(default_factory=Counter)
    by_operator: Counter[str] = field(default_factory=Counter)

    def add_sync(self, name: str) -> None:
        """Count one synchronising call and the line of code that made it."""
        self.syncs += 1
        self.sync_calls[name] += 1
        self.sync_sites[_call_site()] += 1

    def describe(self, top: int = 8) -> str:
        """One line: the counts, the synchronising calls and where they were made."""
        calls = ", ".join(f"{k} x{v}" for k, v in self.sync_calls.most_common(top)) or "none"
        sites = "; ".join(f"{k} x{v}" for k, v in self.sync_sites.most_common(top))
        return f"{self.operators} operators, {self.syncs} synchronisations ({calls}) {sites}"


def _call_site() -> str:
    """``file:line`` of the innermost frame outside torch and this module."""
    for frame in reversed(traceback.extract_stack()):
        path = frame.filename.replace("\\", "/")
        if "/torch/" in path or path.endswith("/core/profiling.py"):
            continue
        return f"{'/'.join(path.split('/')[-3:])}:{frame.lineno}"
    return "?"


class _Dispatch(TorchDispatchMode):
    def __init__(self, counts: StepCounts) -> None:
        super().__init__()
        self.counts = counts

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        name = _op_name(func)
        self.counts.operators += 1
        self.counts.by_operator[name] += 1
        if _is_sync(name, func, args, kwargs):
            self.counts.add_sync(name)
        return func(*args, **kwargs)


class _Methods(TorchFunctionMode):
    def __init__(self, counts: StepCounts) -> None:
        super().__init__()
        self.counts = counts
        self.watched = {getattr(torch.Tensor, m): f"Tensor.{m}" for m in SYNC_METHODS}

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        name = self.watched.get(func)
        if name is not None:
            self.counts.add_sync(name)
        return func(*args, **(kwargs or {}))


class StepCounter:
    """Counts operators and synchronisations of the code run inside it (this thread).

    Example::

        with StepCounter() as counter:
            step(batch)
        print(counter.counts.describe())

    It can also be started and stopped from two hooks (:meth:`start`, :meth:`stop`), as a
    Lightning callback does around one training step.
    """

    def __init__(self) -> None:
        self.counts = StepCounts()
        self._modes: list[Any] = []

    def start(self) -> None:
        """Begin counting into a fresh :class:`StepCounts`."""
        self.counts = StepCounts()
        self._modes = [_Methods(self.counts), _Dispatch(self.counts)]
        for mode in self._modes:
            mode.__enter__()

    def stop(self) -> StepCounts:
        """Stop counting; return what was counted."""
        for mode in reversed(self._modes):
            mode.__exit__(None, None, None)
        self._modes = []
        return self.counts

    def __enter__(self) -> "StepCounter":
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextmanager
def cuda_sync_check(device: torch.device) -> Iterator[None]:
    """Make every host-device synchronisation on CUDA an error inside the block.

    Args:
        device: The step's device (nothing is checked off CUDA).
    """
    if device.type != "cuda":
        yield
        return
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(previous)
