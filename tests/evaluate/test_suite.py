"""``geopera evaluate --suite shared``: the project's real labelled sets, one table."""

import json
from collections.abc import Callable
from pathlib import Path

from tests.conftest import CliResult

CliRunner = Callable[..., CliResult]


def test_the_shared_suite_gives_one_table_of_backbones_by_sets(
    shared_data: Path, backbone: Path, tmp_path: Path, cli: CliRunner
) -> None:
    """A random init and a pretrained backbone that knows its bands (B04, B03, B02)."""
    out = tmp_path / "suite"
    proc = cli(
        "evaluate", "knn", "dense", "--suite", f"shared:{shared_data}", "--weights",
        "vit_tiny_patch16_224", str(backbone), "--seeds", "1", "--no-cache", "--no-progress",
        "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Mean of empty slice" not in proc.stderr  # no library warning dressed as a note
    sets = ["chesapeake-tiles", "chesapeake-landcover", "slovenia-lulc"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*sets, "suite.csv", "suite.json", "suite.md"]
    )
    for name in sets:  # each set is a whole evaluation of its own
        assert (out / name / "results.json").is_file()
    summary = json.loads((out / "suite.json").read_text())
    assert summary["skipped"] == {}  # every set, the pretrained backbone's bands included
    headline = {(c["set"], c["weights"], c["protocol"]) for c in summary["cells"] if c["headline"]}
    assert ("chesapeake-tiles", "vit_tiny_patch16_224", "dense") not in headline  # no masks
    assert ("chesapeake-landcover", "vit_tiny_patch16_224", "dense") in headline
    assert ("slovenia-lulc", "majority", "pixel") in headline
    for name in sets:
        own = json.loads((out / name / "results.json").read_text())["rows"]
        mine = [c for c in summary["cells"] if c["set"] == name]
        assert [c["value"] for c in mine] == [r["value"] for r in own]  # the table is the sets'
    table = (out / "suite.md").read_text().splitlines()
    rows = [line.split(" | ")[0] for line in table if line.startswith("| ") and "---" not in line]
    assert rows == [
        "| backbone",
        "| vit_tiny_patch16_224",
        f"| {backbone}",
        "| majority",
        "| chance",
    ]
    assert "-" in table[table.index(next(t for t in table if t.startswith("| chance")))]


def test_an_unknown_suite_is_one_line_and_writes_nothing(tmp_path: Path, cli: CliRunner) -> None:
    out = tmp_path / "suite"
    proc = cli("evaluate", "knn", "--suite", "geobench", "--weights", "vit_tiny_patch16_224",
               "--out", str(out))  # fmt: skip
    assert proc.returncode == 2
    assert "--suite 'geobench' is not a suite; known: shared" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()
