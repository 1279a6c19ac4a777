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
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import hashlib
import io
import json
import math
import os
import re
import struct
import threading
import uuid
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
import rasterio

from .errors import CacheWarning, OutputError
from .tiling import TileGrid
from .types import Instances

KEY_VERSION = "fastsam-geo raster key 2"
HASH_CHUNK = 4 << 20
"""Bytes per read while hashing. Measured on a 1 GiB file (2-core dev machine): SHA-256 at
1.16 GiB/s from the page cache and 0.57 GiB/s cold (caches dropped), the same as SHA-1 (SHA-NI)
and faster than BLAKE2b (0.6 / 0.36 GiB/s); 1-8 MiB chunks measured the same. So keying costs
about a second per GB the first time a file is seen, and nothing after (the memo)."""
MEMO_FILE = "file-digests.json"
MEMO_ENTRIES = 4096
MAX_INSTANCES = 100_000
"""Most instances a cached tile may hold: the ceiling :class:`~fastsam_geo.options.Options`
accepts for ``max_det``."""
MAX_EMBED_DIM = 8192
_NPY_HEADER = 65536
_TILE_FILE = re.compile(r"t(\d+)\.npz")
_ARCHIVES = ("/vsizip/", "/vsitar/", "/vsigzip/", "/vsi7z/", "/vsirar/")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class UnkeyableRaster(Exception):
    """Nothing tells whether this raster changed (e.g. a remote file without ETag or
    Last-Modified): an on-disk cache could return stale masks, so it is not used."""


class BadEntry(Exception):
    """A cache file that does not hold what it must (internal: the store discards it)."""


# -- the raster's content key -------------------------------------------------------------------

def raster_key(path: str | os.PathLike, memo: str | os.PathLike | None = None) -> str:
    """Content key of a raster: a SHA-256 over the full content of every file GDAL reads for it.

    A VRT (or any multi-file dataset) is keyed by all the files GDAL lists for it, so a changed
    source changes the key. Size + mtime + partial hashes are not enough: ``cp -p``, ``rsync -t``
    and ``touch -r`` rewrite a file's middle with its mtime kept. Local files are hashed once
    per ``(inode, size, ctime, mtime)`` and remembered in ``memo`` (a JSON file): ctime changes
    on every write and cannot be set by users, so a rewrite that keeps the mtime is rehashed.
    Archives in GDAL paths (``/vsizip/x.zip/...``) hash the local archive; remote files
    (``/vsicurl/``, ``/vsis3/``, URLs) are keyed by their URL and the server's ETag,
    Last-Modified and Content-Length (as GDAL sees them, with its credentials), since hashing
    them would download them whole. Raises :class:`UnkeyableRaster` when none of these exists.
    """
    memo_map = _Memo(Path(memo)) if memo is not None else None
    h = hashlib.sha256(KEY_VERSION.encode())
    for f in dataset_files(os.fspath(path)):
        h.update(f"\0{_file_key(f, memo_map)}".encode())
    if memo_map is not None:
        memo_map.save()
    return h.hexdigest()[:16]


def dataset_files(path: str) -> list[str]:
    """The files GDAL reads for ``path`` (the dataset first; a VRT's sources after it)."""
    try:
        with rasterio.Env(), rasterio.open(path) as src:
            files = list(src.files) or [path]
    except (rasterio.errors.RasterioError, OSError) as exc:
        raise UnkeyableRaster(f"GDAL cannot open it to list its files ({exc})") from exc
    return list(dict.fromkeys(files))


def _file_key(f: str, memo: _Memo | None) -> str:
    """What identifies one file's content: its digest, or a remote file's URL and validators."""
    if not (f.startswith("/vsi") or _URL.match(f)):
        return file_digest(f, memo)
    archive = _local_archive(f)
    if archive is not None:
        return f"{file_digest(archive, memo)}:{f[f.index(archive) + len(archive):]}"
    return f"{f}:{_remote_validators(f)}"


