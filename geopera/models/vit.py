"""Sparse forwards on timm's ``VisionTransformer``: run only the class token and kept patches.

The backbone is a plain timm ViT (any ``in_chans``, patch size and image size; timm blocks with
their fused attention). The functions here reuse its modules (``patch_embed``, ``cls_token``,
``pos_embed``, ``blocks``, ``norm``) and never re-implement attention, so the backbone's
``state_dict`` is a plain timm state dict, ready for downstream use.

Position embeddings are added before tokens are dropped; for crops smaller (or larger) than the
grid the embedding was built for, they are resized DINOv2-style (bicubic, scale factor
``(n + 0.1) / sqrt(N)`` per side, no antialiasing), as the authors' implementation does.
"""

import math
from typing import Any, cast

import timm
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

#: Interpolation offset of DINOv2's position-embedding resize.
POS_INTERP_OFFSET = 0.1


def build_backbone(
    name: str,
    in_chans: int,
    img_size: int,
    drop_path_rate: float = 0.0,
    **overrides: Any,
) -> VisionTransformer:
    """Create a timm ViT backbone for PerA (no classifier, no layer scale).

    Args:
        name: timm model name, e.g. ``"vit_small_patch16_224"`` (the architectures that
            ``torchgeo.models`` has builders for are the ones that can be published).
        in_chans: Number of input bands.
        img_size: Global crop size (the grid the position embedding is built for).
        drop_path_rate: Stochastic depth (the student uses 0.3 in the paper).
        **overrides: Other timm arguments (``embed_dim``, ``depth``, ``num_heads``...).

    Returns:
        The timm model, accepting any input size that is a multiple of the patch size.

    Raises:
        ValueError: If ``name`` is not a timm ViT.
    """
    try:
        model = timm.create_model(
            name,
            pretrained=False,
            num_classes=0,
            in_chans=in_chans,
            img_size=img_size,
            drop_path_rate=drop_path_rate,
            **overrides,
        )
    except RuntimeError as err:
        raise ValueError(f"unknown timm model {name!r} ({err})") from err
    except TypeError as err:  # a non-ViT entry point rejects img_size
        raise ValueError(f"{name!r} is not a timm VisionTransformer ({err})") from err
    if not isinstance(model, VisionTransformer) or model.cls_token is None:
        raise ValueError(f"{name!r} is not a timm VisionTransformer with a class token")
    model.patch_embed.strict_img_size = False  # local crops are smaller than the global grid
    return model


def token_size(vit: VisionTransformer) -> int:
    """The token size of a timm ViT: its (square) patch size in pixels."""
    return int(vit.patch_embed.patch_size[0])


def resize_pos_embed(vit: VisionTransformer, rows: int, cols: int) -> Tensor:
    """Position embedding for a ``rows x cols`` patch grid, class position first.

    Args:
        vit: The backbone.
        rows: Patch rows of the input.
        cols: Patch columns of the input.

    Returns:
        (1, 1 + rows * cols, D).
    """
    pos = cast(Tensor, vit.pos_embed)
    n_grid = pos.shape[1] - 1
    if rows * cols == n_grid and rows == cols:
        return pos
    side = int(math.sqrt(n_grid))
    dim = pos.shape[-1]
    cls_pos, patch_pos = pos[:, :1], pos[:, 1:].float()
    grid = patch_pos.reshape(1, side, side, dim).permute(0, 3, 1, 2)  # (1, N, D) -> (1, D, s, s)
    scale = ((rows + POS_INTERP_OFFSET) / side, (cols + POS_INTERP_OFFSET) / side)
    grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=False)
    if grid.shape[-2:] != (rows, cols):
        raise ValueError(
            f"position-embedding resize gave {tuple(grid.shape[-2:])}, not {rows}x{cols}"
        )
    patch_pos = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, dim)  # (1, D, r, c) -> (1, r*c, D)
    return torch.cat([cls_pos, patch_pos.to(pos.dtype)], dim=1)


