import pytest
import timm
import torch

from geopera.models.pera import PerA, PerAConfig
from geopera.transforms.views import AlignedViews, ViewsConfig

TINY = {"embed_dim": 32, "depth": 4, "num_heads": 2}


def _model(in_chans: int = 5, n_local: int = 2, drop_path: float = 0.1) -> PerA:
    return PerA(
        PerAConfig(
            backbone_kwargs=TINY,
            in_chans=in_chans,
            global_size=64,
            n_global=2,
            n_local=n_local,
            drop_path_rate=drop_path,
            prototypes=64,
            head_hidden_dim=48,
            head_bottleneck_dim=16,
        )
    )


def _views(in_chans: int, n_local: int, batch: int = 3) -> object:
    views = AlignedViews(
        ViewsConfig(global_size=64, local_size=32, n_global=2, n_local=n_local),
        mean=[0.5] * in_chans,
        std=[0.25] * in_chans,
    )
    return views(torch.rand(batch, in_chans, 80, 80), seed=0)


@pytest.mark.parametrize(("in_chans", "n_local"), [(5, 2), (1, 0), (13, 3)])
def test_forward_backward_reaches_every_student_parameter(in_chans: int, n_local: int) -> None:
    model = _model(in_chans, n_local).train()
    out = model(_views(in_chans, n_local), teacher_temp=0.04, with_health=True)
    assert torch.isfinite(out.loss)
    assert out.student_global.shape == (6, 64)
    assert out.student_local.shape == (3 * n_local, 64)
    assert out.pixel_prediction.shape == out.pixel_target.shape == (6, 3, 16 * 16 * in_chans)
    out.loss.backward()
    for name, p in model.named_parameters():
        if name.startswith("teacher."):
            assert p.grad is None, name
            assert not p.requires_grad, name
        else:
            assert p.grad is not None, name
            assert torch.isfinite(p.grad).all(), name
    assert out.health is not None
    assert out.health.entropy > 0
    assert out.health.std >= 0


def test_teacher_stays_in_eval_and_ema_moves_it() -> None:
    model = _model().train()
    assert model.student.training
    assert not model.teacher.training
    before = model.teacher_state_dict()
    with torch.no_grad():
        for p in model.student.parameters():
            p.add_(1.0)
    model.update_teacher(0.9)
    after = model.teacher_state_dict()
    student = model.student_backbone.state_dict()
    for key, value in before.items():
        assert torch.allclose(after[key], 0.9 * value + 0.1 * student[key], atol=1e-6), key
    model.update_teacher(1.0)
    assert all(torch.equal(after[k], v) for k, v in model.teacher_state_dict().items())


def test_teacher_export_loads_into_timm() -> None:
    model = _model(in_chans=4)
    state = model.teacher_state_dict()
    plain = timm.create_model(
        "vit_small_patch16_224", in_chans=4, img_size=64, num_classes=0, **TINY
    )
    plain.load_state_dict(state, strict=True)
    x = torch.randn(2, 4, 64, 64)
    assert torch.allclose(plain.eval()(x), model.teacher_backbone.eval()(x), atol=1e-6)


def test_one_optimiser_step_reduces_loss_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    model = _model(drop_path=0.0).train()
    views = _views(5, 2)
    noise = {"global": torch.rand(6, 16), "local": torch.rand(6, 4)}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(5):
        model.dino.center.zero_()
        model.dino.has_pending.fill_(False)
        out = model(views, teacher_temp=0.04, noise=noise)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss.detach()))
    assert losses[-1] < losses[0]
