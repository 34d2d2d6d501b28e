"""Class names from a label table are data in ``evaluate``: they never name a file."""

import csv
import json
from collections.abc import Callable
from pathlib import Path

from tests.conftest import CliResult
from tests.fakes.hostile import files_under

CHESAPEAKE = ("e_scene_classification", "chesapeake_tiles_derived")


def test_hostile_class_names_write_only_inside_out(
    shared_data: Path, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    source = shared_data.joinpath(*CHESAPEAKE)
    data = tmp_path / "data"
    data.mkdir()
    (data / "tiles").symlink_to(source / "tiles")
    with open(source / "labels.csv") as src, open(data / "labels.csv", "w", newline="") as dst:
        rows = list(csv.DictReader(src))
        writer = csv.DictWriter(dst, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:  # every class named as a climb, an absolute path or a reserved name
            hostile = {"water": "../../water", "barren": "/tmp/geopera_abs_barren"}
            writer.writerow({**row, "label": hostile.get(row["label"], f"CON/{row['label']}")})
    out = tmp_path / "deep" / "eval"
    args = ["evaluate", "knn", "--weights", "vit_tiny_patch16_224", "--data", str(data)]
    result = cli(*args, "--seeds", "1", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert files_under(tmp_path) == files_under(out) | {data / "labels.csv"}
    assert not list(Path("/tmp").glob("geopera_abs_barren*"))
    classes = json.loads((out / "results.json").read_text())["classes"]
    assert "../../water" in classes
