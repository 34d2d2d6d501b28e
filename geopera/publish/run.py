"""``geopera publish``: a run's teacher backbone as a TorchGeo ``WeightsEnum`` member.

Writes into a new folder:

* ``{model}_{name}-{sha256[:8]}.pth``: a plain state dict for the timm model that TorchGeo's
  builder of the same name creates (224 px grid: the position embedding is resampled with timm's
  ``resample_abs_pos_embed``, exactly as timm's dynamic-size forward would do on the fly);
* ``{module}.py``: a ``WeightsEnum`` subclass with one ``Weights(url, transforms, meta)`` member;
* ``weights.json``: the data manifest that ``--weights FOLDER`` reads (geopera never imports
  the module);
* ``weights.csv``: the row for TorchGeo's ``docs/api/weights/*.csv`` tables;
* ``README.md`` (model card) and ``CONTRIBUTING.md`` (the upstream pull-request checklist).

Everything is verified before the folder appears (hash, TorchGeo builder, TorchGeo task,
bands, transforms, features equal to the run's teacher); on any failure nothing is written.
"""

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from timm.layers import resample_abs_pos_embed

from geopera.core.contracts import BackboneCard, PublishedWeights, RunState, RunStatus
from geopera.core.errors import GeoperaError
from geopera.core.outputs import require_new_folder, sha256_file, staged_folder
from geopera.models.loading import load_state_dict_file
from geopera.publish.card import write_docs
from geopera.publish.module import TORCHGEO_BUILDERS, load_module, module_text


class PublishError(GeoperaError):
    """The backbone cannot be published (or a verification failed)."""


@dataclass
class PublishInfo:
    """What ``publish`` wrote.

    Attributes:
        out: The output folder.
        weights_file: The ``.pth`` file.
        module_file: The Python module defining the enum.
        enum_name: Class name of the enum.
        member: Member name.
    """

    out: Path
    weights_file: Path
    module_file: Path
    enum_name: str
    member: str


def _read_source(
    source: Path,
) -> tuple[dict[str, torch.Tensor], BackboneCard, RunStatus | None]:
    """(state dict, backbone card, run status) from a run directory or a backbone file."""
    if source.is_dir():
        weights, meta_file, status_file = (
            source / BackboneCard.WEIGHTS_FILE,
            source / BackboneCard.FILE,
            source / RunStatus.FILE,
        )
    else:
        weights, meta_file, status_file = (
            source,
            source.with_suffix(".json"),
            source.parent / RunStatus.FILE,
        )
    if not weights.is_file():
        raise FileNotFoundError(
            f"{weights} not found: publish a completed run directory (with backbone.pth) or a "
            "backbone .pth file with its .json beside it"
        )
    meta = BackboneCard.read(meta_file)
    status = RunStatus.read(status_file) if status_file.is_file() else None
    if status is not None and status.status is not RunState.COMPLETED:
        raise PublishError(f"run {source} is {status.status!r}, not completed; finish it first")
    return load_state_dict_file(weights), meta, status


