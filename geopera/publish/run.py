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

from geopera.core.contracts import BackboneCard, PublishedWeights, RunStatus
from geopera.core.errors import GeoperaError
from geopera.core.outputs import require_new_folder, sha256_file, staged_folder
from geopera.models.loading import load_state_dict_file
from geopera.publish.module import load_module, module_text

#: timm architectures that ``torchgeo.models`` has builders for (see DESIGN).
TORCHGEO_BUILDERS = {
    "vit_small_patch16_224": "ViTSmall16",
    "vit_base_patch16_224": "ViTBase16",
    "vit_large_patch16_224": "ViTLarge16",
    "vit_huge_patch14_224": "ViTHuge14",
}

PERA_CITATION = (
    "Shen, Gu, Li, Yang, Qiu. A Contrastive Learning Foundation Model Based on Perfectly Aligned "
    "Sample Pairs for Remote Sensing Images. Geo-spatial Information Science (2026), "
    "doi:10.1080/10095020.2026.2628435; arXiv:2505.19447"
)


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
    if status is not None and status.status != "completed":
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
    model_name = card.model
    if not card.bands or len(card.bands) != card.in_chans:
        raise PublishError(
            f"the backbone description lists bands {card.bands} for in_chans={card.in_chans}; "
            "TorchGeo weights need one name per input band"
        )
    if model_name not in TORCHGEO_BUILDERS or card.model_kwargs:
        raise PublishError(
            f"{model_name} (with arguments {card.model_kwargs}) has no "
            "torchgeo.models "
            f"builder; publishable architectures: {', '.join(TORCHGEO_BUILDERS)}"
        )
    enum_name = f"{TORCHGEO_BUILDERS[model_name]}_{member.title().replace('_', '')}_Weights"
    sources = card.sources
    norm = card.normalisation
    with staged_folder(out) as work:
        exported = _torchgeo_state_dict(state, card)
        tmp_file = work / "weights.pth"
        torch.save(exported, tmp_file)
        digest = sha256_file(tmp_file)
        file_name = f"{model_name}_{member.lower()}-{digest[:8]}.pth"
        (work / file_name).write_bytes(tmp_file.read_bytes())
        tmp_file.unlink()
        final_out = out.resolve()
        url = (
            (url_base.rstrip("/") + "/" + file_name)
            if url_base
            else f"file://{final_out / file_name}"
        )
        resolution = sorted({tuple(r) for r in card.resolution.values()})
        weights_meta = {
            "dataset": dataset or ", ".join(s["name"] for s in sources) or "geopera archive",
            "in_chans": card.in_chans,
            "model": model_name,
            "publication": publication,
            "repo": repo,
            "ssl_method": "pera",
            "bands": card.bands,
            "license": license,
            "resolution": resolution[0][0] if len(resolution) == 1 else [r[0] for r in resolution],
            "mean": norm["mean"],
            "std": norm["std"],
            "steps": card.steps,
        }
        module_name = f"{model_name}_{member.lower()}"
        mean, std = list(norm["mean"]), list(norm["std"])
        (work / f"{module_name}.py").write_text(
            module_text(enum_name, member, url, weights_meta, mean, std)
        )
        PublishedWeights(
            enum_name=enum_name,
            member=member,
            file_name=file_name,
            sha256=digest,
            url=url,
            mean=mean,
            std=std,
            meta=weights_meta,
        ).write(work / PublishedWeights.FILE)
        # Verify through a copy of the module whose URL points at the file as it lies now.
        check_module = work / f"_check_{module_name}.py"
        check_module.write_text(
            module_text(enum_name, member, f"file://{work / file_name}", weights_meta, mean, std)
        )
        reference = timm.create_model(
            model_name, in_chans=card.in_chans, img_size=card.img_size, num_classes=0,
            dynamic_img_size=True,
        )  # fmt: skip
        reference.load_state_dict(state)
        hub_dir = torch.hub.get_dir()
        torch.hub.set_dir(str(work / ".torch-hub"))  # keep the user's torch hub cache clean
        try:
            verify(check_module, enum_name, member, reference, card)
        finally:
            torch.hub.set_dir(hub_dir)
        check_module.unlink()
        shutil.rmtree(work / ".torch-hub", ignore_errors=True)
        _write_docs(work, enum_name, member, file_name, weights_meta, card, status, module_name)
    return PublishInfo(out, out / file_name, out / f"{module_name}.py", enum_name, member)


