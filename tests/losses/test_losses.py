import einops
import pytest
import torch
import torch.nn.functional as F

from geopera.losses.dino import DINOLoss
from geopera.losses.koleo import koleo_loss
from geopera.losses.pixel import patchify, pixel_loss


def test_koleo_matches_brute_force() -> None:
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(0))
    unit = F.normalize(x, dim=-1)
    distances = torch.cdist(unit, unit) + torch.eye(7) * 10  # exclude self
    expected = -torch.log(distances.min(dim=1).values).mean()
    assert float(koleo_loss(x)) == pytest.approx(float(expected), rel=1e-5)
    with pytest.raises(ValueError, match="at least 2 rows"):
        koleo_loss(torch.randn(1, 4))


def test_patchify_is_channel_last_per_patch() -> None:
    images = torch.randn(2, 3, 8, 12)
    expected = einops.rearrange(images, "n c (h p) (w q) -> n (h w) (p q c)", p=4, q=4)
    assert torch.equal(patchify(images, 4), expected)


def test_pixel_loss_sums_values_and_averages_tokens() -> None:
    prediction = torch.zeros(2, 3, 4)
    target = torch.ones(2, 3, 4)
    assert float(pixel_loss(prediction, target)) == pytest.approx(4.0)


def test_dino_centre_update_is_applied_before_the_next_softmax() -> None:
    loss = DINOLoss(out_dim=4, student_temp=0.1, center_momentum=0.9)
    teacher = torch.tensor([[1.0, 0.0, 0.0, 0.0], [3.0, 0.0, 0.0, 0.0]])
    probs = loss.teacher_probabilities(teacher, 0.5)
    assert torch.allclose(probs, F.softmax(teacher / 0.5, dim=-1))  # centre still zero
    loss.update_center(teacher)
    assert torch.equal(loss.center, torch.zeros(1, 4))  # pending only
    loss.teacher_probabilities(teacher, 0.5)
    assert torch.allclose(loss.center, torch.tensor([[0.2, 0.0, 0.0, 0.0]]))  # 0.1 * mean


def test_dino_matches_each_crop_with_its_own_teacher_crop() -> None:
    loss = DINOLoss(out_dim=3)
    student = torch.randn(4, 3)
    probs = F.softmax(torch.randn(4, 3), dim=-1)
    expected = sum(
        -(probs[i : i + 2] * F.log_softmax(student[i : i + 2] / 0.1, dim=-1)).sum(-1).mean()
        for i in (0, 2)
    )
    assert float(loss(student, probs, n_crops=2)) == pytest.approx(float(expected))
