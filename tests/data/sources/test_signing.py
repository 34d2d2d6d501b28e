"""Signed asset URLs that expire during a run: signed again once through the hook, then a problem.

The fake storage refuses (403) the tokens a test declares expired, as a provider does once a
signature is older than its lifetime; the hook hands out a new token on every call.
"""

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import from_bounds

from geopera.archive.fetch import fetch_archive
from geopera.core.errors import ArchiveGoneError
from geopera.data.roi import load_roi
from geopera.data.sampling.badfiles import BadFiles
from geopera.data.sampling.patches import PatchDataset
from geopera.data.sampling.sampler import prepare_sources
from geopera.data.sources.discover import discover
from geopera.data.sources.signing import is_forbidden
from geopera.data.sources.trust import allow
from tests.fakes.http import ISSUED, FakeStorage
from tests.fakes.stac import LANDSAT, ROI, original_landsat

HOOK = "tests.fakes.http:sign_with_fresh_token"
BANDS = ("B2", "B3", "B4")
#: A 32-px patch (EPSG:32621) on the Landsat items' pixel grid (read inside one file), and one
#: off the grid (read through torchgeo's mosaic of the items' VRTs).
ON_GRID = (728175.0, -2786445.0, 729135.0, -2785485.0)
OFF_GRID = (728100.0, -2786900.0, 729060.0, -2785940.0)


@pytest.fixture
def fresh_tokens() -> Iterator[None]:
    """The test's expiring-token hook, allowed as ``--allow-hook`` would."""
    allow(hooks=[HOOK])
    yield
    allow()


def _recipe(served: FakeStorage, tmp_path: Path) -> Path:
    recipe = tmp_path / "signed.yaml"
    recipe.write_text(
        "name: signed\ndescription: signed URLs that expire\nlicence: test\n"
        f"catalog: {served.url}/landsat/collection.json\nsign: {HOOK}\n"
    )
    return recipe


def _expire_all_so_far(served: FakeStorage) -> int:
    """Refuse every token handed out until now; returns the last one."""
    last = ISSUED[-1]
    served.refuse = lambda query: query.startswith("token=") and int(query[6:]) <= last
    return last


def _expected(shared_data: Path, scene: str, bounds: object) -> np.ndarray:
    with rasterio.open(original_landsat(shared_data, scene)) as src:
        window = from_bounds(*[float(v) for v in bounds], transform=src.transform)  # type: ignore[attr-defined]
        return src.read([3, 2, 1], window=window.round_offsets().round_lengths())


def _dataset(served: FakeStorage, tmp_path: Path) -> PatchDataset:
    roi = load_roi(ROI)
    archive = discover([str(_recipe(served, tmp_path))], roi=roi)
    prepared = prepare_sources(archive.select("rgb", None, roi=roi), roi, 32)
    return PatchDataset(prepared, 32, bad_files=BadFiles(tmp_path / "problems.jsonl"))


@pytest.mark.usefixtures("fresh_tokens")
def test_an_expired_signature_is_signed_again_and_the_read_goes_on(
    served: FakeStorage, tmp_path: Path, shared_data: Path
) -> None:
    dataset = _dataset(served, tmp_path)
    last = _expire_all_so_far(served)  # an hour after discovery, its signatures are refused
    sample = dataset[(0, *ON_GRID, 0)]
    assert served.refused > 0  # the storage did refuse the old signatures
    assert ISSUED[-1] > last  # ...and the hook signed again
    reader = dataset.sources[0].reader
    assert reader.fast_reads == 1
    scene = reader.source.items[reader.fast_item(*ON_GRID)].scene
    np.testing.assert_array_equal(
        sample["image"].numpy(), _expected(shared_data, scene, sample["bounds"])
    )
    assert not dataset.bad_files.known()  # nothing was given up


@pytest.mark.usefixtures("fresh_tokens")
def test_the_mosaic_reads_the_items_vrts_signed_again(served: FakeStorage, tmp_path: Path) -> None:
    roi = load_roi(ROI)
    archive = discover([str(_recipe(served, tmp_path))], roi=roi)
    dataset = PatchDataset(prepare_sources(archive.select("rgb", None, roi=roi), roi, 32), 32)
    _expire_all_so_far(served)
    sample = dataset[(0, *OFF_GRID, 0)]
    assert served.refused > 0
    assert dataset.sources[0].reader.fast_reads == 0  # read through the mosaic
    # the same items (their VRTs now hold the fresh signatures), read by a new dataset: the same
    # mosaic, in the same item order
    again = PatchDataset(prepare_sources(archive.select("rgb", None, roi=roi), roi, 32), 32)
    refused = served.refused
    np.testing.assert_array_equal(sample["image"].numpy(), again[(0, *OFF_GRID, 0)]["image"])
    assert served.refused == refused  # the VRTs on disk hold signatures that are still valid
    assert not dataset.bad_files.known()


@pytest.mark.usefixtures("fresh_tokens")
def test_a_signature_refused_again_makes_the_files_a_problem_without_the_secret(
    served: FakeStorage, tmp_path: Path
) -> None:
    dataset = _dataset(served, tmp_path)
    served.refuse = lambda query: query.startswith("token=")  # the service refuses us now
    before = len(ISSUED)
    with pytest.raises(ArchiveGoneError, match="became unreadable"):
        dataset[(0, *ON_GRID, 0)]
    assert len(ISSUED) > before  # signed again before giving up
    records = dataset.bad_files.records()
    assert records
    assert all("403" in r["reason"] for r in records)
    assert all("token=" not in r["path"] for r in records)  # no signature in the report
    served_paths = {f"/vsicurl/{served.url}/landsat/{s}/{b}.tif" for s in LANDSAT for b in BANDS}
    assert {r["path"] for r in records} == served_paths


@pytest.mark.usefixtures("fresh_tokens")
def test_data_fetch_signs_again_after_a_403_and_writes_no_token(
    served: FakeStorage, tmp_path: Path
) -> None:
    roi = load_roi(ROI)
    first = ISSUED[-1] if ISSUED else 0
    # the signatures that fetch's discovery hands out (one per asset) have expired by the copy
    assets = len(LANDSAT) * len(BANDS)
    served.refuse = lambda q: q.startswith("token=") and int(q[6:]) <= first + assets
    manifest = fetch_archive([str(_recipe(served, tmp_path))], roi, tmp_path / "out")
    assert served.refused > 0
    assert ISSUED[-1] > first + assets  # signed again
    assert {row["scene"] for row in manifest["items"]} == set(LANDSAT)
    assert "token=" not in json.dumps(manifest)  # the manifest names URLs without signatures
    for row in manifest["items"]:
        with rasterio.open(tmp_path / "out" / row["file"]) as ds:
            assert ds.read().any()


def test_is_forbidden_knows_gdal_and_http_wording() -> None:
    assert is_forbidden(OSError("HTTP response code: 403"))
    assert is_forbidden(RuntimeError("403 Client Error: Forbidden for url"))
    assert not is_forbidden(OSError("HTTP response code: 404"))
    inner = OSError("HTTP response code: 403")
    outer = OSError("Read failed. See previous exception for details.")
    outer.__cause__ = inner  # rasterio words the mosaic's failure this way
    assert is_forbidden(outer)
