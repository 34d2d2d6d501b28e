"""The collapse alarm's tests: constant, one-prototype, near-uniform and dimensional collapse."""

import csv
import dataclasses
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from geopera.models.pera_output import LossParts, TeacherHealth
from geopera.pretrain.health import CollapseAlarm, CollapseLimits, collapse_reasons
from geopera.pretrain.metrics import MetricsCSV, StepMetrics
from geopera.pretrain.rundir import RunDir
from geopera.pretrain.schedules import ScheduleValues, lr_far_above_rule

LIMITS = CollapseLimits.of(
    4096, 1e-4, 0.02, uniform_fraction=0.97, rank_fraction=0.25, after_step=0
)


def test_near_uniform_teacher_is_caught_after_the_warm_up() -> None:
    limits = CollapseLimits.of(
        4096, 1e-4, 0.02, uniform_fraction=0.97, rank_fraction=0.25, after_step=30
    )
    # the case: entropy 8.1 of log(4096) = 8.32, a healthy std, a steady rank
    health = TeacherHealth(std=0.05, entropy=8.1, rank=40.0)
    assert collapse_reasons(health, 10, limits, 40.0) == []  # during the warm-up: expected
    found = collapse_reasons(health, 40, limits, 40.0)
    assert len(found) == 1
    assert "near-uniform" in found[0]
    calmer = TeacherHealth(std=0.05, entropy=0.9 * math.log(4096), rank=40.0)
    assert collapse_reasons(calmer, 40, limits, 40.0) == []


def test_dimensional_collapse_is_relative_to_the_first_check() -> None:
    def rank(r: float, first: float | None) -> list[str]:
        return collapse_reasons(TeacherHealth(0.05, 5.0, r), 50, LIMITS, first)

    assert rank(60.0, None) == []  # the first check is the reference
    assert rank(20.0, 60.0) == []  # 1/3: not yet
    found = rank(10.0, 60.0)
    assert len(found) == 1
    assert "dimensional collapse" in found[0]


def test_sharp_and_constant_collapse_still_count() -> None:
    found = collapse_reasons(TeacherHealth(std=1e-6, entropy=0.01, rank=math.nan), 5, LIMITS, None)
    assert len(found) == 2
    assert "std" in found[0]
    assert "one prototype" in found[1]


def _record(step: int, health: TeacherHealth[float]) -> StepMetrics:
    return StepMetrics(
        step=step,
        loss=1.0,
        parts=LossParts(dino_global=1.0, dino_local=0.0, koleo=0.0, pixel=0.0),
        schedules=ScheduleValues(lr=1e-4, weight_decay=0.04, teacher_temp=0.04, momentum=0.996),
        images_per_s=10.0,
        data_wait=0.0,
        rejected_rate=0.0,
        skipped=0,
        health=health,
    )


@pytest.mark.parametrize("alarm_first", [True, False])
def test_the_alarm_rings_once_and_the_row_shows_it_in_any_callback_order(
    tmp_path: Path, alarm_first: bool
) -> None:
    run = RunDir(tmp_path)
    cause = lr_far_above_rule(5e-4, 16)  # named first when the alarm rings
    alarm = CollapseAlarm(run, LIMITS, patience=2, cause=cause)
    writer = MetricsCSV(tmp_path / "metrics.csv", additions=[alarm])
    order = [alarm, writer] if alarm_first else [writer, alarm]
    task = SimpleNamespace(skips=SimpleNamespace(total=0), step_metrics=None)
    collapsed = TeacherHealth(std=1e-6, entropy=5.0, rank=math.nan)

    def steps() -> None:
        for step in range(3):
            task.step_metrics = _record(step, collapsed)
            trainer = SimpleNamespace(global_step=step + 1, global_rank=0)
            for callback in order:
                callback.on_train_batch_end(trainer, task, None, None, step)  # type: ignore[arg-type]

    with pytest.warns(UserWarning, match="COLLAPSE ALARM at step 1") as rung:
        steps()
    assert f"in a row. {cause} The representation is collapsing" in str(rung[0].message)
    with open(tmp_path / "metrics.csv", newline="") as fh:
        flags = [row["collapse_alarm"] for row in csv.DictReader(fh)]
    assert flags == ["0", "1", "1"]  # rung at the second failed check, in either order
    status = run.status()
    assert status is not None
    assert status.collapse_alarm is not None
    assert status.collapse_alarm.step == 1


def test_the_columns_come_from_the_records_and_the_additions(tmp_path: Path) -> None:
    """A field of a record (loss part, schedule, health signal) is a column; so is an addition."""
    run = RunDir(tmp_path)
    alarm = CollapseAlarm(run, LIMITS, patience=2, cause=None)
    MetricsCSV(tmp_path / "metrics.csv", additions=[alarm])
    with open(tmp_path / "metrics.csv", newline="") as fh:
        header = next(csv.reader(fh))
    expected = {f.name for f in dataclasses.fields(LossParts)}
    expected |= {f.name for f in dataclasses.fields(ScheduleValues)}
    expected |= {f"teacher_{f.name}" for f in dataclasses.fields(TeacherHealth)}
    assert expected <= set(header)
    assert header[-2:] == ["collapse_alarm", "skipped"]
    row = _record(3, TeacherHealth(std=0.1, entropy=5.0, rank=30.0)).values()
    assert set(row) == set(header) - {"step", "collapse_alarm", "skipped"}
