"""The end of a completed run: the teacher backbone as a plain timm state dict and its card."""

from geopera import __version__
from geopera.core.contracts import BackboneCard
from geopera.core.errors import (
    NonFiniteError,
)
from geopera.core.normalisation import Normalisation
from geopera.core.outputs import (
    save_torch_atomic,
)
from geopera.data.sampling.shards import PretrainData
from geopera.pretrain.rundir import RunDir
from geopera.pretrain.task import PerATask, non_finite


def export_backbone(
    run: RunDir,
    task: PerATask,
    dm: PretrainData,
    norm: Normalisation,
    steps: int,
) -> None:
    """Write the teacher backbone (``backbone.pth``) and its card (``backbone.json``).

    Args:
        run: The run directory.
        task: The trained task.
        dm: Its data module (bands, sources, ROI).
        norm: The normalisation it trained with.
        steps: Optimiser steps taken.

    Raises:
        NonFiniteError: If the teacher has non-finite weights (nothing is written).
    """
    cfg = task.config
    state = task.model.teacher_state_dict()
    bad = non_finite(state)
    if bad:
        raise NonFiniteError(
            f"the trained teacher has non-finite weights ({len(bad)} tensors, e.g. {bad[0]}); "
            "backbone.pth was not written"
        )
    save_torch_atomic(state, run.path / BackboneCard.WEIGHTS_FILE)
    inventory = dm.describe()
    in_chans = len(dm.band_names)
    card = BackboneCard(
        model=cfg.model.backbone,
        model_kwargs=dict(cfg.model.backbone_kwargs),
        in_chans=in_chans,
        bands=list(dm.band_names),
        band_identities=dm.band_identities(),
        token_size=task.model.token_size,
        img_size=cfg.views.global_size,
        normalisation={
            "mean": list(norm.raw_mean),
            "std": list(norm.raw_std),
            "units": "raw pixel values of the sources, weighted by their sampling weight",
            "per_source": {
                n: {"p2": list(p2), "p98": list(p98)}
                for n, p2, p98 in zip(norm.sources, norm.p2, norm.p98, strict=True)
            },
        },
        resolution={s["name"]: s["res"] for s in inventory["sources"]},
        ssl_method="pera",
        init=cfg.trainer.init,
        roi=inventory["roi"],
        sources=[
            {k: s[k] for k in ("name", "crs", "res", "bands", "dtype", "selected_bands", "files")}
            for s in inventory["sources"]
        ],
        steps=steps,
        shards=inventory.get("shards"),
        geopera_version=__version__,
        load_with=(
            f"timm.create_model({cfg.model.backbone!r}, in_chans={in_chans}, "
            f"img_size={cfg.views.global_size}, num_classes=0, **model_kwargs); "
            "model.load_state_dict(torch.load('backbone.pth', weights_only=True))"
        ),
    )
    card.write(run.path / BackboneCard.FILE)


def trained_normalisation(task: PerATask, dm: PretrainData) -> Normalisation:
    """The normalisation the backbone trained with: the task's buffers, not fresh statistics.

    A resumed run restores them from its checkpoint, so its backbone card describes what the
    weights saw even when the statistics would now be computed differently.
    """
    weights = dm.mix_weights()
    views = task.views
    return Normalisation.of_arrays(
        dm.sampled_sources,
        task.p2.cpu().double().numpy(),  # (S, C)
        task.p98.cpu().double().numpy(),
        views.mean.flatten().cpu().double().numpy(),  # (1, C, 1, 1) -> (C,)
        views.std.flatten().cpu().double().numpy(),
        weights,
    )
