"""Hostile names in a catalog served on 127.0.0.1, through ``geopera data fetch``.

Each example is a catalog whose item ids are drawn from climbs, encodings, look-alike separators,
control characters, reserved and very long names, and names that differ only by case or Unicode
normalisation. Whatever the ids, nothing is written outside ``--out``, no two items share a
file, and the command ends as usual (0, or one line).
"""

import itertools
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from geopera.cli.main import main
from tests.fakes.hostile import files_under, write_catalog, write_scene
from tests.fakes.http import FakeStorage
from tests.fuzz.conftest import BUDGETS

#: Pieces of hostile names: climbs, separators and their look-alikes, encodings, NUL, reserved.
PIECES = st.sampled_from(
    [
        "..", "/", "\\", "%2e%2e%2f", "%252f", "．", "／", "\u2215", "\u2044", "\x00", "\x1b",
        "CON", "nul", "LPT1", ".", " ", "C:", "~", "a", "A", "é", "e\u0301", "ﬁ", "x",
    ]
)  # fmt: skip
NAMES = st.one_of(
    st.lists(PIECES | st.text(max_size=3), min_size=1, max_size=8).map("".join),
    st.text(min_size=250, max_size=320),
)
#: A few ids, plus the first one's case and normalisation twins.
IDS = st.lists(NAMES, min_size=1, max_size=3, unique=True).map(
    lambda ids: list(dict.fromkeys([*ids, ids[0].upper(), ids[0].lower()]))
)


@pytest.fixture(scope="module")
def scene(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The served folder (holding the one real scene) and an ROI inside the scene."""
    root = tmp_path_factory.mktemp("fuzz_names")
    return root, write_scene(root, shared_data)


#: Each example serves a catalog and fetches it (about 0.3 s): fewer examples than the parsers'.
FETCH_BUDGETS = [
    pytest.param(10, id="bounded"),
    pytest.param(max(10, BUDGETS[1].values[0] // 6), id="more", marks=pytest.mark.slow),  # type: ignore[attr-defined]
]


@pytest.mark.parametrize("budget", FETCH_BUDGETS)
def test_no_item_id_leaves_the_output_folder(
    budget: int, scene: tuple[Path, str], tmp_path: Path
) -> None:
    root, roi = scene
    counter = itertools.count()

    @settings(
        max_examples=budget,
        deadline=None,
        database=None,
        derandomize=budget <= 20,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(IDS)
    @example(["a[/b]", "A[/B]"])  # rich markup in an id: shown as text (CI, 2026-12-08)
    def check(ids: list[str]) -> None:
        n = next(counter)
        name = f"{tmp_path.name}-c{n}"  # the served folder is shared by both budgets
        write_catalog(root / name, ids, root / "scene.tif")
        work = tmp_path / f"w{n}"
        out = work / "deep" / "out"
        with FakeStorage(root) as storage:
            code = main(["data", "fetch", f"{storage.url}/{name}/catalog.json", "--roi", roi,
                         "--out", str(out)])  # fmt: skip
        assert code == 0
        assert files_under(work) == files_under(out)
        rows = json.loads((out / "fetch.json").read_text())["items"]
        assert len(rows) == len(ids)  # an empty id's scene is named by its grid instead
        assert {i for i in ids if i} <= {r["scene"] for r in rows}
        assert len({r["file"].casefold() for r in rows}) == len(ids)

    check()
