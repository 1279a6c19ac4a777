"""Per-tile segmentation results kept for later prompts: "segment once, prompt many".

A :class:`TileStore` maps a tile's grid index to its :class:`~fastsam_geo.types.Instances`
(and, for text prompts, to their CLIP embeddings). :class:`MemoryStore` lives as long as the
Python object; :class:`DiskStore` writes one small ``.npz`` per tile (masks bit-packed) under a
folder keyed by the raster's *content* (size, mtime and a hash of its first and last MiB), the
model and every parameter that changes the result, so a later process, the CLI with
``--cache`` or the QGIS plugin answers prompts without loading the model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import uuid
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .types import Instances


def raster_key(path: str | os.PathLike) -> str:
    """Content key of a raster file: size, mtime and a hash of its first and last MiB."""
    p = Path(path)
    st = p.stat()
    h = hashlib.sha1(f"{st.st_size}:{st.st_mtime_ns}".encode())
    with open(p, "rb") as f:
        h.update(f.read(1 << 20))
        if st.st_size > 2 << 20:
            f.seek(-(1 << 20), os.SEEK_END)
            h.update(f.read(1 << 20))
    return h.hexdigest()[:16]


def default_cache_dir() -> Path:
    """``$FASTSAM_GEO_CACHE`` or ``~/.cache/fastsam-geo/segmentations`` (XDG honoured)."""
    if os.environ.get("FASTSAM_GEO_CACHE"):
        return Path(os.environ["FASTSAM_GEO_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "fastsam-geo" / "segmentations"


def encode(inst: Instances) -> dict[str, np.ndarray]:
    """Instances -> flat arrays (masks bit-packed, one stream; the tile's nodata pixels
    bit-packed when there are any) for ``np.savez``."""
    sizes = np.array([c.size for c in inst.crops], dtype=np.int64)
    bits = np.packbits(np.concatenate([c.ravel() for c in inst.crops])) if len(inst) else \
        np.zeros(0, np.uint8)
    out = {"boxes": inst.boxes.astype(np.int32), "scores": inst.scores.astype(np.float32),
           "sizes": sizes, "bits": bits, "shape": np.asarray(inst.shape, np.int64)}
    if inst.invalid is not None:
        out["invalid"] = np.packbits(inst.invalid.ravel())
    return out


def decode(d) -> Instances:
    boxes, sizes = d["boxes"], d["sizes"]
    shape = tuple(int(v) for v in d["shape"])
    invalid = None
    if "invalid" in d:
        invalid = np.unpackbits(d["invalid"], count=shape[0] * shape[1]).astype(bool).reshape(shape)
    if len(boxes) == 0:
        return Instances.empty(shape, invalid)
    flat = np.unpackbits(d["bits"], count=int(sizes.sum())).astype(bool)
    ends = np.cumsum(sizes)
    crops = tuple(flat[e - n:e].reshape(int(b[3] - b[1]), int(b[2] - b[0]))
                  for e, n, b in zip(ends, sizes, boxes))
    return Instances(boxes, d["scores"], crops, shape, invalid)


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
    """Tile results on disk under ``root/<raster key>/<run key>/``, with a memory LRU in front."""

    persistent = True

    def __init__(self, root: str | os.PathLike, raster: str | os.PathLike, run: dict,
                 memory_bytes: int | None = DEFAULT_MEMORY_BYTES // 2):
        super().__init__(max_bytes=memory_bytes)
        rkey = raster_key(raster)
        run_key = hashlib.sha1(json.dumps(run, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.dir = Path(root).expanduser() / rkey / run_key
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "run.json"
        if not meta.exists():
            _atomic_write(meta, json.dumps({"raster": os.fspath(raster), "raster_key": rkey, **run},
                                           indent=2, default=str).encode())
        self._on_disk = {int(p.stem[1:]) for p in self.dir.glob("t*.npz")}

    def get(self, tile: int) -> Instances | None:
        inst = super().get(tile)
        if inst is None and tile in self._on_disk:
            with np.load(self.dir / f"t{tile}.npz") as d:
                inst = decode(d)
            super().put(tile, inst)
        return inst

    def put(self, tile: int, inst: Instances) -> None:
        super().put(tile, inst)
        _atomic_savez(self.dir / f"t{tile}.npz", encode(inst))
        with self._lock:
            self._on_disk.add(tile)

    def has(self, tile: int) -> bool:
        return tile in self._on_disk or super().has(tile)

    def get_embeddings(self, tile: int, key: str) -> np.ndarray | None:
        emb = super().get_embeddings(tile, key)
        path = self.dir / f"e{tile}-{key}.npy"
        if emb is None and path.exists():
            emb = np.load(path)
            super().put_embeddings(tile, key, emb)
        return emb

    def put_embeddings(self, tile: int, key: str, emb: np.ndarray) -> None:
        super().put_embeddings(tile, key, emb)
        path = self.dir / f"e{tile}-{key}.npy"
        tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:6]}.npy")
        np.save(tmp, emb)
        os.replace(tmp, path)

    def __len__(self) -> int:
        return len(self._on_disk)


def _atomic_savez(path: Path, arrays: dict) -> None:
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:6]}.npz")
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
