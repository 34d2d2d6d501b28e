import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geopera.transforms.masking import DisjointMasking, disjoint_masks


@settings(max_examples=50, deadline=None)
@given(
    rows=st.integers(1, 6),
    side=st.integers(3, 14),
    seed=st.integers(0, 10_000),
    local=st.booleans(),
)
def test_sets_are_disjoint_exact_and_cover_as_specified(
    rows: int, side: int, seed: int, local: bool
) -> None:
    n = side * side
    noise = torch.rand(rows, n, generator=torch.Generator().manual_seed(seed))
    masks = disjoint_masks(noise, 0.2, 0.6, mask_tokens=not local)
    k_s, k_h, k_t = round(0.2 * n), round(0.4 * n), round(0.4 * n)
    assert masks.student.shape == (rows, k_s)
    assert masks.teacher.shape == (rows, n - k_t)
    assert masks.token.shape == (rows, 0 if local else k_h - k_s)
    s, m, t = masks.boolean("student"), masks.boolean("token"), masks.boolean("teacher")
    assert not (s & m).any()
    assert not (s & t).any()
    assert not (m & t).any()
    covered = s | m | t
    if local:
        assert int((~covered).sum()) == rows * (k_t - k_s)  # the token band is seen by nobody
    else:
        assert covered.all()  # k_h == k_t: student + tokens + teacher cover the grid
    for name in ("student", "token", "teacher"):
        index = getattr(masks, name)
        assert torch.equal(index, index.sort(dim=1).values)


def test_convention_is_order_less_than_k() -> None:
    noise = torch.tensor([[0.9, 0.1, 0.5, 0.3, 0.7]])
    # order = argsort = [1, 3, 2, 4, 0]; student = order < 1 -> position 4 (order[4] == 0)
    masks = disjoint_masks(noise, student_ratio=0.2, teacher_ratio=0.6)
    assert masks.student.tolist() == [[4]]
    assert masks.token.tolist() == [[0]]  # order[0] == 1
    assert masks.teacher.tolist() == [[1, 2, 3]]  # order >= round(0.4 * 5) = 2


def test_parity_counts_and_module_draws_on_device() -> None:
    module = DisjointMasking()
    masks = module(4, 36, mask_tokens=True)
    assert (masks.student.shape[1], masks.token.shape[1], masks.teacher.shape[1]) == (7, 7, 22)
    local = module(4, 9, mask_tokens=False)
    assert (local.student.shape[1], local.teacher.shape[1]) == (2, 5)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(
        module(2, 16, True, generator=g1).student, module(2, 16, True, generator=g2).student
    )


def test_bad_ratios() -> None:
    with pytest.raises(ValueError, match="overlap"):
        disjoint_masks(torch.rand(1, 100), student_ratio=0.3, teacher_ratio=0.6)
    with pytest.raises(ValueError, match="empty set"):
        disjoint_masks(torch.rand(1, 4), student_ratio=0.1, teacher_ratio=0.6)
    with pytest.raises(ValueError, match=r"shape \(N, L\)"):
        disjoint_masks(torch.rand(10))