def embed(
    vit: VisionTransformer, x: Tensor, mask_token: Tensor | None = None, keep: Tensor | None = None
) -> Tensor:
    """Patch-embed, mask patches where ``keep`` is False, prepend the class token, add positions.

    Args:
        vit: The backbone.
        x: (N, C, H, W) images, H and W multiples of the patch size.
        mask_token: (1, 1, D) token put at every patch where ``keep`` is False.
        keep: (N, L) boolean, True at patches that keep their embedding.

    Returns:
        (N, 1 + L, D) tokens with position embeddings.
    """
    p = token_size(vit)
    rows, cols = x.shape[-2] // p, x.shape[-1] // p
    tokens = vit.patch_embed(x)  # (N, C, H, W) -> (N, L, D)
    if mask_token is not None and keep is not None:
        tokens = torch.where(keep[..., None], tokens, mask_token.to(tokens.dtype))
    cls = cast(Tensor, vit.cls_token).expand(tokens.shape[0], -1, -1)  # (1, 1, D) -> (N, 1, D)
    tokens = torch.cat([cls, tokens], dim=1)  # (N, 1 + L, D)
    return tokens + resize_pos_embed(vit, rows, cols)


def gather_tokens(tokens: Tensor, patches: Tensor) -> Tensor:
    """Class token plus the listed patches.

    Args:
        tokens: (N, 1 + L, D).
        patches: (N, k) patch indices (0-based over the L patches).

    Returns:
        (N, 1 + k, D).
    """
    index = torch.cat([torch.zeros_like(patches[:, :1]), patches + 1], dim=1)  # (N, 1 + k)
    return torch.gather(tokens, 1, index[..., None].expand(-1, -1, tokens.shape[-1]))


def scatter_tokens(tokens: Tensor, patches: Tensor, values: Tensor) -> Tensor:
    """Write class token plus listed patches back into a full token tensor (out of place).

    Args:
        tokens: (N, 1 + L, D).
        patches: (N, k) patch indices.
        values: (N, 1 + k, D).

    Returns:
        (N, 1 + L, D).
    """
    index = torch.cat([torch.zeros_like(patches[:, :1]), patches + 1], dim=1)
    return tokens.scatter(1, index[..., None].expand(-1, -1, tokens.shape[-1]), values)


#: Attribute of a timm ViT that holds its batch-subset stochastic-depth rate.
SAMPLE_DROP = "geopera_sample_drop"


def set_stochastic_depth(vit: VisionTransformer, rate: float) -> None:
    """The same stochastic depth in every block, as the authors' code (DINOv2 style) does.

    The authors use ``drop_path_uniform``: one rate for all blocks, not timm's ramp from 0.
    Above 0.1, each residual branch of a block runs on a random ``1 - rate`` share of the
    batch only (the rest skip it) and is scaled by ``B / kept`` (:func:`run_blocks`); up to 0.1,
    timm's per-sample ``DropPath`` with that rate is used in every block.

    Args:
        vit: A backbone built with ``drop_path_rate=0``.
        rate: The stochastic-depth rate.
    """
    from timm.layers import DropPath

    if not 0.0 <= rate < 1.0:
        raise ValueError(f"drop_path_rate must be in [0, 1), got {rate}")
    setattr(vit, SAMPLE_DROP, rate if rate > 0.1 else 0.0)
    if 0.0 < rate <= 0.1:
        for block in vit.blocks:
            block.drop_path1 = DropPath(rate)
            block.drop_path2 = DropPath(rate)


def residual_on_subset(x: Tensor, branch: Any, rate: float) -> Tensor:
    """``x + branch(x)`` for a random ``1 - rate`` share of the batch, scaled; others keep x.

    Args:
        x: (B, T, D) tokens.
        branch: The residual branch, (b, T, D) -> (b, T, D).
        rate: Share of the batch that skips the branch.

    Returns:
        (B, T, D) tokens.
    """
    b = x.shape[0]
    keep = max(int(b * (1 - rate)), 1)
    index = torch.randperm(b, device=x.device)[:keep]
    residual = branch(x[index])  # (keep, T, D)
    return torch.index_add(x, 0, index, residual.to(x.dtype), alpha=b / keep)