def file_digest(path: str, memo: _Memo | None = None) -> str:
    """SHA-256 of a local file's full content, remembered per (inode, size, ctime, mtime)."""
    try:
        st = os.stat(path)
        stamp = _stamp(path, st)
        if memo is not None and (cached := memo.get(stamp)) is not None:
            return cached
        digest = _sha256(path)
        if memo is not None and _stamp(path, os.stat(path)) == stamp:  # unchanged while hashing
            memo.put(stamp, digest)
    except OSError as exc:
        raise UnkeyableRaster(f"{path} cannot be read to key the cache ({exc.strerror or exc})") from exc
    return digest


def _stamp(path: str, st: os.stat_result) -> str:
    return f"{os.path.realpath(path)}|{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_ctime_ns}:{st.st_mtime_ns}"


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    buf = bytearray(HASH_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def _local_archive(f: str) -> str | None:
    """The local archive file inside a GDAL archive path (``/vsizip//data/x.zip/a.tif``)."""
    prefix = next((p for p in _ARCHIVES if f.startswith(p)), None)
    if prefix is None:
        return None
    rest = f[len(prefix):]
    if rest.startswith("{") and "}" in rest:
        rest = rest[1:rest.index("}")]
    parts = rest.split("/")
    for i in range(len(parts), 0, -1):
        candidate = "/".join(parts[:i])
        if candidate and os.path.isfile(candidate):
            return candidate
    return None


def _remote_validators(f: str) -> str:
    """``etag|last-modified|content-length`` of a remote file, from GDAL's HTTP headers."""
    target = f if f.startswith("/vsi") else f"/vsicurl/{f}"
    headers = {k.lower(): v for k, v in gdal_headers(target).items()}
    etag, modified = headers.get("etag", ""), headers.get("last-modified", "")
    if not (etag or modified):
        raise UnkeyableRaster(f"{f}: the server reports neither an ETag nor a Last-Modified date, "
                              "so a change to it could not be detected")
    return f"{etag}|{modified}|{headers.get('content-length', '')}"


def gdal_headers(path: str) -> dict[str, str]:
    """HTTP headers GDAL got for a ``/vsicurl/``-like path (``VSIGetFileMetadata(..., "HEADERS")``),
    through the libgdal rasterio runs on, so GDAL's own credentials and settings apply.
    Empty where that library cannot be found."""
    lib = _libgdal()
    if lib is None:
        return {}
    with rasterio.Env():
        if hasattr(lib, "VSICurlPartialClearCache"):  # fresh headers, and no stale blocks read after them
            lib.VSICurlPartialClearCache(path.encode())
        items = lib.VSIGetFileMetadata(path.encode(), b"HEADERS", None)
        try:
            out = []
            i = 0
            while items and items[i] is not None:
                out.append(items[i].decode("utf-8", "replace"))
                i += 1
        finally:
            if items:
                lib.CSLDestroy(ctypes.cast(items, ctypes.c_void_p))
    return dict(item.split("=", 1) for item in out if "=" in item)


@lru_cache(maxsize=1)
def _libgdal() -> ctypes.CDLL | None:
    """The libgdal already loaded by rasterio (never a second copy from elsewhere)."""
    candidates = []
    with contextlib.suppress(OSError), open("/proc/self/maps") as maps:
        candidates = [line.split()[-1] for line in maps if "libgdal" in line and "/" in line]
    base = os.path.dirname(os.path.dirname(rasterio.__file__))
    candidates += glob.glob(os.path.join(base, "rasterio.libs", "libgdal*"))
    candidates += glob.glob(os.path.join(os.path.dirname(rasterio.__file__), ".dylibs", "libgdal*"))
    for path in dict.fromkeys(candidates):
        try:
            lib = ctypes.CDLL(path)
            lib.VSIGetFileMetadata.restype = ctypes.POINTER(ctypes.c_char_p)
            lib.VSIGetFileMetadata.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p]
            lib.CSLDestroy.argtypes = [ctypes.c_void_p]
            with contextlib.suppress(AttributeError):
                lib.VSICurlPartialClearCache.argtypes = [ctypes.c_char_p]
            return lib
        except (OSError, AttributeError):
            continue
    return None