def _probe_line(status: RunStatus | None) -> str:
    """The kNN probe's last accuracy and its step, for the README."""
    if status is None or status.probe is None or not status.probe.knn_accuracy:
        return "not run"
    step, accuracy = status.probe.knn_accuracy[-1]
    return f"{accuracy:.3f} at step {step} ({len(status.probe.classes)} classes)"


def _write_docs(
    work: Path, enum_name: str, member: str, file_name: str, wmeta: dict[str, Any],
    card: BackboneCard, status: RunStatus | None, module_name: str,
) -> None:  # fmt: skip
    bands = ", ".join(card.bands or [])
    (work / "weights.csv").write_text(
        "Weight,Channels,Source,Citation,BigEarthNet,EuroSAT,So2Sat,OSCD\n"
        f"{enum_name}.{member},{wmeta['in_chans']},[geopera]({wmeta['repo']}),"
        f"[PerA]({wmeta['publication']}),,,,\n"
    )
    sources = card.sources
    roi = card.roi or {}
    source_lines = "\n".join(
        f"| {s['name']} | {s['crs']} | {s['res'][0]:g} | "
        f"{', '.join(s['selected_bands'])} | {s['dtype']} |"
        for s in sources
    )
    (work / "README.md").write_text(
        f"""---
license: {wmeta["license"].lower()}
tags: [torchgeo, remote-sensing, self-supervised, pera, {card.model}]
---

# {enum_name}.{member}

A `{card.model}` backbone ({wmeta["in_chans"]} bands: {bands}) pretrained with **PerA**
(contrastive teacher-student learning on perfectly aligned sample pairs) by
[geopera]({wmeta["repo"]}). File: `{file_name}`.

## Data coverage

- Region of interest (lon/lat WKT): `{roi.get("wkt_wgs84", "n/a")}`
- Sources:

| source | CRS | resolution | bands | dtype |
|---|---|---|---|---|
{source_lines}

## Recipe

- Method: PerA, teacher backbone exported ({card.steps} optimiser steps).
- Crops during pretraining: {card.img_size} px global crops, patch {card.token_size}; the
  position embedding is resampled to the 224 px grid of TorchGeo's builder.
- Normalisation (raw units): mean {wmeta["mean"]}, std {wmeta["std"]}.
- Run status: {status.status if status else "n/a"},
  collapse alarm: {"yes" if status and status.collapse_alarm else "no"},
  kNN probe: {_probe_line(status)}.

## Use

```python
from {module_name} import {enum_name}
import geopera.publish, torchgeo.models
geopera.publish.register({enum_name})
model = torchgeo.models.{card.model}(weights={enum_name}.{member})
```

## Licence and citation

Weights: {wmeta["license"]}. Cite the method: {PERA_CITATION}.
"""
    )
    (work / "CONTRIBUTING.md").write_text(
        f"""# Contributing {enum_name}.{member} to TorchGeo

1. Upload `{file_name}` to a Hugging Face repository (e.g. with `huggingface-cli upload`), and pin
   the URL to the commit: `https://hf.co/<org>/<repo>/resolve/<commit>/{file_name}`.
2. In `torchgeo/models/vit.py`, add the member to `{TORCHGEO_BUILDERS[card.model]}_Weights`
   (copy the `Weights(...)` of `{module_name}.py`, with the pinned URL and, if they are new,
   a module-level `_transforms` and band list).
3. Add the row of `weights.csv` to `docs/api/weights/` (the table of {wmeta["in_chans"]}-band
   {"RGB" if wmeta["in_chans"] == 3 else "multispectral"} weights); fill in the benchmark columns
   you measured.
4. Tests: `tests/models/test_vit.py` parametrises over the weights enum; check that
   `len(card.bands) == card.in_chans` and that the builder loads the member
   (`pytest tests/models/test_vit.py -k {member}` with the file cached locally).
5. Mention PerA in the model docstring and the changelog, citing: {PERA_CITATION}.
"""
    )
