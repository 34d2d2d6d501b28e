"""One torchgeo ``RasterDataset`` per source, and a fast windowed reader on top of it.

Each :class:`~geopera.data.sources.model.Source` becomes a ``RasterDataset`` subclass built at run
time (band-separate items use torchgeo's ``separate_files`` mechanism; a source with both
layouts becomes a ``UnionDataset``). torchgeo's dataset is the index that the samplers use and
the general read path (mosaics across file edges, warping).

:class:`SourceReader` adds a fast path for the common case: a patch that lies inside one file,
on that file's pixel grid, is read with one windowed ``rasterio`` read per file and no merge.
Everything else falls back to torchgeo.
"""

import contextlib
import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window
from torch import Tensor
from torchgeo.datasets import GeoDataset, RasterDataset

from geopera.core.errors import error_line
from geopera.data.sources.model import RasterItem, Source
from geopera.data.sources.remote import BlockCache, align_to_tiles, is_remote
from geopera.data.sources.signing import resign, unsigned_path

#: Tolerance, in pixels, for a window to count as aligned with a file's grid.
_ALIGN_TOL = 1e-3


def _raster_dataset_class(source: Source, separate: bool) -> type[RasterDataset]:
    """Make a ``RasterDataset`` subclass for one layout of a source."""
    bands = source.band_names
    attrs: dict[str, Any] = {
        "filename_glob": "*",
        "all_bands": tuple(bands),
        "is_image": True,
        "separate_files": separate,
    }
    if separate:
        alternation = "|".join(re.escape(b) for b in sorted(bands, key=len, reverse=True))
        attrs["filename_regex"] = (
            r"^(?P<scene>.+?)[_\-.](?P<band>" + alternation + r")(?P<tail>_[A-Za-z0-9]+)?\.\w+$"
        )
    safe = re.sub(r"\W", "_", source.name)
    return type(f"Source_{safe}", (RasterDataset,), attrs)


def build_torchgeo_dataset(source: Source, bands: Sequence[str]) -> GeoDataset:
    """Build the torchgeo dataset of a source at its native CRS and resolution.

    Args:
        source: The source.
        bands: Band names to read, in order.

    Returns:
        A ``RasterDataset`` (or a ``UnionDataset`` of two when the source mixes band-separate
        and stacked files).
    """
    datasets: list[RasterDataset] = []
    for separate in (True, False):
        items = [it for it in source.items if it.separate == separate]
        if not items:
            continue
        cls = _raster_dataset_class(source, separate)
        datasets.append(
            cls(
                paths=[it.paths[0] for it in items],
                crs=source.crs,
                res=source.res,
                bands=list(bands),
            )
        )
    dataset: GeoDataset = datasets[0]
    for other in datasets[1:]:
        dataset = dataset | other
    return dataset


