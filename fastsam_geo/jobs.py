"""Resumable jobs: the per-tile :class:`~fastsam_geo.cache.DiskStore` made durable, plus the
job's parameters.

A job folder holds ``job.json`` (the raster's content key and every option that changes the
result) and the cache's own layout, ``<raster key>/<run key>/t<N>.npz``: one record per finished
tile, written to a temporary name, flushed to disk (``fsync``), renamed over its final name and
the folder entry flushed too, so a record either exists whole or not at all, whenever the
process dies (SIGKILL, power loss). Rerunning the same command finds the records, validates each
one as the cache does (:func:`~fastsam_geo.cache.load_instances`; a damaged one is removed and
its tile segmented again), and segments only the tiles without one. The pipeline feeds the seam
merger in tile order whether a tile came from the store or the model, so the output of a
resumed run is the uninterrupted run's, object for object and in the same order.

A job started with other options or on a raster whose content changed is refused with the
differences named, unless ``restart`` discards it. Options that do not change the result
(device, batch size, threads, the Dask cluster) may change between runs: a job can resume on
another machine.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import uuid
from pathlib import Path

import numpy as np

from .cache import MEMO_FILE, DiskStore, UnkeyableRaster, _make_dir, encode, raster_key
from .errors import InputError, OutputError
from .tiling import TileGrid
from .types import Instances

JOB_FILE = "job.json"
RUN_FILE = "run.json"  # the store's stub in each raster/run folder (fastsam_geo.cache.DiskStore)
_RESUMABLE_WITH = frozenset({"skip_failed_tiles"})
"""Options a job resumes with whatever their value: they change no recorded tile (a failed
tile is never recorded), so a run stopped by a bad tile can go on with --skip-failed-tiles."""
JOB_VERSION = 1
_KEY_DIR = re.compile(r"[0-9a-f]{16}")
_TEMP = re.compile(r"\.t\d+\.[0-9a-f]{6}\.npz")


class JobStore(DiskStore):
    """A :class:`~fastsam_geo.cache.DiskStore` under a job folder whose records are durable.

    ``run``: what keys the tile records (the cache's run dict: options that change a tile's
    masks, the model's key, bands, stretch); ``params``: the options applied after the store
    (merging, simplification), checked too. Raises :class:`~fastsam_geo.errors.InputError` when
    the folder holds another job (or other files) and ``restart`` is False, when the raster
    cannot be keyed (a remote file without ETag or Last-Modified: a resume could mix two
    versions of it), and :class:`~fastsam_geo.errors.OutputError` when the folder cannot be
    written. Unlike the cache, a record that cannot be written stops the run: a job that
    silently stopped recording could not be resumed.
    """

    def __init__(self, job_dir: str | os.PathLike, raster: str | os.PathLike, run: dict, params: dict, *,
                 grid: TileGrid, restart: bool = False):
        root = Path(job_dir).expanduser()
        _make_dir(root, "--job-dir")
        try:
            rkey = raster_key(raster, memo=root / MEMO_FILE)
        except UnkeyableRaster as exc:
            raise InputError(f"{os.fspath(raster)}: cannot run as a resumable job: {exc}") from exc
        record = json.loads(json.dumps({"version": JOB_VERSION, "raster": os.fspath(raster), "raster_key": rkey,
                                        "run": run, "params": params}, default=str))
        if restart:
            try:
                discard_job(root)  # ours only: a folder of other files is still refused below
            except OSError as exc:
                raise OutputError(f"{root}: --restart cannot remove the job's files ({exc.strerror or exc}: "
                                  f"{exc.filename}); fix the folder's permissions or give a new --job-dir") from exc
        check_job(root, record)
        # the record is written with the first tile (before it, so a folder with tiles always says
        # whose they are): a run that fails before any tile (a mistyped factory, a bbox off the
        # raster) leaves no job that would refuse the corrected command
        self._record = None if (root / JOB_FILE).exists() else json.dumps(record, indent=2).encode()
        super().__init__(root, raster, run, grid=grid)
        for p in self.dir.iterdir():  # records cut short by a kill: never renamed, never read
            if _TEMP.fullmatch(p.name):
                with contextlib.suppress(OSError):
                    p.unlink()
        self.job_dir = root

    def put(self, tile: int, inst: Instances) -> None:
        super(DiskStore, self).put(tile, inst)  # the memory LRU; the disk write is ours
        path = self.dir / f"t{tile}.npz"
        try:
            with self._lock:
                if self._record is not None:
                    _durable_write(self.job_dir / JOB_FILE, self._record)
                    self._record = None
            _durable_savez(path, encode(inst))
        except OSError as exc:
            raise OutputError(f"{self.dir}: cannot record tile {tile} ({exc.strerror or exc}); the job stopped "
                              "here, rerun the same command to resume once the folder can be written (space, "
                              "permissions)") from exc
        with self._lock:
            self._on_disk.add(tile)


def check_job(root: Path, record: dict) -> None:
    """Refuse a job folder holding another job (other options, another raster's content) or
    files that are not a job's; an empty or new folder starts a job."""
    path = root / JOB_FILE
    if not path.exists():  # new, or a job that failed before its first tile: only our own stubs
        others = [p.relative_to(root).as_posix() for p in sorted(root.rglob("*")) if not p.is_dir()
                  and p.name != MEMO_FILE and not (p.name == RUN_FILE and len(p.relative_to(root).parts) == 3)]
        if others:
            raise InputError(f"{root}: not a fastsam-geo job folder (it holds {others[0]!r}); give a new or "
                             "empty folder to --job-dir")
        return
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} cannot be read ({exc}); add --restart to discard this job") from exc
    if not isinstance(old, dict) or old.get("version") != JOB_VERSION:
        raise InputError(f"{path} is not a job this version of fastsam-geo wrote; add --restart to discard it")
    diffs = describe_changes(old, record)
    if diffs:
        raise InputError(f"{root}: this job was started with {'; '.join(diffs)}; rerun it unchanged to resume, "
                         "or add --restart to discard its finished tiles")


def describe_changes(old: dict, new: dict) -> list[str]:
    """What differs between two job records, as ``"tile_size 512 (now 256)"`` phrases."""
    out = []
    if old.get("raster_key") != new["raster_key"]:
        what = "another raster" if old.get("raster") != new["raster"] else "this raster's previous content"
        out.append(f"{what} ({old.get('raster')}, content key {old.get('raster_key')}; now "
                   f"{new['raster_key']})")
    for group in ("run", "params"):
        a, b = old.get(group) or {}, new[group]
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k) and k not in _RESUMABLE_WITH:
                out.append(f"{k} {a.get(k)!r} (now {b.get(k)!r})")
    return out


def discard_job(root: Path) -> None:
    """Remove what a job wrote under ``root`` (its record and tile folders); nothing else."""
    for p in root.iterdir():
        if p.name in (JOB_FILE, MEMO_FILE):
            p.unlink()
        elif p.is_dir() and _KEY_DIR.fullmatch(p.name) and all(
                (sub / "run.json").is_file() for sub in p.iterdir() if sub.is_dir()):
            shutil.rmtree(p)


def finished_tiles(job_dir: str | os.PathLike) -> int:
    """How many tile records a job folder holds (for progress messages and tests)."""
    return sum(1 for _ in Path(job_dir).glob("*/*/t*.npz"))


def _durable_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` to a temporary name, fsync, rename, fsync the folder: after a crash the
    record is either whole under its name or absent."""
    buf = io.BytesIO()  # a tile record is small (bit-packed masks); one durable write path for all files
    np.savez(buf, **arrays)
    _durable_write(path, buf.getvalue())


def _durable_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:6]}{path.suffix}")  # records: .tN.xxxxxx.npz (_TEMP)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform opens folders (Windows)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
