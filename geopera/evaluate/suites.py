"""``geopera evaluate --suite NAME``: the same backbones on several known labelled sets at once.

A suite is a fixed list of sets (paths under a root folder); every set is an ordinary
evaluation (its own folder under ``--out``), and ``suite.md``/``suite.json``/``suite.csv`` hold
one table: backbones (and the baselines) x sets, the headline metric of each protocol with its
interval. ``shared`` is the suite of the project's real test data (``../shared/data``, or
``$GEOPERA_SHARED_DATA``, or ``--suite shared:ROOT``): small, so that it runs in CI.
"""

import csv
import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from geopera.core.errors import BandSelectionError, GeoperaError
from geopera.core.names import inside
from geopera.core.outputs import require_new_folder, staged_folder
from geopera.data.labelled.sets import EvaluationDataError, LabelledSet, load_labelled
from geopera.evaluate.scoring import BASELINES


@dataclass(frozen=True)
class SuiteSet:
    """One labelled set of a suite.

    Attributes:
        name: Its folder under ``--out`` and its column in the table.
        data: ``--data``, relative to the suite's root (globs allowed).
        labels: ``--labels``, relative to the root, or None.
        chip_size: ``--chip-size``.
        what: One line for the reader.
        band_names: What the files' bands are, where they do not say (common names).
    """

    name: str
    data: str
    labels: str | None = None
    chip_size: int = 64
    what: str = ""
    band_names: tuple[str, ...] | None = None


#: The suites, by name.
SUITES: dict[str, tuple[SuiteSet, ...]] = {
    "shared": (
        SuiteSet(
            "chesapeake-tiles",
            "e_scene_classification/chesapeake_tiles_derived",
            what="53 NAIP RGBN 64 px tiles, majority land-cover class (1 m)",
            band_names=("red", "green", "blue", "nir"),  # the tiles' bands carry no names
        ),
        SuiteSet(
            "chesapeake-landcover",
            "b_segmentation/chesapeake_naip_geobench/*_naip_RGBN.tif",
            "b_segmentation/chesapeake_naip_geobench/*_landcover.tif",
            64,
            "4 NAIP RGBN scenes with land-cover masks, 64 px chips (1 m)",
        ),
        SuiteSet(
            "slovenia-lulc",
            "a_pretrain/sentinel2_eolearn_slovenia/S2L1C_reference_scene*.tif",
            "b_segmentation/eolearn_slovenia_lulc/LULC.tif",
            16,
            "5 Sentinel-2 L1C dates, land use (eo-learn), 16 px chips (10 m)",
        ),
    ),
}
#: Where the ``shared`` suite's files are, unless ``--suite shared:ROOT`` says.
SHARED_VARIABLE = "GEOPERA_SHARED_DATA"


@dataclass
class SuiteResult:
    """What a suite run wrote.

    Attributes:
        out: The output folder.
        cells: Every result row of every set (``set`` added).
        skipped: Set name -> why it could not be evaluated.
    """

    out: Path
    cells: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def parse_suite(text: str) -> tuple[tuple[SuiteSet, ...], Path]:
    """``NAME`` or ``NAME:ROOT`` -> the suite's sets and their root folder.

    Raises:
        ValueError: For an unknown suite name.
        FileNotFoundError: If the root folder does not exist.
    """
    name, _, root = text.partition(":")
    if name not in SUITES:
        raise ValueError(f"--suite {name!r} is not a suite; known: {', '.join(SUITES)}")
    if not root:
        default = Path.cwd().parent / "shared" / "data"
        root = os.environ.get(SHARED_VARIABLE) or str(default)
    if not Path(root).is_dir():
        raise FileNotFoundError(
            f"--suite {name}: its data folder {root} does not exist; give --suite {name}:ROOT "
            f"or set {SHARED_VARIABLE}"
        )
    return SUITES[name], Path(root)


def run_suite(
    suite: str,
    out: Path,
    evaluate_set: Callable[[LabelledSet, Path], dict[str, Any]],
    min_per_class: int = 2,
) -> SuiteResult:
    """Evaluate every set of ``suite`` into ``out/<set>/`` and write the table.

    Args:
        suite: ``NAME`` or ``NAME:ROOT``.
        out: New output folder (appears only when complete).
        evaluate_set: Runs one evaluation of a set into a new folder, returning its results.
        min_per_class: Classes with fewer images are left out of each set.

    Returns:
        The table's cells and the sets that were skipped (with why).
    """
    sets, root = parse_suite(suite)
    require_new_folder(out)
    result = SuiteResult(out)
    with staged_folder(out) as work:
        for s in sets:
            labels = str(root / s.labels) if s.labels else None
            try:
                data = load_labelled(str(root / s.data), labels, None, s.chip_size, min_per_class)
                if s.band_names is not None:
                    data = dataclasses.replace(data, band_names=list(s.band_names))
                results = evaluate_set(data, inside(work, work / s.name))
            except (BandSelectionError, EvaluationDataError, ValueError) as err:
                result.skipped[s.name] = " ".join(str(err).split())
                continue
            result.cells += [{"set": s.name, **r} for r in results["rows"]]
        if not result.cells:
            raise GeoperaError(f"no set of --suite {suite} could be evaluated: {result.skipped}")
        _write_table(result, sets, work)
    return result


def _write_table(result: SuiteResult, sets: Sequence[SuiteSet], folder: Path) -> None:
    """``suite.json``, ``suite.csv`` and ``suite.md``: backbones x sets, headline metrics."""
    summary = {"sets": [asdict(s) for s in sets], "cells": result.cells, "skipped": result.skipped}
    (folder / "suite.json").write_text(json.dumps(summary, indent=2) + "\n")
    fields = ("set", "weights", "protocol", "metric", "value", "ci_low", "ci_high")
    with open(folder / "suite.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(result.cells)
    backbones = [c for c in result.cells if c["weights"] not in BASELINES and c["headline"]]
    columns = list(dict.fromkeys((c["set"], c["protocol"], c["metric"]) for c in backbones))
    weights = list(dict.fromkeys(c["weights"] for c in result.cells))
    lines = [
        "# Evaluation suite",
        "",
        "Headline metric of every protocol (95 % interval); `majority` and `chance` are the "
        "baselines. Each set's folder has its full results.",
        "",
        "| backbone | " + " | ".join(f"{s} {p} ({m})" for s, p, m in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for w in weights:
        cells = [_cell(_lookup(result.cells, w, column)) for column in columns]
        lines.append(f"| {w} | " + " | ".join(cells) + " |")
    lines += ["", *[f"- {s.name}: {s.what}" for s in sets]]
    lines += [f"- {name}: skipped: {why}" for name, why in result.skipped.items()]
    (folder / "suite.md").write_text("\n".join(lines) + "\n")


def _lookup(
    cells: list[dict[str, Any]], weights: str, column: tuple[str, str, str]
) -> dict[str, Any] | None:
    """The cell of ``weights`` in a (set, protocol, metric) column; baselines by kind."""
    name, protocol, metric = column
    if weights in BASELINES:
        protocol = "pixel" if protocol == "dense" else "image"
    for c in cells:
        if (c["weights"], c["set"], c["protocol"], c["metric"]) == (
            weights,
            name,
            protocol,
            metric,
        ):
            return c
    return None


def _cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "-"
    return f"{row['value']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
