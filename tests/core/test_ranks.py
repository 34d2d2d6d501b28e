"""Work over ranks: a step that fails on one rank stops every rank with one line."""

from typing import Any

import torch

from geopera.core.ranks import RankError, fabric_for, together


def _step(fabric: Any) -> str:
    def work() -> int:
        if fabric.global_rank == 1:
            raise ValueError("rank one's input is unreadable")
        return fabric.global_rank

    try:
        together(fabric, work)
    except RankError as err:
        return str(err)
    return "no error"


def test_a_failed_rank_is_told_to_every_rank() -> None:
    fabric = fabric_for(torch.device("cpu"), 2, 1)
    message = fabric.launch(_step)  # rank 0's view; rank 1 raised, rank 0 did not
    assert message == "rank 1 of 2 failed: rank one's input is unreadable"
