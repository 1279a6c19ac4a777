"""Per-tile segmentation results kept for later prompts: "segment once, prompt many".

A :class:`TileStore` maps a tile's grid index to its :class:`~fastsam_geo.types.Instances`
(and, for text prompts, to their CLIP embeddings). :class:`MemoryStore` lives as long as the
Python object; :class:`DiskStore` writes one small ``.npz`` per tile (masks bit-packed) under a
folder keyed by the raster's *content* (:func:`raster_key`), the model and every parameter
that changes the result, so a later process, the CLI with ``--cache`` or the QGIS plugin
answers prompts without loading the model.

A cache folder is input too: anyone who can write to it can put files there, and disks fill
up or flip bits. Every file read back is validated against the tile it claims to hold
(:func:`load_instances`, :func:`load_embeddings`) with memory bounded by its size on disk; a
bad one is removed with a :class:`~fastsam_geo.errors.CacheWarning` and the tile segmented
again. A folder that cannot be created is an :class:`~fastsam_geo.errors.OutputError` before
anything runs; a write that fails mid-run (disk full) only warns, and the run goes on in memory.

The key lives in :mod:`fastsam_geo.rasterkey`, the file format and its checks in
:mod:`fastsam_geo.tilerecord`; both are re-exported here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .atomic import replace_file
from .errors import CacheWarning, OutputError
from .rasterkey import UnkeyableRaster, raster_key
from .tilerecord import MAX_INSTANCES, BadEntry, claimed_shape, decode, encode, load_embeddings, load_instances
from .tiling import TileGrid
from .types import Instances

__all__ = ["MAX_INSTANCES", "MEMO_FILE", "BadEntry", "DiskStore", "MemoryStore", "UnkeyableRaster",
           "decode", "default_cache_dir", "encode", "instances_nbytes", "load_embeddings", "load_instances",
           "raster_key"]

MEMO_FILE = "file-digests.json"
_TILE_FILE = re.compile(r"t(\d+)\.npz")


def default_cache_dir() -> Path:
    """``$FASTSAM_GEO_CACHE`` or ``~/.cache/fastsam-geo/segmentations`` (XDG honoured)."""
    if os.environ.get("FASTSAM_GEO_CACHE"):
        return Path(os.environ["FASTSAM_GEO_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "fastsam-geo" / "segmentations"



# -- stores -----------------------------------------------------------------------------------

DEFAULT_MEMORY_BYTES = 256 * 1024 * 1024


def instances_nbytes(inst: Instances) -> int:
    """Bytes held by one tile's results (boxes, scores, mask crops, nodata pixels)."""
    return int(inst.boxes.nbytes + inst.scores.nbytes + sum(c.nbytes for c in inst.crops)
               + (inst.invalid.nbytes if inst.invalid is not None else 0))


class MemoryStore:
    """Tile results and their text embeddings in memory: one LRU bounded by ``max_bytes``
    (None: unbounded; 0: keep nothing, for one-shot runs that never ask again).

    Bounded by bytes rather than tiles because a tile's results range from a few kB (a few
    buildings) to tens of MB (hundreds of "everything" masks); unbounded, a whole-raster run
    would hold every tile's masks and memory would grow with the raster's area. Embeddings
    share the budget (512 floats per object add up over a large raster).
    """

    persistent = False

    def __init__(self, max_bytes: int | None = DEFAULT_MEMORY_BYTES):
        # the pipeline's reader thread gets while its post thread puts
        self._lock = threading.RLock()
        self._lru: OrderedDict[tuple, tuple[object, int]] = OrderedDict()  # key -> (value, bytes)
        self._tiles = 0
        self.max_bytes = max_bytes
        self.nbytes = 0

    def _get(self, key: tuple):
        with self._lock:
            item = self._lru.get(key)
            if item is None:
                return None
            self._lru.move_to_end(key)
            return item[0]

    def _put(self, key: tuple, value: object, nbytes: int) -> None:
        with self._lock:
            old = self._lru.pop(key, None)
            if old is not None:
                self.nbytes -= old[1]
                self._tiles -= key[0] == "t"
            self._lru[key] = (value, nbytes)
            self.nbytes += nbytes
            self._tiles += key[0] == "t"
            while self.max_bytes is not None and self._lru and self.nbytes > self.max_bytes:
                evicted, (_, n) = self._lru.popitem(last=False)
                self.nbytes -= n
                self._tiles -= evicted[0] == "t"

    def get(self, tile: int) -> Instances | None:
        return self._get(("t", tile))

    def put(self, tile: int, inst: Instances) -> None:
        self._put(("t", tile), inst, instances_nbytes(inst))

    def has(self, tile: int) -> bool:
        return ("t", tile) in self._lru

    def get_embeddings(self, tile: int, key: str) -> np.ndarray | None:
        return self._get(("e", tile, key))

    def put_embeddings(self, tile: int, key: str, emb: np.ndarray) -> None:
        self._put(("e", tile, key), emb, int(emb.nbytes))

    def __len__(self) -> int:
        """Tiles held."""
        return self._tiles


