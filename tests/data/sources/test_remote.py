import os
from pathlib import Path

import numpy as np
import pytest

from geopera.core.errors import ArchiveError
from geopera.data.sources.remote import (
    COG_OPTIONS,
    BlockCache,
    align_to_tiles,
    configure_remote,
    gdal_path,
    load_hook,
)
from geopera.data.sources.trust import allow


@pytest.mark.parametrize(
    ("href", "expected"),
    [
        ("https://host/a/b.tif", "/vsicurl/https://host/a/b.tif"),
        ("http://127.0.0.1:8000/x.tif?sig=1", "/vsicurl/http://127.0.0.1:8000/x.tif?sig=1"),
        ("s3://bucket/key/b.tif", "/vsis3/bucket/key/b.tif"),
        ("gs://bucket/b.tif", "/vsigs/bucket/b.tif"),
        ("az://container/b.tif", "/vsiaz/container/b.tif"),
        ("abfss://container/b.tif", "/vsiadls/container/b.tif"),
        ("file:///data/b.tif", "/data/b.tif"),
        ("/vsizip/a.zip/b.tif", "/vsizip/a.zip/b.tif"),
        ("relative/b.tif", "relative/b.tif"),
    ],
)
def test_gdal_path(href: str, expected: str) -> None:
    assert gdal_path(href) == expected


def test_gdal_path_unknown_scheme() -> None:
    with pytest.raises(ValueError, match=r"unknown URL scheme 'ftp'.*https://"):
        gdal_path("ftp://host/b.tif")


def _tiles(offset: int, size: int, tile: int) -> int:
    return (offset + size - 1) // tile - offset // tile + 1


@pytest.mark.parametrize("tile", [4, 8])
def test_align_to_tiles_touches_fewest_tiles(tile: int) -> None:
    extent = 5 * tile
    for size in range(1, 3 * tile):
        fewest = -(-size // tile)
        for offset in range(extent - size + 1):
            moved = align_to_tiles(offset, size, tile, extent)
            assert 0 <= moved <= extent - size  # stays inside the raster
            assert abs(moved - offset) < max(size, tile)  # a local move, not a jump
            assert _tiles(moved, size, tile) <= _tiles(offset, size, tile)
            if size <= tile:  # a small window always fits in one tile
                assert _tiles(moved, size, tile) == 1
            if _tiles(offset, size, tile) == fewest:
                assert moved == offset  # already optimal: unchanged


def test_block_cache_round_trip_and_bound(tmp_path: Path) -> None:
    tile = np.arange(64 * 64, dtype=np.uint16).reshape(1, 64, 64)
    size = tile.nbytes + 128  # .npy header
    cache = BlockCache(tmp_path / "c", max_bytes=5 * size)
    assert cache.get("missing") is None
    for i in range(12):
        cache.put(f"k{i}", tile + i)
        os.utime(tmp_path / "c" / f"k{i}.npy", (i, i))  # a clear age order
        total = sum(p.stat().st_size for p in (tmp_path / "c").glob("*.npy"))
        assert total <= 5 * size
    got = cache.get("k11")
    assert got is not None
    np.testing.assert_array_equal(got, tile + 11)  # the newest survives
    assert cache.get("k0") is None  # the oldest went first
    assert not list((tmp_path / "c").glob(".*"))  # no temporary files left


def test_block_cache_rejects_zero_limit(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        BlockCache(tmp_path, 0)


def test_configure_remote_keeps_user_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [*COG_OPTIONS, "CPL_VSIL_CURL_ALLOWED_EXTENSIONS"]:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "9")
    assert configure_remote(["/local/a.tif"]) == {}
    applied = configure_remote(["/vsicurl/https://h/a.tif", "/vsis3/b/c.TIF", "/local/d.jp2"])
    assert os.environ["GDAL_HTTP_MAX_RETRY"] == "9"  # the user's value wins
    assert "GDAL_HTTP_MAX_RETRY" not in applied
    assert os.environ["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"
    assert os.environ["CPL_VSIL_CURL_ALLOWED_EXTENSIONS"] == ".TIF,.tif"


def test_load_hook() -> None:
    with pytest.raises(ArchiveError, match=r"pass --allow-hook os\.path:basename"):
        load_hook("os.path:basename")  # not known, not allowed: nothing imported
    specs = ["os.path:basename", "os.path:join", "nocolon", "no_such_module_xyz:sign"]
    allow(hooks=[*specs, "os.path:nope"])
    try:
        _allowed_hooks()
    finally:
        allow()


def _allowed_hooks() -> None:
    with pytest.raises(ArchiveError, match=r"returned 'b\.tif'"):  # not a URL of the same kind
        load_hook("os.path:basename")("https://h/a/b.tif")
    assert load_hook("os.path:join")("https://h/a/b.tif") == "https://h/a/b.tif"
    with pytest.raises(ValueError, match="module:function"):
        load_hook("nocolon")
    with pytest.raises(ValueError, match="cannot import 'no_such_module_xyz'"):
        load_hook("no_such_module_xyz:sign")
    with pytest.raises(ValueError, match="has no function 'nope'"):
        load_hook("os.path:nope")


def test_configure_remote_updates_only_its_own_extension_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = "CPL_VSIL_CURL_ALLOWED_EXTENSIONS"
    monkeypatch.delenv(key, raising=False)
    configure_remote(["/vsicurl/https://h/a.tif"])
    configure_remote(["/vsicurl/https://h/b.jp2"])  # a second archive in the same process
    assert os.environ[key] == ".jp2,.tif"
    configure_remote(["/vsicurl/https://h/tiles?x=1&y=2"])  # no extension: no filter at all
    assert key not in os.environ
    monkeypatch.setenv(key, ".TIF")  # the user's own value is never touched
    configure_remote(["/vsicurl/https://h/c.tif", "/vsicurl/https://h/noext"])
    assert os.environ[key] == ".TIF"
