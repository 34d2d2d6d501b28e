"""Load a ViT backbone for fine-tuning, and fit it to the bands of the labelled data.

``--weights`` may name:

* a geopera run directory (``backbone.pth`` + ``backbone.json`` inside),
* a backbone ``.pth`` file with its ``.json`` description beside it,
* a folder written by ``geopera publish``, read through its ``weights.json`` manifest (the
  folder's Python module is never imported),
* a TorchGeo weights member, ``"Enum.MEMBER"``, resolved by ``torchgeo.models.get_weight``
  among the enums that installed packages define (TorchGeo's own, or one the user registered
  in the same process); remote files are downloaded only because the user named the member,
* a timm model name (``vit_small_patch16_224``): random initialisation.

Every weights file is read with ``torch.load(weights_only=True)``: weights are data, never code.

**Bands.** A source carries its inputs' names and identities (``backbone.json``; published
weights and timm members without identities have their names looked up by
:mod:`geopera.data.identity`).
Which data band feeds which input is decided by :mod:`geopera.models.bandplan`, the one band
rule of every stage; :func:`fit_state_dict` then fits the patch embedding to the plan.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import timm
import torch
from timm.layers import resample_abs_pos_embed
from timm.models import adapt_input_conv
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from geopera.core.contracts import BackboneCard, PublishedWeights
from geopera.core.contracts.backbone import read_identities
from geopera.core.errors import GeoperaError
from geopera.core.identity import BandIdentity
from geopera.core.outputs import sha256_file
from geopera.data.identity import identify
from geopera.models.vit import build_backbone


class WeightsError(GeoperaError):
    """``--weights`` names nothing that can be loaded."""


@dataclass
class BackboneSource:
    """Where backbone weights come from, and what they expect.

    Attributes:
        model: timm architecture name.
        model_kwargs: Extra timm arguments (``embed_dim``, ``depth``...).
        in_chans: Input bands the weights were trained on.
        bands: Their names, or None when unknown.
        identities: What each input measures (None: unknown).
        state_dict: The weights (None: random initialisation).
        origin: Human-readable description of the source.
        ssl_method: Pretraining method, when known.
    """

    model: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    in_chans: int = 3
    bands: list[str] | None = None
    identities: list[BandIdentity | None] | None = None
    state_dict: dict[str, Tensor] | None = None
    origin: str = "random initialisation"
    ssl_method: str | None = None


def _from_backbone_file(weights: Path, meta_file: Path) -> BackboneSource:
    if not meta_file.is_file():
        raise FileNotFoundError(
            f"{meta_file} not found: a backbone .pth needs its .json description beside it "
            "(geopera writes both into each completed run directory)"
        )
    card = BackboneCard.read(meta_file)
    return BackboneSource(
        model=card.model,
        model_kwargs=dict(card.model_kwargs),
        in_chans=card.in_chans,
        bands=list(card.bands) if card.bands else None,
        identities=card.band_identities,
        state_dict=load_state_dict_file(weights),
        origin=str(weights),
        ssl_method=card.ssl_method,
    )


def _known(identities: list[BandIdentity | None]) -> list[BandIdentity | None] | None:
    """The identities when every band has one, else None (a partial guess is no identity)."""
    return identities if identities and all(identities) else None


def load_state_dict_file(path: Path) -> dict[str, Tensor]:
    """A state dict from a file, as data only (``weights_only=True``: no code in it runs)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # refused by the safe unpickler, or not a torch file
        raise WeightsError(
            f"{path} is not a plain state dict that loads safely ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); geopera loads weights as data only"
        ) from err
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors")
    return cast(dict[str, Tensor], state)


def _from_member(member: Any, origin: str) -> BackboneSource:
    meta = member.meta
    url: str = member.url
    if url.startswith("file://"):
        state = load_state_dict_file(Path(url.removeprefix("file://")))
    else:  # the user named a remote member explicitly
        state = member.get_state_dict(progress=True, weights_only=True)
    bands = [str(b) for b in meta["bands"]] if meta.get("bands") else None
    return BackboneSource(
        model=meta["model"],
        in_chans=int(meta["in_chans"]),
        bands=bands,
        identities=_known(identify(bands)) if bands else None,
        state_dict=state,
        origin=origin,
        ssl_method=meta.get("ssl_method"),
    )


