"""One tile's segmentation as a small file, and the validated reading of such files.

:func:`encode` flattens a tile's :class:`~fastsam_geo.types.Instances` (masks bit-packed) for
``np.savez``; :func:`load_instances` and :func:`load_embeddings` read files back only after
checking they hold what a tile of that shape can hold, with memory bounded by the file's size:
a cache folder is input, and anyone who can write to it can put files there.
"""

from __future__ import annotations

import io
import math
import os
import struct
import zipfile
from pathlib import Path

import numpy as np

from .types import Instances

MAX_INSTANCES = 100_000
"""Most instances a cached tile may hold: the ceiling :class:`~fastsam_geo.options.Options`
accepts for ``max_det``."""
MAX_EMBED_DIM = 8192
_NPY_HEADER = 65536


class BadEntry(Exception):
    """A cache file that does not hold what it must (internal: the store discards it)."""


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



def claimed_shape(path: Path, max_side: int) -> tuple[int, int]:
    """The ``(H, W)`` a tile record claims, read alone (before the whole file), within ``max_side``."""
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

