"""Shard formats side by side: LitData (what ``archive shards`` writes), WebDataset, zarr v3.

The same chips (``--chips`` 256 px crops, 13 uint16 bands, of the real Sentinel-2 L1C scene in
``../shared/data``, at random offsets with flips), each format compressed with zstd and read in
shuffled order by one ``torch.utils.data.DataLoader`` worker (batch 32; the second of two epochs
is timed, so every format reads from the page cache). Reported per format: chips/s of that one
loader core, MB on disk, and seconds to write.

* ``litdata``: ``BinaryWriter`` as ``archive shards`` configures it (64 MB chunks, one zstd frame
  per chunk), read by ``StreamingDataset`` (``local:`` prefix, chunk and chip shuffling);
* ``webdataset``: tar shards of about 64 MB, one zstd-compressed ``.npy`` per chip, read by
  ``webdataset.WebDataset`` with shard shuffling and a 256-chip shuffle buffer;
* ``zarr``: one zarr v3 array (N, 13, 256, 256), a chunk per chip, 64 chips per shard (the
  sharding codec), zstd per chunk, read chip by chip in random order.

Usage: ``python -m benchmarks.bench_shard_formats [--chips N] [--level L] [--rounds R] [--json]``
"""

import argparse
import io
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from torch.utils.data import DataLoader, Dataset

from benchmarks.common.paths import shared_data_dir
from geopera.archive.shard_parts import CHUNK_BYTES

SHARED = shared_data_dir()
SCENE = SHARED / "c_change_detection" / "oscd_bercy" / "T1_S2L1C_13bands_10m.tif"
PATCH = 256
BATCH = 32
TAR_BYTES = 64 * 2**20


def chips(count: int, seed: int = 0) -> np.ndarray:
    """(count, 13, 256, 256) uint16 crops of the scene at random offsets, randomly flipped."""
    with rasterio.open(SCENE) as src:
        scene = src.read()  # (13, H, W)
    rng = np.random.default_rng(seed)
    out = np.empty((count, scene.shape[0], PATCH, PATCH), dtype=np.uint16)
    for k in range(count):
        y = int(rng.integers(0, scene.shape[1] - PATCH + 1))
        x = int(rng.integers(0, scene.shape[2] - PATCH + 1))
        crop = scene[:, y : y + PATCH, x : x + PATCH]
        out[k] = crop[:, ::-1] if rng.random() < 0.5 else crop
    return out


def write_litdata(data: np.ndarray, folder: Path, level: int) -> None:
    """Chunks written as ``archive shards`` writes them."""
    from litdata.streaming.writer import BinaryWriter

    writer = BinaryWriter(
        str(folder), chunk_bytes=CHUNK_BYTES, compression=f"zstd:{level}", compression_level="chunk"
    )
    for k, image in enumerate(data):
        writer[k] = {"chip": k, "image": image}
    writer.done()
    writer.merge()


def read_litdata(folder: Path) -> DataLoader[Any]:
    """LitData's shuffled stream over the chunks, through a cache kept across passes."""
    from litdata import StreamingDataLoader, StreamingDataset

    cache = str(folder.parent / "litdata-cache")
    stream = StreamingDataset(
        f"local:{folder}", shuffle=True, seed=0, cache_dir=cache, transform=_litdata_image
    )
    return StreamingDataLoader(stream, batch_size=BATCH, num_workers=1)


def _litdata_image(item: dict[str, Any]) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(item["image"]))  # (13, 256, 256)


def write_webdataset(data: np.ndarray, folder: Path, level: int) -> None:
    """Tar shards of about 64 MB (WebDataset's ``ShardWriter``): ``KEY.npy.zst`` per chip."""
    import webdataset as wds
    import zstd

    folder.mkdir(parents=True)
    pattern = str(folder / "chips-%05d.tar")
    with wds.ShardWriter(pattern, maxsize=TAR_BYTES, verbose=0) as sink:
        for k, image in enumerate(data):
            buffer = io.BytesIO()
            np.save(buffer, image)
            sink.write({"__key__": f"{k:08d}", "npy.zst": zstd.compress(buffer.getvalue(), level)})


