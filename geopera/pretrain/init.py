"""``geopera pretrain --init WEIGHTS``: continued pretraining from an existing backbone.

Student and teacher start from the weights (every form ``--weights`` accepts but a bare timm
name, which is a random initialisation), fitted to the archive's bands by the band rule of
fine-tuning (by identity or name; data bands the weights lack get an adapted input) and to the
crop size (the position embedding is resampled). The heads start fresh; with
``optim.freeze_backbone_steps`` only they learn at first, so that random heads do not wreck the
backbone.
"""

import dataclasses
import os

from torch import Tensor

from geopera.core.errors import BandSelectionError
from geopera.core.identity import BandIdentity
from geopera.models.bandplan import Bands, plan_for
from geopera.models.loading import BackboneSource, WeightsError, load_into, resolve_weights
from geopera.models.pera import PerA
from geopera.pretrain.config import PretrainConfig


def init_source(weights: str, default_model: str) -> BackboneSource:
    """The backbone ``--init`` names (its weights must exist: never a download).

    Raises:
        WeightsError: If it names no weights (a timm name is a random initialisation).
        FileNotFoundError: If a path holds no backbone.
    """
    source = resolve_weights(weights, default_model)
    if source.state_dict is not None:
        return source
    cached = cached_timm_weights(weights)
    if cached is None:
        raise WeightsError(
            f"--init {weights!r} has no weights: a timm name is a random initialisation unless "
            "its pretrained weights are in the local Hugging Face cache (geopera never downloads "
            "them); give a run directory, a backbone .pth with its .json, a publish folder, "
            "Enum.MEMBER, or fetch the timm weights once yourself"
        )
    return dataclasses.replace(source, state_dict=cached, origin=f"{weights} (timm, local cache)")


def cached_timm_weights(name: str) -> dict[str, Tensor] | None:
    """A timm model's pretrained weights from the local Hugging Face cache, or None.

    Only the cache is looked at (``HF_HUB_CACHE``, else the default): no network request.
    """
    import timm
    from huggingface_hub import try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    hub = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub:
        return None
    for file in ("model.safetensors", "pytorch_model.bin"):
        path = try_to_load_from_cache(hub, file, cache_dir=os.environ.get("HF_HUB_CACHE"))
        if isinstance(path, str):
            overlay = {"file": path, "hf_hub_id": None, "url": None}
            model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay)
            return {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    return None


def with_init_architecture(config: PretrainConfig, source: BackboneSource | None) -> PretrainConfig:
    """The config with the ``--init`` backbone's architecture (model name and arguments)."""
    if source is None:
        return config
    model = dataclasses.replace(
        config.model, backbone=source.model, backbone_kwargs=dict(source.model_kwargs or {})
    )
    return dataclasses.replace(config, model=model)


def data_channels(
    source: BackboneSource, names: list[str], identities: list[BandIdentity | None] | None
) -> list[int] | None:
    """Per archive band, in archive order, the weights' input it starts from.

    None: the weights' inputs as they are, or adapted by timm's ``adapt_input_conv`` when the
    band counts differ and the bands are of unknown kind (the plan's note says which).

    Raises:
        BandSelectionError: If some archive band gets no input (the weights cannot be mapped).
    """
    data = Bands(names, identities)
    plan = plan_for(source, data, None, partial=True, extra="adapt")
    if sorted(plan.indices) != list(range(len(names))):
        raise BandSelectionError(
            f"--init {source.origin}: the weights' bands {source.bands} cannot be mapped onto "
            f"the archive's bands {names}; choose --bands the weights know"
        )
    if plan.channels is not None:  # picked (and repeated) inputs, per backbone slot
        by_slot = plan.channels
    elif len(plan.indices) == source.in_chans:  # slot s starts from the weights' input s
        by_slot = list(range(source.in_chans))
    else:  # band counts differ, bands of unknown kind: timm's adapted convolution
        return None
    return [by_slot[plan.indices.index(j)] for j in range(len(names))]


def load_init(
    model: PerA, source: BackboneSource, in_chans: int, channels: list[int] | None
) -> None:
    """Load the weights into the student backbone, and the teacher as its copy."""
    student, teacher = model.student_backbone, model.teacher_backbone
    load_into(student, source, in_chans, channels)
    teacher.load_state_dict(student.state_dict())
