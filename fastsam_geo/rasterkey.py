"""The content key of a raster: what the on-disk segmentation cache is keyed by.

A SHA-256 over every file GDAL reads for the raster (a VRT's sources too), memoised per
``(inode, size, ctime, mtime)`` in a small JSON file so a file is hashed once per version;
remote files are keyed by their URL and the server's validators (ETag, Last-Modified).
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import hashlib
import json
import os
import re
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

import rasterio

from .atomic import replace_file

KEY_VERSION = "fastsam-geo raster key 2"
HASH_CHUNK = 4 << 20
"""Bytes per read while hashing. Measured on a 1 GiB file (2-core dev machine): SHA-256 at
1.16 GiB/s from the page cache and 0.57 GiB/s cold (caches dropped), the same as SHA-1 (SHA-NI)
and faster than BLAKE2b (0.6 / 0.36 GiB/s); 1-8 MiB chunks measured the same. So keying costs
about a second per GB the first time a file is seen, and nothing after (the memo)."""
MEMO_ENTRIES = 4096
_ARCHIVES = ("/vsizip/", "/vsitar/", "/vsigzip/", "/vsi7z/", "/vsirar/")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class UnkeyableRaster(Exception):
    """Nothing tells whether this raster changed (e.g. a remote file without ETag or
    Last-Modified): an on-disk cache could return stale masks, so it is not used."""


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
                replace_file(self.path, lambda p: p.write_bytes(json.dumps(self.entries).encode()))

