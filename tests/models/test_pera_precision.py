"""PerA under the precisions and compilers that GPUs use, checked on the CPU."""

import subprocess
import sys

import pytest
import torch

from geopera.models.pera import PerA, PerAConfig
from geopera.transforms.views import AlignedViews, ViewsConfig


def _model(depth: int = 2) -> PerA:
    torch.manual_seed(0)
    return PerA(
        PerAConfig(
            backbone_kwargs={"embed_dim": 64, "depth": depth, "num_heads": 2},
            in_chans=3,
            global_size=64,
            n_local=2,
            drop_path_rate=0.0,
            prototypes=128,
            head_hidden_dim=64,
            head_bottleneck_dim=32,
        )
    ).train()


def _pairs() -> object:
    views = AlignedViews(
        ViewsConfig(global_size=64, local_size=32, n_local=2), mean=[0.5] * 3, std=[0.25] * 3
    )
    return views(torch.rand(4, 3, 80, 80), seed=0)


def test_bf16_autocast_step_is_finite_and_close_to_float32() -> None:
    model, pairs = _model(), _pairs()
    torch.manual_seed(2)  # the same masks in both passes
    full = model(pairs, teacher_temp=0.04)
    model.dino.has_pending.fill_(False)  # and the same DINO centre (no update in between)
    torch.manual_seed(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = model(pairs, teacher_temp=0.04)
    assert torch.isfinite(half.loss)
    # Same masks and weights: bf16 (8-bit mantissa) moves the loss by well under a percent.
    assert half.loss.item() == pytest.approx(full.loss.item(), rel=2e-2)
    half.loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if not n.startswith("teacher.")]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.slow
def test_compiled_two_block_vit_step_matches_eager() -> None:
    eager, compiled = _model(), _model()
    compiled.load_state_dict(eager.state_dict())
    compiled.compile_blocks()  # what trainer.compile does
    blocks = [*compiled.student_backbone.blocks, *compiled.teacher_backbone.blocks]
    assert all(b._compiled_call_impl is not None for b in blocks)
    torch._dynamo.reset()
    pairs = _pairs()
    losses = []
    for model in (eager, compiled):
        torch.manual_seed(3)
        out = model(pairs, teacher_temp=0.04)
        out.loss.backward()
        losses.append(out.loss.item())
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # it really compiled
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)
    for (name, a), (_, b) in zip(
        eager.student_backbone.named_parameters(),
        compiled.student_backbone.named_parameters(),
        strict=True,
    ):
        assert a.grad is not None, name
        assert b.grad is not None, name
        assert torch.allclose(a.grad, b.grad, rtol=1e-3, atol=1e-5), name


def test_pera_imports_with_torch_timm_and_kornia_alone() -> None:
    # The device machine's image lacks the geospatial stack; the step benchmark needs only this.
    code = """
import importlib.abc, sys
BLOCKED = {"rasterio", "torchgeo", "shapely", "pyproj", "geopandas", "pyogrio",
           "segmentation_models_pytorch", "lightning", "pyarrow"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"blocked: {name}", name=name)
        return None
sys.meta_path.insert(0, Block())
from geopera.models.pera import PerA, PerAConfig
from geopera.transforms.views import AlignedViews
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"
