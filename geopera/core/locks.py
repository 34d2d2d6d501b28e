"""One process per output: a lock file that names its owner, taken over when the owner is dead.

Pretraining holds its run directory with it, and every command that writes a resumable output
(``geopera embed``) holds that output, so a second process on the same output is refused with
the first's pid instead of writing beside it.
"""

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from geopera.core.errors import RunLockedError
from geopera.core.outputs import pid_alive


def _owner(path: Path) -> dict[str, object]:
    try:
        found = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}  # a lock cut by a kill while being written: stale
    return found if isinstance(found, dict) else {}


def _refuse_live_owner(path: Path, what: str, me: dict[str, object]) -> None:
    """Raise if the lock's owner is alive (or on another host); say so if it is dead."""
    owner = _owner(path)
    pid, host = int(str(owner.get("pid", 0) or 0)), owner.get("host")
    if host not in (None, me["host"]):
        raise RunLockedError(
            f"{what} is in use by process {pid} on host {host} (since {owner.get('since')}); "
            f"if that process is gone, delete {path}"
        )
    if pid and pid_alive(pid):
        raise RunLockedError(
            f"{what} is in use by process {pid} (since {owner.get('since')}): wait for it to "
            f"finish, or stop it (kill -TERM {pid}) and resume"
        )
    print(f"geopera: taking over the stale lock of dead process {pid}", file=sys.stderr)
    path.unlink(missing_ok=True)


@contextmanager
def hold(path: Path, what: str) -> Iterator[None]:
    """Hold ``what`` for this process through the lock file ``path``.

    The file holds the owner's pid and host. A lock whose process is dead (killed with SIGKILL)
    is taken over with a note.

    Args:
        path: The lock file.
        what: What it guards, for messages (a run directory, an output folder).

    Yields:
        Nothing; the lock is released on leaving.

    Raises:
        RunLockedError: If a live process (or a process on another host) holds it.
    """
    me: dict[str, object] = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    # written whole beside it, then linked into place: nobody ever reads a lock half-written
    draft = path.with_name(f".{path.name}.{os.getpid()}.draft")
    draft.write_text(json.dumps(me))
    try:
        for _ in range(2):
            try:
                os.link(draft, path)  # fails if the lock exists, atomically
            except FileExistsError:
                _refuse_live_owner(path, what, me)
                continue
            break
        else:  # pragma: no cover - another process won the race twice
            raise RunLockedError(f"{what} is being taken by another process; try again")
    finally:
        draft.unlink(missing_ok=True)
    try:
        yield
    finally:
        if _owner(path).get("pid") == me["pid"]:
            path.unlink(missing_ok=True)
