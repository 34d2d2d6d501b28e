"""Overlap reading, computing and writing: a reader thread ahead of the model, a writer behind it.

``predict`` and ``embed`` read windows of a raster, run a model and write results. Done in
turn, the device idles while GDAL reads and the host idles while the device computes. Here
reading runs in a thread a bounded number of items ahead (:func:`prefetched`), and writing in a
thread a bounded number of items behind (:class:`BackgroundWriter`); GDAL, NumPy and torch
release the GIL while they work, so the three stages run at once. The queues are bounded, so
memory stays flat in the raster's size.

An error in a thread is raised in the caller (at its next item, its next submit or when it
closes), with the original traceback as the cause.

The threads pay when the model leaves host cores free: on an accelerator, or on a CPU with more
cores than torch's intra-op threads (:func:`overlap_pays`). On a CPU whose cores all run the
model they only compete with it (measured on 2 cores: a 4096 px ``predict`` was no faster with
them), so there both helpers run inline (``enabled=False``).
"""

import os
import queue
import threading
from collections.abc import Callable, Generator, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

_DONE = object()

#: Held around every GDAL read of a reader thread and every GDAL write of a writer thread.
#: GDAL's block cache is shared by all datasets: a thread reading one dataset can flush
#: another's dirty blocks while that one is being written, and a written block is lost
#: (``predict`` with both threads lost a block in about 1 run in 25 on this machine). The
#: model still runs beside the I/O; reads and writes take turns.
GDAL_IO = threading.Lock()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def overlap_pays(device: "torch.device") -> bool:
    """Whether reader and writer threads beside a model on ``device`` run in parallel with it.

    Args:
        device: The model's device.

    Returns:
        True off the CPU, or when the host has more cores than torch's intra-op threads.
    """
    import torch

    if device.type != "cpu":
        return True
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (cores or 1) > torch.get_num_threads()


def prefetched[T](
    items: Iterable[T], depth: int = 2, name: str = "geopera-reader", enabled: bool = True
) -> Generator[T, None, None]:
    """Yield ``items``, produced by a background thread up to ``depth`` items ahead.

    Args:
        items: An iterable whose iteration does the work (a generator of reads).
        depth: Items made ahead of the consumer (memory bound: ``depth + 1`` items).
        name: Thread name.
        enabled: False: iterate inline, in the caller's thread (see :func:`overlap_pays`).

    Yields:
        The items, in order.

    Raises:
        Exception: Whatever producing an item raised, when the consumer reaches it.

    Close the generator (``contextlib.closing``) to stop the thread before what it reads from
    is closed; it is also stopped when the generator is garbage-collected.
    """
    if not enabled:
        yield from items
        return
    slots: queue.Queue[Any] = queue.Queue(maxsize=max(depth, 1))
    stop = threading.Event()

    def put(value: Any) -> bool:
        while not stop.is_set():
            try:
                slots.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as err:  # handed to the consumer
            put(_Failed(err))
            return
        put(_DONE)

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            value = slots.get()
            if value is _DONE:
                return
            if isinstance(value, _Failed):
                raise value.error
            yield value
    finally:
        stop.set()  # the consumer stopped early or failed: let the producer end
        thread.join()


class BackgroundWriter:
    """Runs submitted calls in order in a thread, at most ``depth`` waiting.

    Use as a context manager: leaving the block waits for every call; an error in a call is
    raised at the next :meth:`submit` or at the end of the block (later calls are not run).

    Args:
        depth: Calls that may wait (memory bound); :meth:`submit` blocks when they are full.
        name: Thread name.
        enabled: False: run each call at once, in the caller's thread (see
            :func:`overlap_pays`).
    """

    def __init__(self, depth: int = 2, name: str = "geopera-writer", enabled: bool = True) -> None:
        self._calls: queue.Queue[Any] = queue.Queue(maxsize=max(depth, 1))
        self._error: BaseException | None = None
        self._failed = threading.Event()  # stays set once a call failed
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.enabled = enabled
        if enabled:
            self._thread.start()

    def _run(self) -> None:
        while True:
            call = self._calls.get()
            if call is _DONE:
                return
            if self._failed.is_set():
                continue  # drain after a failure
            fn, args = call
            try:
                fn(*args)
            except BaseException as err:  # raised in the caller
                self._error = err
                self._failed.set()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)``; raise an earlier call's error instead, if one failed."""
        self._raise()
        if not self.enabled:
            fn(*args)
            return
        self._calls.put((fn, args))

    def close(self) -> None:
        """Wait for every queued call; raise the first error."""
        if self._thread.is_alive():
            self._calls.put(_DONE)
            self._thread.join()
        self._raise()

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        if self._thread.is_alive():  # the block failed: finish quietly, its error wins
            self._calls.put(_DONE)
            self._thread.join()
