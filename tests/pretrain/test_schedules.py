import itertools

import pytest

from geopera.core.schedules import cosine
from geopera.pretrain.schedules import PerASchedules


def test_paper_schedules_endpoints_and_shapes() -> None:
    s = PerASchedules(total_steps=200, warmup_steps=20, teacher_temp_warmup_steps=30)
    assert s.learning_rate(0) == 0.0
    assert s.learning_rate(10) == pytest.approx(0.5e-3)
    assert s.learning_rate(20) == pytest.approx(1e-3)
    assert s.learning_rate(110) == pytest.approx((1e-3 + 1e-6) / 2)
    assert s.learning_rate(200) == pytest.approx(1e-6)
    assert s.weight_decay_at(0) == pytest.approx(0.04)
    assert s.weight_decay_at(200) == pytest.approx(0.2)
    assert s.momentum_at(0) == pytest.approx(0.992)
    assert s.momentum_at(100) == pytest.approx(0.996)
    assert s.momentum_at(500) == 1.0
    assert s.teacher_temp_at(0) == pytest.approx(0.03)
    assert s.teacher_temp_at(15) == pytest.approx(0.04)
    assert s.teacher_temp_at(30) == s.teacher_temp_at(150) == pytest.approx(0.05)
    lrs = [s.learning_rate(i) for i in range(20, 201)]
    assert all(a >= b for a, b in itertools.pairwise(lrs))  # monotone after warm-up


def test_validation() -> None:
    with pytest.raises(ValueError, match="total_steps"):
        PerASchedules(total_steps=0)
    with pytest.raises(ValueError, match="warmup_steps"):
        PerASchedules(total_steps=10, warmup_steps=11)
    assert cosine(5, 0, 1.0, 2.0) == 2.0