def _identifier(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
        raise PublishError(
            f"--name {name!r} must start with a letter and hold only letters, digits and _ "
            "(it becomes the enum member, e.g. LANDSAT8_RGB_PERA)"
        )
    return name.upper()


def _torchgeo_state_dict(
    state: dict[str, torch.Tensor], card: BackboneCard
) -> dict[str, torch.Tensor]:
    """Resample the position embedding to the builder's 224 px grid (timm's own resampling)."""
    out = dict(state)
    new_grid = 224 // card.token_size
    old_grid = card.img_size // card.token_size
    if old_grid != new_grid:
        out["pos_embed"] = resample_abs_pos_embed(
            state["pos_embed"],
            new_size=(new_grid, new_grid),
            old_size=(old_grid, old_grid),
            num_prefix_tokens=1,
        )
    return out


def verify(
    module_file: Path, enum_name: str, member: str, reference: torch.nn.Module, card: BackboneCard
) -> None:
    """Check a published member the way TorchGeo users will use it.

    Args:
        module_file: The generated module.
        enum_name: The enum class name.
        member: The member name.
        reference: The run's teacher backbone (timm, ``dynamic_img_size=True``).
        card: The backbone's description.

    Raises:
        PublishError: If any check fails.
    """
    import torchgeo.models
    import torchgeo.tasks

    weights = getattr(getattr(load_module(module_file), enum_name), member)
    file = Path(weights.url.removeprefix("file://")) if weights.url.startswith("file://") else None
    if file is not None and sha256_file(file)[:8] != file.stem.rsplit("-", 1)[-1]:
        raise PublishError(f"{file.name}: the SHA-256 prefix in the name does not match the file")
    if len(weights.meta["bands"]) != weights.meta["in_chans"]:
        raise PublishError(
            f"{len(weights.meta['bands'])} bands but in_chans={weights.meta['in_chans']}"
        )
    builder = getattr(torchgeo.models, card.model)
    model = builder(weights=weights).eval()
    task = torchgeo.tasks.Classification(
        model=card.model, weights=weights, in_channels=card.in_chans, num_classes=2
    )
    if not isinstance(task, torchgeo.tasks.Classification):  # pragma: no cover - defensive
        raise PublishError("torchgeo.tasks.Classification rejected the weights")
    generator = torch.Generator().manual_seed(0)
    raw = torch.rand(2, card.in_chans, 224, 224, generator=generator) * 1000
    x = weights.transforms(raw)
    if not torch.isfinite(x).all():
        raise PublishError("the transforms produced non-finite values on a sample")
    with torch.no_grad():
        published = model.forward_features(x)
        expected = reference.eval().forward_features(x)  # type: ignore[operator]
    if not torch.allclose(published, expected, atol=1e-4, rtol=1e-4):
        error = float((published - expected).abs().max())
        raise PublishError(
            f"features of the published model differ from the run's teacher (max {error:.2e})"
        )


def publish(
    source: Path,
    name: str,
    out: Path,
    dataset: str | None = None,
    license: str = "CC-BY-4.0",
    publication: str = "https://arxiv.org/abs/2505.19447",
    repo: str = "https://github.com/geopera/geopera",
    url_base: str | None = None,
) -> PublishInfo:
    """Publish a run's teacher backbone (see module docstring).

    Args:
        source: Run directory or backbone ``.pth`` (with its ``.json``).
        name: Member name, e.g. ``LANDSAT8_RGB_PERA``.
        out: New output folder.
        dataset: Dataset text for the meta (default: the run's sources).
        license: SPDX licence of the weights.
        publication: URL of the method's publication.
        repo: URL of the code repository.
        url_base: Where the file will be hosted (default: a ``file://`` URL to ``out``).

    Returns:
        What was written.

    Raises:
        PublishError: If the backbone's architecture has no TorchGeo builder or a check fails.
        FileExistsError: If ``out`` exists and is not empty.
    """
    require_new_folder(out)
    member = _identifier(name)
    state, card, status = _read_source(source)
    _check_publishable(card)
    model_name = card.model
    enum_name = f"{TORCHGEO_BUILDERS[model_name]}_{member.title().replace('_', '')}_Weights"
    module_name = f"{model_name}_{member.lower()}"
    with staged_folder(out) as work:
        file_name, digest = _write_weights(_torchgeo_state_dict(state, card), work, module_name)
        url = (
            (url_base.rstrip("/") + "/" + file_name)
            if url_base
            else f"file://{out.resolve() / file_name}"
        )
        meta = _weights_meta(card, dataset, license, publication, repo)
        mean, std = list(card.normalisation["mean"]), list(card.normalisation["std"])
        (work / f"{module_name}.py").write_text(
            module_text(enum_name, member, url, meta, mean, std)
        )
        PublishedWeights(
            enum_name=enum_name,
            member=member,
            file_name=file_name,
            sha256=digest,
            url=url,
            mean=mean,
            std=std,
            meta=meta,
        ).write(work / PublishedWeights.FILE)
        # Verify through a copy of the module whose URL points at the file as it lies now.
        check = module_text(enum_name, member, f"file://{work / file_name}", meta, mean, std)
        _verify_copy(work, check, state, card, enum_name, member)
        write_docs(work, enum_name, member, file_name, meta, card, status, module_name)
    return PublishInfo(out, out / file_name, out / f"{module_name}.py", enum_name, member)


def _check_publishable(card: BackboneCard) -> None:
    """TorchGeo weights need a named band per input and an architecture with a builder."""
    if not card.bands or len(card.bands) != card.in_chans:
        raise PublishError(
            f"the backbone description lists bands {card.bands} for in_chans={card.in_chans}; "
            "TorchGeo weights need one name per input band"
        )
    if card.model not in TORCHGEO_BUILDERS or card.model_kwargs:
        raise PublishError(
            f"{card.model} (with arguments {card.model_kwargs}) has no torchgeo.models "
            f"builder; publishable architectures: {', '.join(TORCHGEO_BUILDERS)}"
        )


def _write_weights(state: dict[str, torch.Tensor], work: Path, stem: str) -> tuple[str, str]:
    """Save the weights under a name with their hash's first 8 hex digits, as TorchGeo does.

    Returns:
        The file name and the full SHA-256.
    """
    tmp_file = work / "weights.pth"
    torch.save(state, tmp_file)
    digest = sha256_file(tmp_file)
    file_name = f"{stem}-{digest[:8]}.pth"
    tmp_file.rename(work / file_name)
    return file_name, digest


def _weights_meta(
    card: BackboneCard, dataset: str | None, license: str, publication: str, repo: str
) -> dict[str, Any]:
    """The ``meta`` of the weights' enum member (TorchGeo's keys, plus the recipe's)."""
    resolution = sorted({tuple(r) for r in card.resolution.values()})
    return {
        "dataset": dataset or ", ".join(s["name"] for s in card.sources) or "geopera archive",
        "in_chans": card.in_chans,
        "model": card.model,
        "publication": publication,
        "repo": repo,
        "ssl_method": "pera",
        "bands": card.bands,
        "band_identities": [i.to_dict() if i else None for i in card.band_identities or []] or None,
        "license": license,
        "resolution": resolution[0][0] if len(resolution) == 1 else [r[0] for r in resolution],
        "mean": card.normalisation["mean"],
        "std": card.normalisation["std"],
        "steps": card.steps,
    }


def _verify_copy(
    work: Path,
    module: str,
    state: dict[str, torch.Tensor],
    card: BackboneCard,
    enum_name: str,
    member: str,
) -> None:
    """Load the weights through TorchGeo's builder from a copy of the module, and compare."""
    check_module = work / f"_check_{enum_name}.py"
    check_module.write_text(module)
    reference = timm.create_model(
        card.model,
        in_chans=card.in_chans,
        img_size=card.img_size,
        num_classes=0,
        dynamic_img_size=True,
    )
    reference.load_state_dict(state)
    hub_dir = torch.hub.get_dir()
    torch.hub.set_dir(str(work / ".torch-hub"))  # keep the user's torch hub cache clean
    try:
        verify(check_module, enum_name, member, reference, card)
    finally:
        torch.hub.set_dir(hub_dir)
    check_module.unlink()
    shutil.rmtree(work / ".torch-hub", ignore_errors=True)