class _Memo:
    """File digests by stamp, in a small JSON file beside the cache (read and written whole;
    anything malformed is ignored: it is an optimisation, and input too)."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: OrderedDict[str, str] = OrderedDict()
        self.dirty = False
        with contextlib.suppress(OSError, ValueError):
            if path.is_file() and path.stat().st_size <= MEMO_ENTRIES * 512:
                data = json.loads(path.read_text())
                data = data if isinstance(data, dict) else {}
                self.entries.update((k, v) for k, v in data.items()
                                    if isinstance(k, str) and isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v))

    def get(self, stamp: str) -> str | None:
        return self.entries.get(stamp)

    def put(self, stamp: str, digest: str) -> None:
        self.entries[stamp] = digest
        self.entries.move_to_end(stamp)
        while len(self.entries) > MEMO_ENTRIES:
            self.entries.popitem(last=False)
        self.dirty = True

    def save(self) -> None:
        if self.dirty:
            with contextlib.suppress(OSError):
                _atomic_write(self.path, json.dumps(self.entries).encode())


def default_cache_dir() -> Path:
    """``$FASTSAM_GEO_CACHE`` or ``~/.cache/fastsam-geo/segmentations`` (XDG honoured)."""
    if os.environ.get("FASTSAM_GEO_CACHE"):
        return Path(os.environ["FASTSAM_GEO_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "fastsam-geo" / "segmentations"


# -- tile records: encode, and validated decode --------------------------------------------------

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
    if inst.quality is not None:
        out["quality"] = inst.qualities
    return out


def decode(d) -> Instances:
    """:func:`encode`'s arrays (trusted, e.g. just encoded) -> Instances. Files go through
    :func:`load_instances`, which checks every array first."""
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
    return Instances(boxes, d["scores"], crops, shape, invalid, d.get("quality"))


_MEMBERS = {"shape": ("iu", 1), "boxes": ("iu", 2), "scores": ("f", 1), "sizes": ("iu", 1), "bits": ("u", 1),
            "invalid": ("u", 1), "quality": ("f", 1)}
"""Member -> (allowed dtype kinds, ndim) of a tile record."""
_REQUIRED = ("shape", "boxes", "scores", "sizes", "bits")


def load_instances(path: str | os.PathLike, shape: tuple[int, int]) -> Instances:
    """A tile record written by :func:`encode` + ``np.savez``, checked to be one for a tile of
    ``shape`` ``(H, W)`` before anything proportional to its claims is allocated.

    ``np.savez`` stores members uncompressed, so only stored members are accepted: memory is
    then bounded by the file's size (no member inflates to gigabytes). Each member must be a
    plain numeric ``.npy`` (no pickles) whose declared size matches its bytes; ``shape`` must
    equal the tile's; boxes lie inside the tile; ``sizes`` equal the box areas; ``bits`` holds
    exactly their pixels; scores are finite; ``invalid`` covers the tile. Raises
    :class:`BadEntry` naming the first rule broken.
    """
    try:
        return _load_instances(path, shape)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, KeyError) as exc:
        raise BadEntry(f"not a readable tile record ({type(exc).__name__}: {exc})") from exc


def _load_instances(path: str | os.PathLike, shape: tuple[int, int]) -> Instances:
    """Small members first (shape, boxes, scores, sizes), so that ``bits`` is read only once its
    exact length is known from boxes that were checked to lie inside the tile."""
    _check_zip_directory(path)
    h, w = shape
    with zipfile.ZipFile(path) as zf:
        infos = _members(zf)

        def read(name: str, limit: int, dims: tuple[int, ...] | None = None) -> np.ndarray:
            return _read_member(zf, infos[name], name, limit, dims)

        got = tuple(int(v) for v in read("shape", 2, (2,)))
        if got != (h, w):
            raise BadEntry(f"it holds a {got[0]} x {got[1]} tile, this tile is {h} x {w}")
        boxes = read("boxes", 4 * MAX_INSTANCES)
        boxes = boxes.reshape(0, 4) if boxes.size == 0 else boxes
        n = len(boxes)
        if boxes.shape != (n, 4):
            raise BadEntry(f"boxes have shape {boxes.shape}, expected (N, 4)")
        scores, sizes = read("scores", n, (n,)), read("sizes", n, (n,))
        areas = _check_boxes(boxes.astype(np.int64), sizes, scores, h, w)
        nbits = math.ceil(int(areas.sum()) / 8)
        arrays = {"boxes": boxes.astype(np.int32), "scores": scores.astype(np.float32), "sizes": areas,
                  "bits": read("bits", nbits, (nbits,)), "shape": np.asarray(shape, np.int64)}
        if "invalid" in infos:
            arrays["invalid"] = read("invalid", math.ceil(h * w / 8), (math.ceil(h * w / 8),))
        if "quality" in infos:
            quality = read("quality", n, (n,)).astype(np.float32)
            if not ((quality >= 0) & (quality <= 1) | np.isnan(quality)).all():
                raise BadEntry("a quality is outside [0, 1]")
            arrays["quality"] = quality
    return decode(arrays)


def _check_zip_directory(path: str | os.PathLike) -> None:
    """The zip's end record must list at most the known members in a small central directory,
    so that even opening the file cannot allocate per-entry memory for a crafted directory."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - (1 << 16) - 22))
        tail = f.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        raise BadEntry("not a zip file (no end-of-directory record: truncated or random bytes)")
    entries, cd_size = struct.unpack("<HI", tail[at + 10:at + 16])
    if entries > len(_MEMBERS) or cd_size > 4096:
        raise BadEntry(f"its zip directory lists {entries} members ({cd_size} bytes); a tile record has "
                       f"at most {len(_MEMBERS)}")


