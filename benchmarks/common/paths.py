"""Where the repository and the shared data are, and how a benchmark starts a child process."""

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def shared_data_dir() -> Path:
    """``../shared/data`` beside the checkout, or ``$GEOPERA_SHARED_DATA``."""
    return Path(os.environ.get("GEOPERA_SHARED_DATA", REPO.parent / "shared" / "data"))


def module_command(module: str) -> list[str]:
    """The command that runs a benchmark module (``benchmarks.bench_step``) in a child."""
    return [sys.executable, "-m", module]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child benchmark process: the repository importable, plus ``extra``."""
    path = os.environ.get("PYTHONPATH", "")
    return {
        **os.environ,
        "PYTHONPATH": f"{REPO}{os.pathsep}{path}" if path else str(REPO),
        **(extra or {}),
    }
