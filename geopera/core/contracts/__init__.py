"""Typed, versioned files that one stage writes and another reads.

* :class:`BackboneCard` (``backbone.json``): what a pretrained backbone is, written by
  ``geopera pretrain`` beside ``backbone.pth``, read by ``finetune``, ``publish`` and everything
  that resolves ``--weights``.
* :class:`RunStatus` (``run.json``): a pretraining run's state and health, read by ``publish``.
* :class:`FinetunedSpec`: what rebuilds a fine-tuned model, stored as the ``spec`` hyper-parameter
  of ``model.ckpt`` by ``geopera finetune``, read by ``predict`` and ``evaluate``; its
  :class:`TaskSection` is the task's own part.
* :class:`PublishedWeights` (``weights.json``): the data manifest of a ``geopera publish`` folder.
* :class:`EmbeddingSet` (``embeddings.json``): what a ``geopera embed`` folder holds.
* :class:`ShardSet` (``shards.json``): what a ``geopera archive shards`` folder holds, read by
  ``pretrain --shards``.

Each carries ``format_version`` and its file name (``FILE``). A file without a version, or of a
version newer than this geopera knows, is refused with a clear message. Names mean one thing:
``token_size`` is the ViT's patch (token) size in pixels, never the size of a sampled patch or
chip.
"""

from geopera.core.contracts.backbone import BackboneCard, PublishedWeights
from geopera.core.contracts.base import ContractError
from geopera.core.contracts.embeddings import EmbeddingRaster, EmbeddingSet
from geopera.core.contracts.finetuned import FinetunedSpec, FinetuneOptim, TaskSection
from geopera.core.contracts.run import (
    CollapseRecord,
    LearningRate,
    ProbeRecord,
    Resume,
    RunState,
    RunStatus,
    SkippedRecord,
)
from geopera.core.contracts.shards import ShardSet, ShardSource

__all__ = [
    "BackboneCard",
    "CollapseRecord",
    "ContractError",
    "EmbeddingRaster",
    "EmbeddingSet",
    "FinetuneOptim",
    "FinetunedSpec",
    "LearningRate",
    "ProbeRecord",
    "PublishedWeights",
    "Resume",
    "RunState",
    "RunStatus",
    "ShardSet",
    "ShardSource",
    "SkippedRecord",
    "TaskSection",
]
