"""SIGINT/SIGTERM for long commands: stop where Python can clean up, then say what was kept.

Python's default SIGTERM ends a process at once, without running ``finally`` blocks: a staged
output folder or a temporary file would stay behind. Inside :func:`stop_on_signals` both signals
raise :class:`Interrupted` (a ``BaseException``, so ``except Exception`` blocks do not swallow it)
in the main thread; every ``with`` block on the way out cleans up (``staged_folder`` removes its
work folder, ``atomic_file`` its temporary file), and the CLI prints the one line given here.

``geopera pretrain`` is different: it finishes the current step and saves a checkpoint
(:class:`geopera.pretrain.callbacks.GracefulStop`).
"""

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

STOP_SIGNALS: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """A command was stopped by a signal.

    Args:
        signum: The signal.
        stopped: What was stopped (``"fine-tuning into runs/x"``).
        kept: What is left (``"nothing: runs/x was not created"``).
    """

    def __init__(self, signum: int, stopped: str, kept: str) -> None:
        super().__init__(f"{signal.Signals(signum).name}: {stopped} stopped; {kept}")
        self.signum = signum
        self.stopped = stopped
        self.kept = kept

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal number."""
        return 128 + self.signum


@contextmanager
def stop_on_signals(stopped: str, kept: str) -> Iterator[None]:
    """Turn SIGINT/SIGTERM into :class:`Interrupted` inside the block (main thread only).

    Args:
        stopped: What the block does, for the message.
        kept: What an interruption leaves, for the message.

    Yields:
        Nothing.
    """
    previous: dict[int, Any] = {}
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may install handlers; elsewhere signals keep their way
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        for sig in STOP_SIGNALS:  # a second signal during the clean-up changes nothing
            signal.signal(sig, signal.SIG_IGN)
        raise Interrupted(signum, stopped, kept)

    for sig in STOP_SIGNALS:
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
