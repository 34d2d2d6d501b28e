"""The device a command runs on."""

from typing import Any


def resolve_device(name: str) -> Any:
    """``auto`` (CUDA when available, else the CPU) or any ``torch.device`` name.

    Args:
        name: ``auto``, ``cpu``, ``cuda``, ``cuda:1``...

    Returns:
        The ``torch.device``.
    """
    import torch  # here, so that light commands start fast

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
