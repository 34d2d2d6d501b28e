import pytest
import timm
import torch

from geopera.models.heads import ProjectionHead
from geopera.models.vit import (
    build_backbone,
    encode_visible,
    encode_with_mask_tokens,
    resize_pos_embed,
)

TINY = {"embed_dim": 32, "depth": 4, "num_heads": 2}


@pytest.mark.parametrize("in_chans", [1, 4, 13])
def test_all_tokens_equals_plain_timm_forward(in_chans: int) -> None:
    vit = build_backbone("vit_small_patch16_224", in_chans, 64, **TINY).eval()
    x = torch.randn(2, in_chans, 64, 64)
    every = torch.arange(16).expand(2, -1)
    ours = encode_visible(vit, x, every)  # (2, 17, 32)
    reference = vit.forward_features(x)  # timm's own forward on all tokens
    assert torch.allclose(ours, reference, atol=1e-5)


def test_state_dict_is_plain_timm() -> None:
    vit = build_backbone("vit_small_patch16_224", 5, 96, **TINY)
    fresh = timm.create_model(
        "vit_small_patch16_224", in_chans=5, img_size=96, num_classes=0, **TINY
    )
    fresh.load_state_dict(vit.state_dict(), strict=True)
    x = torch.randn(1, 5, 96, 96)
    assert torch.allclose(
        fresh.eval().forward_features(x), vit.eval().forward_features(x), atol=1e-6
    )


def test_dropping_tokens_matches_forward_on_kept_tokens_only() -> None:
    vit = build_backbone("vit_small_patch16_224", 3, 64, **TINY).eval()
    x = torch.randn(1, 3, 64, 64)
    keep = torch.tensor([[0, 5, 10, 15]])
    sparse = encode_visible(vit, x, keep)
    # reference: zero the dropped patches' influence by running timm blocks on the same tokens
    tokens = vit.patch_embed(x) + vit.pos_embed[:, 1:]
    cls = vit.cls_token + vit.pos_embed[:, :1]
    seq = torch.cat([cls, tokens[:, keep[0]]], dim=1)
    reference = vit.norm(vit.blocks(seq))
    assert torch.allclose(sparse, reference, atol=1e-5)


def test_mask_tokens_join_at_half_depth() -> None:
    vit = build_backbone("vit_small_patch16_224", 3, 64, **TINY).eval()
    x = torch.randn(2, 3, 64, 64)
    student = torch.tensor([[1, 4], [0, 9]])
    token = torch.tensor([[2, 3], [5, 6]])
    mask_token = torch.randn(1, 1, 32)
    cls, at_tokens = encode_with_mask_tokens(vit, x, student, token, mask_token)
    assert cls.shape == (2, 32)
    assert at_tokens.shape == (2, 2, 32)
    # independent reference for row 0
    pos = vit.pos_embed
    emb = vit.patch_embed(x[:1]) + pos[:, 1:]
    first = torch.cat([vit.cls_token + pos[:, :1], emb[:, [1, 4]]], dim=1)
    first = vit.blocks[:2](first)
    masked = mask_token + pos[:, 1:][:, [2, 3]]
    second = torch.cat(
        [first[:, :1], first[:, 1:2], masked, first[:, 2:3]], dim=1
    )  # patches 1, 2, 3, 4
    second = vit.norm(vit.blocks[2:](second))
    assert torch.allclose(cls[:1], second[:, 0], atol=1e-5)
    assert torch.allclose(at_tokens[:1], second[:, 2:4], atol=1e-5)


def test_pos_embed_resize_dinov2_style() -> None:
    vit = build_backbone("vit_small_patch16_224", 3, 96, **TINY)
    assert resize_pos_embed(vit, 6, 6) is vit.pos_embed
    small = resize_pos_embed(vit, 3, 3)
    assert small.shape == (1, 10, 32)
    assert torch.equal(small[:, 0], vit.pos_embed[:, 0])
    grid = vit.pos_embed[:, 1:].reshape(1, 6, 6, 32).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(
        grid, scale_factor=(3.1 / 6, 3.1 / 6), mode="bicubic"
    )
    assert torch.allclose(small[:, 1:], expected.permute(0, 2, 3, 1).reshape(1, 9, 32))


