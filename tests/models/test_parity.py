"""PerA parity with the authors' implementation: this test defines "PerA" in geopera.

Reference numbers (tests/models/data/pera_reference_tiny.pt) were computed with the authors'
public implementation on a tiny configuration (CPU, float32, drop-path 0); see
../shared/parity/README.md. Tolerances are fixed: outputs 1e-4, losses 1e-5, gradient norms 1e-3
(relative). Never skip or loosen this test.
"""

from dataclasses import fields
from pathlib import Path

import pytest
import torch

from geopera.models.pera import PerA, PerAConfig
from geopera.transforms.views import CropPairs

REFERENCE = Path(__file__).parent / "data" / "pera_reference_tiny.pt"


def reference_key(key: str) -> str:
    """Map the authors' parameter names onto geopera's."""
    key = key.replace("pred_head.mlp0.mlp.", "pixel_head.mlp.")
    key = key.replace("pred_head.last_layer", "pixel_head.last_layer")
    key = key.replace("s_mask_token", "mask_token")
    key = key.replace("last_layer.weight_g", "last_layer.parametrizations.weight.original0")
    return key.replace("last_layer.weight_v", "last_layer.parametrizations.weight.original1")


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual.detach() - expected).norm() / expected.norm())


@pytest.fixture(scope="module")
def reference() -> dict:
    return torch.load(REFERENCE, weights_only=True)


@pytest.fixture(scope="module")
def run(reference: dict) -> tuple:
    cfg = reference["config"]
    model = PerA(
        PerAConfig(
            backbone="vit_small_patch16_224",
            backbone_kwargs={
                "embed_dim": cfg["embed_dim"],
                "depth": cfg["depth"],
                "num_heads": cfg["num_heads"],
                "mlp_ratio": cfg["mlp_ratio"],
                "patch_size": cfg["patch_size"],
            },
            in_chans=3,
            global_size=cfg["global_size"],
            n_global=cfg["num_global"],
            n_local=cfg["num_local"],
            student_ratio=cfg["student_ratio"],
            teacher_ratio=cfg["teacher_ratio"],
            drop_path_rate=0.0,
            prototypes=cfg["head_out_dim"],
            head_hidden_dim=cfg["head_hidden_dim"],
            head_bottleneck_dim=cfg["head_bottleneck_dim"],
            head_layers=cfg["head_layers"],
            student_temp=cfg["student_temp"],
            center_momentum=cfg["center_momentum"],
            dino_weight=cfg["dino_weight"],
            koleo_weight=cfg["koleo_weight"],
            pixel_weight=cfg["pixel_weight"],
        )
    )
    weights = {reference_key(k): v for k, v in reference["state_dict"].items()}
    # the reference's teacher equals its student
    weights.update(
        {
            "teacher." + k[len("student.") :]: v
            for k, v in weights.items()
            if k.startswith("student.")
        }
    )
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert unexpected == []
    assert sorted(missing) == ["dino.center", "dino.has_pending", "dino.pending"]
    assert torch.equal(model.dino.center, reference["center_before"])
    inputs = reference["inputs"]
    views = CropPairs(
        inputs["S_global_crops"],
        inputs["T_global_crops"],
        inputs["S_local_crops"],
        inputs["T_local_crops"],
    )
    model.train()
    out = model(views, teacher_temp=cfg["teacher_temp"], noise=reference["mask_noise"])
    out.loss.backward()
    return model, out


def test_head_outputs(run: tuple, reference: dict) -> None:
    _, out = run
    student, teacher = reference["student_out"], reference["teacher_out"]
    assert relative_error(out.student_global, student["global_cls_tokens"]) < 1e-4
    assert relative_error(out.student_local, student["local_cls_tokens"]) < 1e-4
    assert relative_error(out.teacher_global, teacher["global_cls_tokens"]) < 1e-4
    assert relative_error(out.teacher_local, teacher["local_cls_tokens"]) < 1e-4


def test_pixel_predictions_and_targets(run: tuple, reference: dict) -> None:
    _, out = run
    assert out.pixel_prediction.shape == (4, 7, 768)
    assert (
        relative_error(out.pixel_prediction, reference["student_out"]["global_pred_tokens"]) < 1e-4
    )
    assert relative_error(out.pixel_target, reference["student_out"]["global_patch_target"]) < 1e-4


def test_loss_parts_and_total(run: tuple, reference: dict) -> None:
    _, out = run
    parts, n_global = reference["loss_parts"], reference["config"]["num_global"]
    got = {f.name: float(getattr(out.parts, f.name).detach()) for f in fields(out.parts)}
    # the authors display koleo / n_global and pixel / (n_global * 100)
    assert got["dino_global"] == pytest.approx(float(parts["global_dino_loss"]), rel=1e-5)
    assert got["dino_local"] == pytest.approx(float(parts["local_dino_loss"]), rel=1e-5)
    assert got["koleo"] / n_global == pytest.approx(float(parts["koleo_loss"]), rel=1e-5)
    assert got["pixel"] / (n_global * 100) == pytest.approx(float(parts["mae_loss"]), rel=1e-5)
    assert float(out.loss.detach()) == pytest.approx(float(reference["loss"]), rel=1e-5)


def test_pending_centre(run: tuple, reference: dict) -> None:
    model, out = run
    expected = reference["center_pending_batch_mean"]
    assert relative_error(out.center_update, expected) < 1e-4
    assert relative_error(model.dino.pending, expected) < 1e-4
    assert torch.equal(
        model.dino.center, reference["center_before"]
    )  # applied before the next step


def test_gradient_norms(run: tuple, reference: dict) -> None:
    model, _ = run
    params = dict(model.named_parameters())
    expected = reference["grad_norms"]
    assert len(expected) == 71
    for name, norm in expected.items():
        grad = params[reference_key(name)].grad
        assert grad is not None, name
        assert float(grad.norm()) == pytest.approx(float(norm), rel=1e-3), name
    teacher_grads = [p.grad for n, p in params.items() if n.startswith("teacher.")]
    assert all(g is None for g in teacher_grads)