def _from_published_folder(folder: Path) -> BackboneSource:
    """Read a ``geopera publish`` folder through its data manifest; no code in it is run."""
    manifest_file = folder / PublishedWeights.FILE
    if not manifest_file.is_file():
        raise WeightsError(
            f"{folder} has no {PublishedWeights.FILE} manifest, and geopera never imports the "
            "Python files of a weights folder; re-publish the run with `geopera publish`, or "
            "import the module yourself and pass its Enum.MEMBER after registering it "
            "(see docs/publish.md)"
        )
    manifest = PublishedWeights.read(manifest_file)
    file = folder / Path(manifest.file_name).name
    if not file.is_file():
        raise FileNotFoundError(f"{file} not found: {manifest_file} names it as the weights file")
    if sha256_file(file) != manifest.sha256:
        raise WeightsError(f"{file}: SHA-256 differs from {manifest_file}; the file is damaged")
    meta = manifest.meta
    bands = [str(b) for b in meta["bands"]] if meta.get("bands") else None
    stored = meta.get("band_identities")
    return BackboneSource(
        model=str(meta["model"]),
        in_chans=int(meta["in_chans"]),
        bands=bands,
        identities=read_identities(stored) if stored else _known(identify(bands or [])),
        state_dict=load_state_dict_file(file),
        origin=f"{manifest.enum_name}.{manifest.member} ({folder})",
        ssl_method=meta.get("ssl_method"),
    )


def resolve_weights(weights: str | Path | None, default_model: str) -> BackboneSource:
    """Find the backbone named by ``--weights`` (see the module docstring).

    Args:
        weights: Run directory, ``.pth`` file, publish folder, ``Enum.MEMBER``, timm name, or
            None for a randomly initialised ``default_model``.
        default_model: Architecture used when ``weights`` is None.

    Returns:
        The backbone source.

    Raises:
        FileNotFoundError: If a path is given that holds no backbone.
        WeightsError: If the name is neither a path, a weights member nor a timm ViT.
    """
    if weights is None:
        return BackboneSource(model=default_model)
    text = str(weights)
    path = Path(text)
    if path.is_dir():
        if (path / BackboneCard.WEIGHTS_FILE).is_file():
            return _from_backbone_file(path / BackboneCard.WEIGHTS_FILE, path / BackboneCard.FILE)
        if (path / PublishedWeights.FILE).is_file() or (path / "weights.csv").is_file():
            return _from_published_folder(path)
        raise FileNotFoundError(
            f"{path} is a folder without backbone.pth (not a completed geopera run) and without "
            f"{PublishedWeights.FILE} (not a `geopera publish` folder)"
        )
    if path.suffix in (".pth", ".pt"):
        if not path.is_file():
            raise FileNotFoundError(f"weights file {path} does not exist")
        return _from_backbone_file(path, path.with_suffix(".json"))
    if "." in text and "/" not in text:
        import torchgeo.models

        try:
            member = torchgeo.models.get_weight(text)
        except (KeyError, ValueError, AttributeError):
            pass
        else:
            return _from_member(member, text)
    if text in timm.list_models(text):
        return BackboneSource(model=text, origin=f"{text}, random initialisation")
    raise WeightsError(
        f"--weights {text!r} is not a run directory, backbone .pth, publish folder, TorchGeo "
        "weights member (Enum.MEMBER) or timm model name; for random initialisation give a "
        "timm ViT name such as vit_small_patch16_224"
    )


