"""A published folder's documents: a model card (README.md) and TorchGeo's weights table row."""

from pathlib import Path
from typing import Any

from geopera.core.contracts import BackboneCard, RunStatus
from geopera.publish.module import TORCHGEO_BUILDERS

PERA_CITATION = (
    "Shen, Gu, Li, Yang, Qiu. A Contrastive Learning Foundation Model Based on Perfectly Aligned "
    "Sample Pairs for Remote Sensing Images. Geo-spatial Information Science (2026), "
    "doi:10.1080/10095020.2026.2628435; arXiv:2505.19447"
)


def _probe_line(status: RunStatus | None) -> str:
    """The kNN probe's last accuracy and its step, for the README."""
    if status is None or status.probe is None or not status.probe.knn_accuracy:
        return "not run"
    step, accuracy = status.probe.knn_accuracy[-1]
    return f"{accuracy:.3f} at step {step} ({len(status.probe.classes)} classes)"


def write_docs(
    work: Path,
    enum_name: str,
    member: str,
    file_name: str,
    wmeta: dict[str, Any],
    card: BackboneCard,
    status: RunStatus | None,
    module_name: str,
) -> None:
    """Write ``README.md`` (the model card) and ``weights.csv`` (TorchGeo's table row).

    Args:
        work: The folder being written.
        enum_name: The weights enum's class name.
        member: Its member.
        file_name: The weights file.
        wmeta: The member's meta.
        card: The backbone's card.
        status: The run's status, when published from a run directory.
        module_name: The enum's module.
    """
    (work / "weights.csv").write_text(
        "Weight,Channels,Source,Citation,BigEarthNet,EuroSAT,So2Sat,OSCD\n"
        f"{enum_name}.{member},{wmeta['in_chans']},[geopera]({wmeta['repo']}),"
        f"[PerA]({wmeta['publication']}),,,,\n"
    )
    weight = f"{enum_name}.{member}"
    readme = _model_card(weight, file_name, wmeta, card, status, module_name)
    (work / "README.md").write_text(readme)
    contributing = _contributing(weight, file_name, wmeta["in_chans"], card, module_name)
    (work / "CONTRIBUTING.md").write_text(contributing)


def _model_card(
    weight: str,
    file_name: str,
    wmeta: dict[str, Any],
    card: BackboneCard,
    status: RunStatus | None,
    module_name: str,
) -> str:
    """The model card: data coverage, recipe, use, licence and how to contribute it."""
    enum_name, member = weight.split(".")
    bands = ", ".join(card.bands or [])
    sources = card.sources
    roi = card.roi or {}
    source_lines = "\n".join(
        f"| {s['name']} | {s['crs']} | {s['res'][0]:g} | "
        f"{', '.join(s['selected_bands'])} | {s['dtype']} |"
        for s in sources
    )
    return f"""---
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


def _contributing(
    weight: str, file_name: str, in_chans: int, card: BackboneCard, module_name: str
) -> str:
    """How to contribute the weights to TorchGeo, step by step."""
    enum_name, member = weight.split(".")
    return f"""# Contributing {enum_name}.{member} to TorchGeo

1. Upload `{file_name}` to a Hugging Face repository (e.g. with `huggingface-cli upload`), and pin
   the URL to the commit: `https://hf.co/<org>/<repo>/resolve/<commit>/{file_name}`.
2. In `torchgeo/models/vit.py`, add the member to `{TORCHGEO_BUILDERS[card.model]}_Weights`
   (copy the `Weights(...)` of `{module_name}.py`, with the pinned URL and, if they are new,
   a module-level `_transforms` and band list).
3. Add the row of `weights.csv` to `docs/api/weights/` (the table of {in_chans}-band
   {"RGB" if in_chans == 3 else "multispectral"} weights); fill in the benchmark columns
   you measured.
4. Tests: `tests/models/test_vit.py` parametrises over the weights enum; check that
   `len(card.bands) == card.in_chans` and that the builder loads the member
   (`pytest tests/models/test_vit.py -k {member}` with the file cached locally).
5. Mention PerA in the model docstring and the changelog, citing: {PERA_CITATION}.
"""