class SourceReader:
    """Read patches of one source: a fast path inside single files, torchgeo elsewhere.

    File handles are opened lazily in each process (DataLoader workers fork after the reader
    is built) and kept open.

    Windows are moved onto the items' internal tiles (:meth:`align`): a patch that straddles a
    tile edge decodes two to four compressed tiles for one tile's pixels, on a local disk as
    over the network. Items whose data lie over the network (STAC assets, ``/vsicurl/``...) are
    also read through ``cache`` when given: whole tiles are fetched once and kept on the local
    disk.

    Args:
        source: The source.
        bands: Band names to read, in order.
        cache: Local cache of fetched tiles for remote items, or None.
    """

    def __init__(
        self, source: Source, bands: Sequence[str], cache: BlockCache | None = None
    ) -> None:
        self.source = source
        self.bands = list(bands)
        self.cache = cache
        self._remote = [any(is_remote(p) for p in (it.assets or it.paths)) for it in source.items]
        self._tiles: dict[int, tuple[int, int]] = {}
        self.dataset = build_torchgeo_dataset(source, self.bands)
        self.res = source.res
        self.nodata = source.nodata
        self._bounds = np.array([it.bounds for it in source.items], dtype=np.float64)
        self._plans = [self._plan(it) for it in source.items]
        self._handles: dict[str, Any] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._pid = os.getpid()
        self.fast_reads = 0
        self.fallback_reads = 0
        #: Items found unreadable during the run; never read again.
        self.excluded: set[int] = set()

    def _plan(self, item: RasterItem) -> list[tuple[str, list[int]]]:
        """(path, 1-based band indexes) reads that give ``self.bands`` in order.

        A remote STAC item is read from its assets directly (one read per asset, run
        concurrently), not through its VRT, which would fetch the assets one after the other.
        """
        if item.band_sources and any(is_remote(p) for p, _ in item.band_sources):
            plan: list[tuple[str, list[int]]] = []
            for band in self.bands:
                path, index = item.band_sources[item.band_names.index(band)]
                if plan and plan[-1][0] == path:
                    plan[-1][1].append(index)  # consecutive bands of one asset: one read
                else:
                    plan.append((path, [index]))
            return plan
        if item.separate:
            return [(item.paths[item.band_names.index(b)], [1]) for b in self.bands]
        return [(item.paths[0], [item.band_names.index(b) + 1 for b in self.bands])]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_handles={}, _pool=None)  # a spawned worker opens its own files
        return state

    def tile_shape(self, index: int) -> tuple[int, int]:
        """Internal tile shape (rows, cols) of a remote item's first data file (opened once)."""
        if index not in self._tiles:
            item = self.source.items[index]
            with rasterio.open((item.assets or item.paths)[0]) as ds:
                rows, cols = ds.block_shapes[0]
            self._tiles[index] = (int(rows), int(cols))
        return self._tiles[index]

    def align(self, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        """Move a patch onto the fewest internal tiles of its item (striped files: unchanged).

        Args:
            box: ``(xmin, ymin, xmax, ymax)`` on the item's pixel grid.

        Returns:
            The moved box (same size, shifted by less than its size), or ``box``.
        """
        i = self.fast_item(*box)
        if i is None:
            return box
        try:
            tile_rows, tile_cols = self.tile_shape(i)
        except Exception:
            return box  # unreadable: the read itself reports it
        item = self.source.items[i]
        b = self._bounds[i]
        rx, ry = self.res
        col, row = round((box[0] - b[0]) / rx), round((b[3] - box[3]) / ry)
        width, height = round((box[2] - box[0]) / rx), round((box[3] - box[1]) / ry)
        new_col = align_to_tiles(col, width, tile_cols, item.width)
        new_row = align_to_tiles(row, height, tile_rows, item.height)
        if (new_col, new_row) == (col, row):
            return box
        x0, y1 = b[0] + new_col * rx, b[3] - new_row * ry
        return (float(x0), float(y1 - height * ry), float(x0 + width * rx), float(y1))

    def _read_cached(self, index: int, window: Window) -> np.ndarray:
        """Read a window through the tile cache: whole tiles fetched once, then sliced."""
        if self.cache is None:  # pragma: no cover - called only with a cache
            raise RuntimeError("no tile cache")
        item = self.source.items[index]
        tile_rows, tile_cols = self.tile_shape(index)
        col0, row0 = int(window.col_off), int(window.row_off)
        width, height = int(window.width), int(window.height)
        out: np.ndarray | None = None
        plan = self._plans[index]
        for tr in range(row0 // tile_rows, (row0 + height - 1) // tile_rows + 1):
            for tc in range(col0 // tile_cols, (col0 + width - 1) // tile_cols + 1):
                key_text = f"{item.paths[0]}|{plan}|{tr}|{tc}"
                key = hashlib.sha256(key_text.encode()).hexdigest()[:32]
                tile = self.cache.get(key)
                if tile is None:
                    tw = Window(
                        tc * tile_cols,
                        tr * tile_rows,
                        min(tile_cols, item.width - tc * tile_cols),
                        min(tile_rows, item.height - tr * tile_rows),
                    )
                    tile = self._read_plan(plan, tw)  # (C, th, tw)
                    self.cache.put(key, tile)
                if out is None:
                    out = np.empty((tile.shape[0], height, width), dtype=tile.dtype)
                # overlap of the tile (origin ty, tx) and the window, in raster pixels
                ty, tx = tr * tile_rows, tc * tile_cols
                r0, r1 = max(row0, ty), min(row0 + height, ty + tile.shape[1])
                c0, c1 = max(col0, tx), min(col0 + width, tx + tile.shape[2])
                out[:, r0 - row0 : r1 - row0, c0 - col0 : c1 - col0] = tile[
                    :, r0 - ty : r1 - ty, c0 - tx : c1 - tx
                ]
        if out is None:  # pragma: no cover - a window always touches a tile
            raise RuntimeError(f"empty window {window}")
        return out

    def _read_plan(self, plan: list[tuple[str, list[int]]], window: Window) -> np.ndarray:
        """Read a window from every file of a plan; several remote files concurrently.

        Returns:
            (C, H, W), the plan's bands in order.
        """
        if len(plan) == 1:
            path, idx = plan[0]
            return np.asarray(self._handle(path).read(idx, window=window))
        handles = [self._handle(p) for p, _ in plan]  # opened here: one thread per file below
        if any(is_remote(p) for p, _ in plan):
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="geopera-read")
            jobs = [
                self._pool.submit(h.read, idx, window=window)
                for h, (_, idx) in zip(handles, plan, strict=True)
            ]
            parts = [job.result() for job in jobs]
        else:
            parts = [h.read(idx, window=window) for h, (_, idx) in zip(handles, plan, strict=True)]
        # list of (c_i, H, W) -> (C, H, W)
        return np.concatenate(parts, axis=0)

    def _handle(self, path: str) -> Any:
        if os.getpid() != self._pid:  # forked into a worker: never share GDAL handles
            self._handles = {}
            self._pool = None  # nor threads
            self._pid = os.getpid()
        handle = self._handles.get(path)
        if handle is None:
            handle = rasterio.open(path)
            self._handles[path] = handle
        return handle

    def resign(self, indexes: Iterable[int]) -> bool:
        """Sign the asset URLs of these items again (a 403: their signatures expired).

        Args:
            indexes: Item indices.

        Returns:
            Whether any item was signed again (False when none is signed, or the hook failed:
            the next read then fails and the items are reported as unreadable).
        """
        done = False
        for i in indexes:
            item = self.source.items[i]
            try:
                done = resign(item) or done
            except Exception:  # the hook failed: the read that follows reports the item
                continue
            self._plans[i] = self._plan(item)
        if done:
            self.reset()
            RasterDataset._cached_load_warp_file.cache_clear()  # torchgeo's open VRTs
        return done

    def reset(self) -> None:
        """Close the open file handles (the next read opens the files again)."""
        for handle in self._handles.values():
            with contextlib.suppress(Exception):  # a broken file's handle may fail to close
                handle.close()
        self._handles = {}

    @property
    def n_items(self) -> int:
        """Number of items (scenes) of the source."""
        return len(self._bounds)

    def item_bounds(self, index: int) -> tuple[float, float, float, float]:
        """Bounds ``(xmin, ymin, xmax, ymax)`` of one item in the source CRS."""
        b = self._bounds[index]
        return (float(b[0]), float(b[1]), float(b[2]), float(b[3]))

    def items_at(self, box: tuple[float, float, float, float]) -> list[int]:
        """Indices of the items whose bounds intersect a box.

        Args:
            box: ``(xmin, ymin, xmax, ymax)`` in the source CRS.

        Returns:
            Item indices.
        """
        b = self._bounds
        hit = (b[:, 0] < box[2]) & (b[:, 2] > box[0]) & (b[:, 1] < box[3]) & (b[:, 3] > box[1])
        return [int(i) for i in np.nonzero(hit)[0]]

    def item_paths(self, index: int) -> list[str]:
        """The files of one item (one per band for band-separate items; URLs without signature)."""
        item = self.source.items[index]
        return sorted({unsigned_path(item, p) for p, _ in self._plans[index]})

    def check_item(self, index: int, box: tuple[float, float, float, float]) -> str | None:
        """Read the part of a box that one item covers, from freshly opened files.

        Args:
            index: Item index.
            box: ``(xmin, ymin, xmax, ymax)``.

        Returns:
            The error in one line, or None when the item reads fine.
        """
        b = self._bounds[index]
        rx, ry = self.res
        x0, x1 = max(box[0], b[0]), min(box[2], b[2])
        y0, y1 = max(box[1], b[1]), min(box[3], b[3])
        window = Window(
            int((x0 - b[0]) // rx),
            int((b[3] - y1) // ry),
            max(1, round((x1 - x0) / rx)),
            max(1, round((y1 - y0) / ry)),
        )
        for path, idx in self._plans[index]:
            try:
                with rasterio.open(path) as ds:
                    ds.read(idx, window=window)
            except Exception as err:
                # name the file when the item has several (which asset of a STAC item failed)
                many = len(self._plans[index]) > 1
                shown = unsigned_path(self.source.items[index], path)
                return f"{shown}: {error_line(err)}" if many else error_line(err)
        return None

    def fast_item(self, xmin: float, ymin: float, xmax: float, ymax: float) -> int | None:
        """Index of an item that contains the window on its pixel grid, or None."""
        b = self._bounds
        inside = np.nonzero(
            (b[:, 0] <= xmin + 1e-9)
            & (b[:, 1] <= ymin + 1e-9)
            & (b[:, 2] >= xmax - 1e-9)
            & (b[:, 3] >= ymax - 1e-9)
        )[0]
        rx, ry = self.res
        for i in inside:
            if int(i) in self.excluded:
                continue
            col = (xmin - b[i, 0]) / rx
            row = (b[i, 3] - ymax) / ry
            if abs(col - round(col)) < _ALIGN_TOL and abs(row - round(row)) < _ALIGN_TOL:
                return int(i)
        return None

    def read(self, xmin: float, ymin: float, xmax: float, ymax: float) -> np.ndarray:
        """Read one patch.

        Args:
            xmin: Left edge in the source CRS.
            ymin: Bottom edge.
            xmax: Right edge.
            ymax: Top edge.

        Returns:
            Raw pixel values, shape (C, H, W): the file's dtype on the fast path, float32 from
            torchgeo's mosaic otherwise.
        """
        rx, ry = self.res
        width = round((xmax - xmin) / rx)
        height = round((ymax - ymin) / ry)
        i = self.fast_item(xmin, ymin, xmax, ymax)
        if i is not None:
            b = self._bounds[i]
            window = Window(round((xmin - b[0]) / rx), round((b[3] - ymax) / ry), width, height)
            if self.cache is not None and self._remote[i]:
                self.fast_reads += 1
                return self._read_cached(i, window)
            array = self._read_plan(self._plans[i], window)
            self.fast_reads += 1
            return array
        self.fallback_reads += 1
        sample = self.dataset[slice(xmin, xmax, rx), slice(ymin, ymax, ry)]
        image: Tensor = sample["image"]
        return image[..., :height, :width].float().numpy()