def build_vit(
    model: str, in_chans: int, img_size: int, model_kwargs: dict[str, Any] | None = None
) -> VisionTransformer:
    """A timm ViT accepting any input size that is a multiple of its patch size.

    Args:
        model: timm architecture name.
        in_chans: Input bands.
        img_size: Size the position embedding is built for (the chip size).
        model_kwargs: Extra timm arguments.

    Returns:
        The model, without classifier.

    Raises:
        ValueError: If ``model`` is not a timm ViT.
    """
    return build_backbone(model, in_chans, img_size, dynamic_img_size=True, **(model_kwargs or {}))


def fit_state_dict(
    state: dict[str, Tensor],
    vit: VisionTransformer,
    in_chans: int,
    channels: list[int] | None = None,
) -> dict[str, Tensor]:
    """Adapt pretrained weights to a model's inputs and position grid.

    Args:
        state: timm ViT state dict (any grid, any band count).
        vit: The target model.
        in_chans: Its number of input bands.
        channels: Per model input, the weights' input it starts from (a band plan's
            ``channels``); None: the weights' inputs as they are, or timm's
            ``adapt_input_conv`` when the counts differ.

    Returns:
        A state dict that loads strictly into ``vit`` (classifier keys dropped).
    """
    out = {k: v for k, v in state.items() if not k.startswith("head.")}
    weight = out["patch_embed.proj.weight"]  # (D, C_old, p, p)
    if channels is not None and channels != list(range(weight.shape[1])):
        # inputs picked (new ones repeated) from the learned ones: (D, C_new, p, p), scaled so
        # that the patch embedding's output keeps its magnitude
        out["patch_embed.proj.weight"] = weight[:, channels] * (weight.shape[1] / len(channels))
    elif channels is None and weight.shape[1] != in_chans:
        out["patch_embed.proj.weight"] = adapt_input_conv(in_chans, weight)  # (D, C_new, p, p)
    target = vit.pos_embed
    if target is not None and out["pos_embed"].shape != target.shape:
        prefix = 0 if vit.no_embed_class else vit.num_prefix_tokens
        old = out["pos_embed"].shape[1] - prefix
        new = target.shape[1] - prefix
        out["pos_embed"] = resample_abs_pos_embed(
            out["pos_embed"],
            new_size=(int(new**0.5),) * 2,
            old_size=(int(old**0.5),) * 2,
            num_prefix_tokens=prefix,
        )
    return out


def load_into(
    vit: VisionTransformer,
    source: BackboneSource,
    in_chans: int,
    channels: list[int] | None = None,
) -> None:
    """Load a source's weights (if any) into a freshly built ViT, strictly.

    Args:
        vit: Model built with :func:`build_vit` from ``source.model``.
        source: The backbone source.
        in_chans: Number of bands the model takes.
        channels: The band plan's ``channels`` (see :func:`fit_state_dict`).

    Raises:
        WeightsError: If the weights do not match the architecture.
    """
    if source.state_dict is None:
        return
    try:
        fitted = fit_state_dict(source.state_dict, vit, in_chans, channels)
        vit.load_state_dict(fitted, strict=True)
    except (RuntimeError, KeyError) as err:
        raise WeightsError(
            f"weights from {source.origin} do not fit {source.model} "
            f"{source.model_kwargs or ''}: {err}"
        ) from err


def build_frozen_vit(
    source: BackboneSource, in_chans: int, chip_size: int, channels: list[int] | None = None
) -> VisionTransformer:
    """The backbone with its weights, for chips of ``chip_size`` pixels.

    Args:
        source: The backbone source.
        in_chans: Number of bands the model takes.
        chip_size: Chip size in pixels (a multiple of the token size).
        channels: The band plan's ``channels`` (see :func:`fit_state_dict`).

    Raises:
        ValueError: If the chip size is not a multiple of the token size.
    """
    vit = build_vit(source.model, in_chans, chip_size, source.model_kwargs)
    token = int(vit.patch_embed.patch_size[0])
    if chip_size % token:
        raise ValueError(
            f"--chip-size {chip_size} is not a multiple of the backbone's token size {token}"
        )
    load_into(vit, source, in_chans, channels)
    return vit