def _members(zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    infos: dict[str, zipfile.ZipInfo] = {}
    for info in zf.infolist():
        name = info.filename.removesuffix(".npy")
        if name not in _MEMBERS or name in infos or not info.filename.endswith(".npy"):
            raise BadEntry(f"unexpected member {info.filename!r}")
        if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
            raise BadEntry(f"member {info.filename!r} is compressed; tile records are stored uncompressed")
        infos[name] = info
    missing = [m for m in _REQUIRED if m not in infos]
    if missing:
        raise BadEntry(f"members {missing} are missing")
    return infos


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, max_items: int,
                 dims: tuple[int, ...] | None) -> np.ndarray:
    """One ``.npy`` member of at most ``max_items`` items (``dims``: its exact shape), read only
    after its declared size was checked; never unpickled."""
    kinds, ndim = _MEMBERS[name]
    if info.file_size > _NPY_HEADER + 8 * max_items:
        raise BadEntry(f"{name} declares {info.file_size} bytes, more than a tile record can hold")
    raw = zf.read(info)
    shape, dtype, offset = _npy_header(io.BytesIO(raw), name)
    count = math.prod(shape)
    if dtype.kind not in kinds:
        raise BadEntry(f"{name} has dtype {dtype}, expected {kinds!r} numbers")
    if (len(shape) != ndim and count) or (dims is not None and shape != dims) or count > max_items:
        raise BadEntry(f"{name} has shape {shape}" + (f", expected {dims}" if dims is not None else ""))
    if len(raw) - offset != count * dtype.itemsize:
        raise BadEntry(f"{name} holds {len(raw) - offset} bytes for {count} items of {dtype}")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=offset).reshape(shape)


