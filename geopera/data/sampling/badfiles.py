"""Files that break while a run reads them: recorded once, skipped for the rest of the run.

Archives change under long jobs: a file is truncated by a copy in progress, deleted by a
clean-up, replaced with something unreadable. :class:`BadFiles` is the run's record of such
files, a JSON-lines file (``RUN_DIR/problems.jsonl``) that every DataLoader worker appends to and
re-reads when it changed, so a file found bad in one worker is skipped by all of them.
"""

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any


class BadFiles:
    """The set of files found unreadable during a run, shared through a JSON-lines file.

    Args:
        path: The problems file (None: kept in memory only, for this process).
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._paths: set[str] = set()
        self._stamp: tuple[int, int] | None = None
        #: Why each file was marked bad by this process.
        self.reasons: dict[str, str] = {}

    def __getstate__(self) -> dict[str, Any]:  # a worker starts from what is on disk
        return {"path": self.path, "_paths": set(self._paths), "_stamp": None, "reasons": {}}

    def _refresh(self) -> None:
        if self.path is None:
            return
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        for record in self.records():
            self._paths.add(record["path"])

    def records(self) -> list[dict[str, Any]]:
        """Every record of the problems file (one per file and finding)."""
        if self.path is None or not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a kill: the others still count
        return out

    def known(self) -> set[str]:
        """Paths found bad so far (in any process of the run)."""
        self._refresh()
        return self._paths

    def mark(self, paths: Iterable[str], reason: str) -> None:
        """Record files as bad, once each.

        Args:
            paths: The files.
            reason: What went wrong (the read error, in one line).
        """
        new = [p for p in paths if p not in self.known()]
        if not new:
            return
        self._paths.update(new)
        self.reasons.update(dict.fromkeys(new, reason))
        if self.path is None:
            return
        lines = "".join(
            json.dumps(
                {
                    "path": p,
                    "reason": reason,
                    "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "pid": os.getpid(),
                }
            )
            + "\n"
            for p in new
        )
        # one short append per finding: O_APPEND keeps lines of concurrent workers whole
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, lines.encode())
        finally:
            os.close(fd)
