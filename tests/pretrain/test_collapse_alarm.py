"""The collapse alarm's tests: constant, one-prototype, near-uniform and dimensional collapse."""

import math
from pathlib import Path
from typing import Any

from geopera.pretrain.callbacks import CollapseAlarm


def _alarm(tmp_path: Path, **kwargs: Any) -> CollapseAlarm:
    return CollapseAlarm(
        run=None,  # type: ignore[arg-type]  # reasons() touches neither run nor metrics
        metrics=None,  # type: ignore[arg-type]
        prototypes=4096, min_std=1e-4, entropy_fraction=0.02, patience=3, **kwargs,
    )  # fmt: skip


def test_near_uniform_teacher_is_caught_after_the_warm_up(tmp_path: Path) -> None:
    alarm = _alarm(tmp_path, uniform_fraction=0.97, after_step=30)
    # the case: entropy 8.1 of log(4096) = 8.32, a healthy std, a steady rank
    signals = {"teacher_std": 0.05, "teacher_entropy": 8.1, "teacher_rank": 40.0}
    assert alarm.reasons(signals, step=10) == []  # during the warm-up, uniform is expected
    found = alarm.reasons(signals, step=40)
    assert len(found) == 1
    assert "near-uniform" in found[0]
    assert alarm.reasons({**signals, "teacher_entropy": 0.9 * math.log(4096)}, step=40) == []


def test_dimensional_collapse_is_relative_to_the_first_check(tmp_path: Path) -> None:
    alarm = _alarm(tmp_path, rank_fraction=0.25)
    healthy = {"teacher_std": 0.05, "teacher_entropy": 5.0}
    assert alarm.reasons({**healthy, "teacher_rank": 60.0}, step=0) == []  # the reference
    assert alarm.reasons({**healthy, "teacher_rank": 20.0}, step=50) == []  # 1/3: not yet
    found = alarm.reasons({**healthy, "teacher_rank": 10.0}, step=60)
    assert len(found) == 1
    assert "dimensional collapse" in found[0]


def test_sharp_and_constant_collapse_still_count(tmp_path: Path) -> None:
    alarm = _alarm(tmp_path)
    found = alarm.reasons({"teacher_std": 1e-6, "teacher_entropy": 0.01}, step=5)
    assert len(found) == 2
    assert "std" in found[0]
    assert "one prototype" in found[1]
