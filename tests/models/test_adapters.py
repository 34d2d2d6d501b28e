"""ViT pyramid adapters: shapes, gradients and the timm ViT inside every task model."""

import pytest
import torch

from geopera.models.adapters import (
    ChangeSegmenter,
    DPTSegmenter,
    PyramidSegmenter,
    ViTPyramid,
    build_detector,
    pyramid_indices,
    vit_features,
    vit_of,
)
from geopera.models.loading import build_vit

TINY = {"depth": 4, "embed_dim": 32, "num_heads": 2}


@pytest.fixture
def vit() -> torch.nn.Module:
    return build_vit("vit_small_patch16_224", 4, 64, TINY)


def test_pyramid_has_strides_4_to_32(vit: torch.nn.Module) -> None:
    x = torch.randn(2, 4, 64, 96)
    feats = ViTPyramid(32)(vit_features(vit, x, pyramid_indices(4)))
    assert [tuple(f.shape[-2:]) for f in feats] == [(16, 24), (8, 12), (4, 6), (2, 3)]
    assert [f.shape[1] for f in feats] == [8, 16, 32, 32]
    assert pyramid_indices(12) == [2, 5, 8, 11]


@pytest.mark.parametrize("decoder", ["upernet", "fpn"])
def test_segmenter_output_and_gradients_reach_the_backbone(
    vit: torch.nn.Module, decoder: str
) -> None:
    model = PyramidSegmenter(vit, 5, decoder, 32)
    out = model(torch.randn(2, 4, 64, 64))
    assert out.shape == (2, 5, 64, 64)
    out.mean().backward()
    assert vit.patch_embed.proj.weight.grad is not None
    assert vit.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert vit_of(model) is vit


def test_dpt_holds_a_timm_vit_and_rejects_depth_overrides() -> None:
    model = DPTSegmenter("vit_tiny_patch16_224", 4, 64, 3)
    assert model(torch.randn(1, 4, 64, 64)).shape == (1, 3, 64, 64)
    assert vit_of(model) is model.dpt.encoder.model
    with pytest.raises(ValueError, match="depth"):
        DPTSegmenter("vit_small_patch16_224", 4, 64, 3, TINY)


@pytest.mark.parametrize("fusion", ["diff", "concat"])
def test_change_model_is_siamese(vit: torch.nn.Module, fusion: str) -> None:
    model = ChangeSegmenter(vit, fusion, "upernet", 32).eval()
    a, b = torch.randn(2, 4, 64, 64), torch.randn(2, 4, 64, 64)
    assert model(a, b).shape == (2, 2, 64, 64)
    if fusion == "diff":  # |a - b| is symmetric in the dates
        assert torch.allclose(model(a, b), model(b, a), atol=1e-5)
    with pytest.raises(ValueError, match="fusion"):
        ChangeSegmenter(vit, "sum", "upernet", 32)


def test_detector_trains_and_predicts(vit: torch.nn.Module) -> None:
    model = build_detector(vit, 2, 64, 4)
    images = list(torch.randn(2, 4, 64, 64))
    targets = [{"boxes": torch.tensor([[4.0, 4.0, 30.0, 40.0]]), "labels": torch.tensor([2])}] * 2
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    sum(losses.values()).backward()
    assert vit.blocks[-1].mlp.fc2.weight.grad is not None
    out = model.eval()(images)
    assert out[0]["boxes"].shape[1] == 4
    assert vit_of(model) is vit