def read_webdataset(folder: Path) -> DataLoader[Any]:
    """WebDataset's stream: shuffled shards, a shuffle buffer, zstd and ``np.load`` per chip."""
    import webdataset as wds

    urls = sorted(str(p) for p in folder.glob("*.tar"))
    stream = (
        wds.WebDataset(urls, shardshuffle=len(urls), seed=0, empty_check=False)
        .shuffle(256)
        .map(_webdataset_image)
    )
    return DataLoader(stream, batch_size=BATCH, num_workers=1)


def _webdataset_image(sample: dict[str, Any]) -> torch.Tensor:
    import zstd

    array = np.load(io.BytesIO(zstd.decompress(sample["npy.zst"])))  # (13, 256, 256)
    return torch.from_numpy(array)


def write_zarr(data: np.ndarray, folder: Path, level: int) -> None:
    """One sharded zarr v3 array: a chunk per chip, 64 chips per shard, zstd."""
    import zarr
    from zarr.codecs import ZstdCodec

    array = zarr.create_array(
        store=str(folder),
        shape=data.shape,
        chunks=(1, *data.shape[1:]),
        shards=(64, *data.shape[1:]),
        dtype=data.dtype,
        compressors=ZstdCodec(level=level),
    )
    array[:] = data


class _ZarrChips(Dataset[torch.Tensor]):
    """Chips of a zarr array by index; the array is opened once per worker."""

    def __init__(self, folder: Path, count: int) -> None:
        self.folder, self.count = str(folder), count
        self.array: Any = None  # a zarr.Array once opened

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, k: int) -> torch.Tensor:
        import zarr

        if self.array is None:
            self.array = zarr.open_array(self.folder, mode="r")
        return torch.from_numpy(np.asarray(self.array[k]))  # (13, 256, 256)


def read_zarr(folder: Path, count: int) -> DataLoader[Any]:
    """Chips in random order, one chunk read each."""
    generator = torch.Generator().manual_seed(0)
    chips_of = _ZarrChips(folder, count)
    return DataLoader(chips_of, batch_size=BATCH, shuffle=True, num_workers=1, generator=generator)


def one_pass(loader: DataLoader[Any]) -> float:
    """Chips/s of one pass over ``loader``."""
    start, seen = time.perf_counter(), 0
    for batch in loader:
        seen += batch.shape[0]  # batch: (32, 13, 256, 256)
    return seen / (time.perf_counter() - start)


def size_mb(folder: Path) -> float:
    """Bytes of the files under ``folder``, in MB."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def main() -> None:
    """Write the chips in every format, read each back, print the table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chips", type=int, default=512)
    parser.add_argument("--level", type=int, default=4, help='zstd level (LitData\'s "zstd" is 4)')
    parser.add_argument("--rounds", type=int, default=3, help="later passes, alternated")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    data = chips(args.chips)
    writers = {"litdata": write_litdata, "webdataset": write_webdataset, "zarr": write_zarr}
    readers: dict[str, Callable[[Path], DataLoader[Any]]] = {
        "litdata": read_litdata,
        "webdataset": read_webdataset,
        "zarr": lambda folder: read_zarr(folder, args.chips),
    }
    result: dict[str, Any] = {"chips": args.chips, "raw_mb": data.nbytes / 1e6, "level": args.level}
    with tempfile.TemporaryDirectory() as tmp:
        folders = {name: Path(tmp) / name for name in writers}
        for name, write in writers.items():
            start = time.perf_counter()
            write(data, folders[name], args.level)
            result[name] = {
                "write_s": time.perf_counter() - start,
                "mb_on_disk": size_mb(folders[name]),
            }
            result[name]["first_pass_per_core"] = one_pass(readers[name](folders[name]))
        later: dict[str, list[float]] = {name: [] for name in writers}
        for _ in range(args.rounds):  # alternated: the machine's noise falls on every format
            for name in writers:
                later[name].append(one_pass(readers[name](folders[name])))
        for name, passes in later.items():
            result[name]["later_passes_per_core"] = float(np.median(passes))
    print(json.dumps(result, indent=1) if args.json else _table(result))


def _table(result: dict[str, Any]) -> str:
    rows = [f"{'format':12s} {'1st pass/core':>14s} {'later/core':>11s} {'MB':>7s} {'write s':>8s}"]
    for name in ("litdata", "webdataset", "zarr"):
        r = result[name]
        rows.append(
            f"{name:12s} {r['first_pass_per_core']:14.1f} {r['later_passes_per_core']:11.1f} "
            f"{r['mb_on_disk']:7.1f} {r['write_s']:8.1f}"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    main()
