"""Work over ranks: a step that fails on one rank stops every rank with one line."""

from typing import Any

import torch

from geopera.core.ranks import fabric_for, launch, together


def _step(fabric: Any, job: bytes) -> str:
    def work() -> int:
        if fabric.global_rank == 1:
            raise ValueError(job.decode())
        return fabric.global_rank

    together(fabric, work)
    return "no error"


def test_a_failed_rank_is_told_to_every_rank() -> None:
    """Through ``launch``, as the commands run ranks (it also closes each rank's group)."""
    fabric = fabric_for(torch.device("cpu"), 2, 1)
    message = launch(fabric, _step, b"rank one's input is unreadable", "test")
    assert message == "rank 1 of 2 failed: rank one's input is unreadable"  # rank 0's view