def _npy_header(fp, name: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, data offset)`` of an ``.npy`` stream; object dtypes (pickles) refused."""
    try:
        version = np.lib.format.read_magic(fp)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = reader(fp, max_header_size=_NPY_HEADER)
    except (ValueError, EOFError, SyntaxError, TypeError) as exc:
        raise BadEntry(f"{name} is not a .npy array ({exc})") from exc
    if dtype.hasobject or dtype.kind not in "iuf" or (fortran and len(shape) > 1):
        raise BadEntry(f"{name} has dtype {dtype}: only plain numbers are read back (no pickles)")
    return tuple(int(s) for s in shape), dtype, fp.tell()


def _check_boxes(boxes: np.ndarray, sizes: np.ndarray, scores: np.ndarray, h: int, w: int) -> np.ndarray:
    """Box areas (int64) after checking boxes lie inside the ``h x w`` tile and match ``sizes``."""
    x0, y0, x1, y1 = boxes.T
    if not ((0 <= x0) & (x0 < x1) & (x1 <= w) & (0 <= y0) & (y0 < y1) & (y1 <= h)).all():
        raise BadEntry(f"a box lies outside the {h} x {w} tile or is empty")
    areas = (x1 - x0) * (y1 - y0)
    if not np.array_equal(areas, sizes.astype(np.int64)):
        raise BadEntry("mask sizes do not match their boxes")
    if not np.isfinite(scores).all():
        raise BadEntry("a score is not finite")
    return areas


def load_embeddings(path: str | os.PathLike) -> np.ndarray:
    """A stored ``(N, D)`` float embedding array, checked (header, size, no pickle) before it
    is read, so a crafted header cannot make ``np.load`` allocate what the file does not hold."""
    try:
        with open(path, "rb") as f:
            shape, dtype, offset = _npy_header(f, "embeddings")
            size = os.fstat(f.fileno()).st_size
    except OSError as exc:
        raise BadEntry(f"cannot be read ({exc.strerror or exc})") from exc
    if dtype.kind != "f" or len(shape) != 2 or shape[0] > MAX_INSTANCES or shape[1] > MAX_EMBED_DIM:
        raise BadEntry(f"embeddings are {dtype} of shape {shape}, expected float (N <= {MAX_INSTANCES}, "
                       f"D <= {MAX_EMBED_DIM})")
    if size - offset != math.prod(shape) * dtype.itemsize:
        raise BadEntry(f"embeddings hold {size - offset} bytes for shape {shape} of {dtype}")
    try:
        emb = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise BadEntry(f"embeddings cannot be read ({exc})") from exc
    if not np.isfinite(emb).all():
        raise BadEntry("embeddings are not all finite")
    return emb


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
            self._write(_atomic_write, meta, json.dumps({"raster": os.fspath(raster), "raster_key": rkey, **run},
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
            return _claimed_shape(path, self._max_side)
        if not 0 <= tile < len(self.grid):
            raise BadEntry(f"tile {tile} is not in this raster's grid of {len(self.grid)} tiles")
        t = self.grid.tiles[tile]
        return t.height, t.width

    def put(self, tile: int, inst: Instances) -> None:
        super().put(tile, inst)
        if self._write(_atomic_savez, self.dir / f"t{tile}.npz" if self.dir else None, encode(inst)):
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
        self._write(_atomic_save, self.dir / f"e{tile}-{key}.npy" if self.dir else None, emb)

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


def _claimed_shape(path: Path, max_side: int) -> tuple[int, int]:
    _check_zip_directory(path)
    try:
        with zipfile.ZipFile(path) as zf:
            infos = _members(zf)
            h, w = (int(v) for v in _read_member(zf, infos["shape"], "shape", 2, (2,)))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise BadEntry(f"not a readable tile record ({type(exc).__name__}: {exc})") from exc
    if not (0 < h <= max_side and 0 < w <= max_side):
        raise BadEntry(f"it claims a {h} x {w} tile; tiles of this run are at most {max_side} px a side")
    return h, w


def _make_dir(path: Path) -> None:
    """Create a cache folder, or raise :class:`OutputError` naming it: a cache that cannot be
    created is the user's to fix, and is found before any model loads or tile is read."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise OutputError(f"{path}: cache folder is a file (or lies under one); choose another --cache "
                          f"folder ({exc.filename})") from exc
    except OSError as exc:
        raise OutputError(f"{path}: cache folder cannot be created ({exc.strerror or exc}); choose another "
                          "--cache folder or fix its permissions") from exc


def _atomic_savez(path: Path, arrays: dict) -> None:
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:6]}.npz")
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _atomic_save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:6]}.npy")
    try:
        np.save(tmp, array, allow_pickle=False)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