def test_contract_backward_reaches_every_parameter() -> None:
    vit = build_backbone("vit_small_patch16_224", 4, 32, drop_path_rate=0.1, **TINY)
    head = ProjectionHead(32, 16, hidden_dim=24, bottleneck_dim=8)
    x = torch.randn(2, 4, 32, 32)
    cls, at_tokens = encode_with_mask_tokens(
        vit, x, torch.tensor([[0], [1]]), torch.tensor([[2], [3]]), vit.cls_token
    )
    loss = head(cls).sum() + at_tokens.sum()
    loss.backward()
    for name, p in list(vit.named_parameters()) + list(head.named_parameters()):
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


def test_unknown_backbone() -> None:
    with pytest.raises(ValueError, match="unknown timm model"):
        build_backbone("vit_nope", 3, 64)
    with pytest.raises(ValueError, match="not a timm VisionTransformer"):
        build_backbone("resnet18", 3, 64)


def test_stochastic_depth_is_uniform_and_on_a_batch_subset() -> None:
    """The authors' drop_path_uniform: 0.3 in every block, 70 % of the batch runs a branch."""
    from geopera.models.vit import SAMPLE_DROP, residual_on_subset, run_blocks, set_stochastic_depth

    vit = build_backbone("vit_small_patch16_224", 3, 32, **TINY)
    set_stochastic_depth(vit, 0.3)
    assert getattr(vit, SAMPLE_DROP) == 0.3
    # a branch that adds 1: exactly int(10 * 0.7) = 7 rows get 10 / 7, the others nothing
    x = torch.zeros(10, 4, 8)
    out = residual_on_subset(x, lambda t: torch.ones_like(t), 0.3)
    changed = (out != 0).all(dim=(1, 2))
    assert int(changed.sum()) == 7
    assert torch.allclose(out[changed], torch.full_like(out[changed], 10 / 7))
    assert (out[~changed] == 0).all()
    # eval mode: the plain blocks; training mode: different, and gradients reach every block
    tokens = torch.randn(6, 5, vit.embed_dim)
    vit.eval()
    plain = tokens
    for block in vit.blocks:
        plain = block(plain)
    assert torch.allclose(run_blocks(vit, tokens), plain, atol=1e-6)
    vit.train()
    torch.manual_seed(0)
    dropped = run_blocks(vit, tokens)
    assert not torch.allclose(dropped, plain)
    dropped.sum().backward()
    assert all(b.attn.qkv.weight.grad is not None for b in vit.blocks)
    # low rates: timm's per-sample DropPath, with the same rate in every block
    low = build_backbone("vit_small_patch16_224", 3, 32, **TINY)
    set_stochastic_depth(low, 0.1)
    assert getattr(low, SAMPLE_DROP) == 0.0
    assert {b.drop_path1.drop_prob for b in low.blocks} == {0.1}


def test_weight_decay_skips_what_timm_names_biases_and_norms() -> None:
    from geopera.models.loading import build_vit
    from geopera.models.vit import decays, no_decay_names

    vit = build_vit("vit_small_patch16_224", 3, 32, {"depth": 1, "embed_dim": 32, "num_heads": 2})
    exempt = no_decay_names(vit)
    assert {"pos_embed", "cls_token", "mask_token"} <= exempt  # timm's own, and geopera's
    decayed = {n for n, p in vit.named_parameters() if decays(n, p, exempt)}
    assert "blocks.0.attn.qkv.weight" in decayed
    assert "patch_embed.proj.weight" in decayed
    assert not decayed & {"pos_embed", "cls_token", "blocks.0.attn.qkv.bias", "norm.weight"}
