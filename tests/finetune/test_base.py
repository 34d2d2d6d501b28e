"""Shared task machinery: metrics from confusion matrices, layer-wise learning rates, freezing."""

import dataclasses
import math
from typing import Any

import torch

from geopera.core.contracts import FinetunedSpec, FinetuneOptim
from geopera.core.normalisation import BandStats
from geopera.finetune.base import confusion_scores
from geopera.finetune.segmentation import DenseHead, SegmentationTask


def _spec(**optim: Any) -> FinetunedSpec:
    return FinetunedSpec(
        task="segmentation",
        model="vit_small_patch16_224",
        model_kwargs={"depth": 4, "embed_dim": 32, "num_heads": 2},
        in_chans=3,
        bands=["a", "b", "c"],
        data_bands=[0, 1, 2],
        chip_size=32,
        head=DenseHead("upernet", 32),
        classes=[0, 1],
        norm=BandStats((0.0,) * 3, (1.0,) * 3, (0.5,) * 3, (0.2,) * 3),
        optim=FinetuneOptim(**{"lr": 1e-3, "weight_decay": 0.05, "head_lr_scale": 10.0, **optim}),
    )


def test_confusion_scores_by_hand() -> None:
    # truth rows, prediction columns; class 2 never occurs
    confusion = torch.tensor([[5, 1, 0], [2, 2, 0], [0, 0, 0]])
    s = confusion_scores(confusion)
    assert math.isclose(s["iou"][0], 5 / 8)
    assert math.isclose(s["iou"][1], 2 / 5)
    assert s["iou"][2] is None
    assert math.isclose(s["miou"], (5 / 8 + 2 / 5) / 2)
    assert math.isclose(s["f1"][1], 4 / 7)
    assert math.isclose(s["accuracy"], 7 / 10)


def test_layer_decay_scales_each_block() -> None:
    task = SegmentationTask(_spec(layer_decay=0.5))
    lr_of = {}
    for group in task.param_groups():
        for p in group["params"]:
            lr_of[id(p)] = group["lr"]
    vit = task.vit
    assert math.isclose(lr_of[id(vit.blocks[3].attn.qkv.weight)], 1e-3 * 0.5**1)
    assert math.isclose(lr_of[id(vit.blocks[0].attn.qkv.weight)], 1e-3 * 0.5**4)
    assert math.isclose(lr_of[id(vit.patch_embed.proj.weight)], 1e-3 * 0.5**5)
    head = task.model.head.classifier.weight
    assert math.isclose(lr_of[id(head)], 1e-2)


def test_frozen_backbone_is_left_out_of_the_optimiser_and_stays_in_eval() -> None:
    task = SegmentationTask(dataclasses.replace(_spec(), freeze_backbone=True))
    optimised = {id(p) for g in task.param_groups() for p in g["params"]}
    assert not any(id(p) in optimised for p in task.vit.parameters())
    task.train()
    assert not task.vit.training
    assert task.model.head.training