def run_blocks(
    vit: VisionTransformer, tokens: Tensor, start: int = 0, stop: int | None = None
) -> Tensor:
    """Run ``vit.blocks[start:stop]`` on a token sequence (N, T, D) -> (N, T, D).

    In training mode, a backbone with a batch-subset rate (:func:`set_stochastic_depth`) runs
    each block's attention and MLP branches on a random subset of the batch.
    """
    rate = getattr(vit, SAMPLE_DROP, 0.0) if vit.training else 0.0
    for block in vit.blocks[start:stop]:
        if rate > 0.0:
            tokens = residual_on_subset(tokens, lambda t, b=block: b.ls1(b.attn(b.norm1(t))), rate)
            tokens = residual_on_subset(tokens, lambda t, b=block: b.ls2(b.mlp(b.norm2(t))), rate)
        else:
            tokens = block(tokens)
    return tokens


def encode_visible(vit: VisionTransformer, x: Tensor, visible: Tensor) -> Tensor:
    """Class token plus visible patches through every block and the final norm.

    Args:
        vit: The backbone.
        x: (N, C, H, W) images.
        visible: (N, k) patch indices to keep, ascending.

    Returns:
        (N, 1 + k, D) normalised tokens (class token first).
    """
    tokens = gather_tokens(embed(vit, x), visible)  # (N, 1 + L, D) -> (N, 1 + k, D)
    out: Tensor = vit.norm(run_blocks(vit, tokens))
    return out


def encode_with_mask_tokens(
    vit: VisionTransformer, x: Tensor, student: Tensor, token: Tensor, mask_token: Tensor
) -> tuple[Tensor, Tensor]:
    """The student's global-crop forward: mask tokens join at depth // 2.

    The first ``depth // 2`` blocks run on the class token and the student patches; then the
    mask-token positions (mask token plus position embedding, untouched so far) join, and the
    remaining blocks run on class + student + mask-token positions, in ascending patch order.

    Args:
        vit: The backbone.
        x: (N, C, H, W) student views.
        student: (N, n_s) student patch indices, ascending.
        token: (N, n_m) mask-token patch indices, ascending.
        mask_token: (1, 1, D) learnable mask token.

    Returns:
        The class token (N, D) and the outputs at the mask-token positions (N, n_m, D), after
        the final norm.
    """
    keep = torch.zeros(x.shape[0], embed_patch_count(vit, x), dtype=torch.bool, device=x.device)
    keep.scatter_(1, student, True)
    full = embed(vit, x, mask_token, keep)  # (N, 1 + L, D)
    half = len(vit.blocks) // 2
    first = run_blocks(vit, gather_tokens(full, student), 0, half)  # (N, 1 + n_s, D)
    full = scatter_tokens(full, student, first)
    union = torch.sort(torch.cat([student, token], dim=1), dim=1).values  # (N, n_s + n_m)
    second = vit.norm(run_blocks(vit, gather_tokens(full, union), half))  # (N, 1 + n_s + n_m, D)
    full = scatter_tokens(full, union, second)
    at_tokens = gather_tokens(full, token)[:, 1:]  # (N, 1 + n_m, D) -> (N, n_m, D)
    return second[:, 0], at_tokens


def embed_patch_count(vit: VisionTransformer, x: Tensor) -> int:
    """Number of patches L of an input (N, C, H, W)."""
    p = token_size(vit)
    return (x.shape[-2] // p) * (x.shape[-1] // p)


#: geopera's own parameters that take no weight decay, beside what timm's models name.
OWN_NO_DECAY = frozenset({"mask_token"})


def no_decay_names(model: nn.Module) -> frozenset[str]:
    """Parameter names (their last part) that take no weight decay.

    What timm's ``no_weight_decay()`` names on any module of ``model`` (``pos_embed``,
    ``cls_token``...), and :data:`OWN_NO_DECAY`; biases and norms are 1-d and never decayed
    (:func:`decays`).
    """
    found = set(OWN_NO_DECAY)
    for module in model.modules():
        named = getattr(module, "no_weight_decay", None)
        if callable(named):
            found |= {str(n).rsplit(".", 1)[-1] for n in named()}
    return frozenset(found)


def decays(name: str, param: Tensor, exempt: frozenset[str]) -> bool:
    """Whether weight decay applies to a parameter: matrices and kernels, not the exempt names.

    Args:
        name: The parameter's dotted name.
        param: The parameter.
        exempt: :func:`no_decay_names` of the model.
    """
    return param.ndim > 1 and name.rsplit(".", 1)[-1] not in exempt