class DiskStore(MemoryStore):
    """Tile results on disk under ``root/<raster key>/<run key>/``, with a memory LRU in front.

    ``grid``: the run's :class:`~fastsam_geo.tiling.TileGrid`, which gives the ``(H, W)`` each
    tile's record must have; without it a record may claim any shape up to ``run["tile_size"]``
    a side. ``dir`` is ``None`` when the raster cannot be keyed
    (then nothing touches the disk and a :class:`CacheWarning` says so).
    """

    persistent = True

    def __init__(self, root: str | os.PathLike, raster: str | os.PathLike, run: dict,
                 memory_bytes: int | None = DEFAULT_MEMORY_BYTES // 2, *,
                 grid: TileGrid | None = None):
        super().__init__(max_bytes=memory_bytes)
        self.root = Path(root).expanduser()
        self.grid = grid
        self._max_side = int(run.get("tile_size") or 1 << 16)
        self._on_disk: set[int] = set()
        self._writable = True
        self.dir: Path | None = None
        _make_dir(self.root)
        try:
            rkey = raster_key(raster, memo=self.root / MEMO_FILE)
        except UnkeyableRaster as exc:
            warnings.warn(f"{os.fspath(raster)}: not cached on disk: {exc}; results are kept in memory only",
                          CacheWarning, stacklevel=3)
            self._writable = self.persistent = False
            return
        run_key = hashlib.sha256(json.dumps(run, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.dir = self.root / rkey / run_key
        _make_dir(self.dir)
        meta = self.dir / "run.json"
        if not meta.exists():
            self._write(_write_bytes, meta, json.dumps({"raster": os.fspath(raster), "raster_key": rkey, **run},
                                                        indent=2, default=str).encode())
        self._on_disk = {int(m[1]) for p in self.dir.iterdir() if (m := _TILE_FILE.fullmatch(p.name))}

    def get(self, tile: int) -> Instances | None:
        inst = super().get(tile)
        if inst is None and tile in self._on_disk:
            path = self.dir / f"t{tile}.npz"
            try:
                inst = load_instances(path, self._expected_shape(tile, path))
            except BadEntry as exc:
                self._discard(path, exc, tile)
                return None
            super().put(tile, inst)
        return inst

    def _expected_shape(self, tile: int, path: Path) -> tuple[int, int]:
        """The tile's ``(H, W)`` from the grid, else the shape the record claims if it fits a
        tile of this run (read from its small ``shape`` member only)."""
        if self.grid is None:
            return claimed_shape(path, self._max_side)
        if not 0 <= tile < len(self.grid):
            raise BadEntry(f"tile {tile} is not in this raster's grid of {len(self.grid)} tiles")
        t = self.grid.tiles[tile]
        return t.height, t.width

    def put(self, tile: int, inst: Instances) -> None:
        super().put(tile, inst)
        if self._write(_savez, self.dir / f"t{tile}.npz" if self.dir else None, encode(inst)):
            with self._lock:
                self._on_disk.add(tile)

    def has(self, tile: int) -> bool:
        return tile in self._on_disk or super().has(tile)

    def get_embeddings(self, tile: int, key: str) -> np.ndarray | None:
        emb = super().get_embeddings(tile, key)
        if emb is None and self.dir is not None:
            path = self.dir / f"e{tile}-{key}.npy"
            if not path.is_file():
                return None
            try:
                emb = load_embeddings(path)
            except BadEntry as exc:
                self._discard(path, exc)
                return None
            super().put_embeddings(tile, key, emb)
        return emb

    def put_embeddings(self, tile: int, key: str, emb: np.ndarray) -> None:
        super().put_embeddings(tile, key, emb)
        self._write(_save, self.dir / f"e{tile}-{key}.npy" if self.dir else None, emb)

    def __len__(self) -> int:
        """Tiles held, on disk or (when the disk could not be used) in memory."""
        with self._lock:
            return len(self._on_disk | {k[1] for k in self._lru if k[0] == "t"})

    def _write(self, write: Callable, path: Path | None, data) -> bool:
        """Write through ``write``; on failure (disk full, permissions changed) warn once and
        keep this run's results in memory only: hours of segmentation are worth more than
        the cache, and the results stay correct."""
        if not self._writable or path is None:
            return False
        try:
            write(path, data)
            return True
        except OSError as exc:
            self._writable = False
            warnings.warn(f"{path.parent}: cannot write to the cache ({exc.strerror or exc}); the rest of this "
                          "run is kept in memory only", CacheWarning, stacklevel=4)
            return False

    def _discard(self, path: Path, why: Exception, tile: int | None = None) -> None:
        with contextlib.suppress(OSError):
            path.unlink()
        if tile is not None:
            with self._lock:
                self._on_disk.discard(tile)
        warnings.warn(f"{path}: damaged or foreign cache entry ({why}); removed, the tile is segmented again",
                      CacheWarning, stacklevel=4)


def _make_dir(path: Path, option: str = "--cache") -> None:
    """Create a cache (or, ``option="--job-dir"``, job) folder, or raise :class:`OutputError`
    naming it: a folder that cannot be created is the user's to fix, and is found before any
    model loads or tile is read."""
    what = "job folder" if option == "--job-dir" else "cache folder"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise OutputError(f"{path}: {what} is a file (or lies under one); choose another {option} "
                          f"folder ({exc.filename})") from exc
    except OSError as exc:
        raise OutputError(f"{path}: {what} cannot be created ({exc.strerror or exc}); choose another "
                          f"{option} folder or fix its permissions") from exc



def _write_bytes(path: Path, data: bytes) -> None:
    replace_file(path, lambda p: p.write_bytes(data))


def _savez(path: Path, arrays: dict) -> None:
    replace_file(path, lambda p: np.savez(p, **arrays))


def _save(path: Path, array: np.ndarray) -> None:
    replace_file(path, lambda p: np.save(p, array, allow_pickle=False))
