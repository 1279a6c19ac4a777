"""Files written atomically and never lost: temporary names, commit, GeoPackage copies, leftovers.

What :mod:`fastsam_geo.io` writes goes to a temporary file beside the destination and is
renamed over it only when complete. Temporary names are ours alone,
``.fastsam-geo-<scope>-<pid>-<uuid>.partial<ext>``: safe characters only, created exclusively
(never an existing file), removed on any failure, never built from the destination's name
(pyogrio runs paths through ``urllib.parse.urlparse``, which cuts a last segment at ``;``).
Those a killed run (SIGKILL, power loss) left are removed by the next write into the folder
once their process is gone, and named in a :class:`~fastsam_geo.errors.LeftoverFilesWarning`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import socket
import sqlite3
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import LeftoverFilesWarning, OutputError

EXTENSIONS = (".gpkg", ".parquet", ".geoparquet", ".geojson", ".json", ".fgb", ".tif", ".tiff")  # (edge maps: .tif)
_EXTS = "|".join(re.escape(e) for e in EXTENSIONS)
TEMP_NAME = re.compile(rf"^\.fastsam-geo-(?P<scope>[0-9a-f]{{8}})-(?P<pid>[1-9][0-9]{{0,9}})-[0-9a-f]{{32}}"
                       rf"\.partial(?:{_EXTS})(?:-journal|-wal|-shm)?$")
"""Our temporary files (and SQLite's sidecars of them): the only files ever removed here."""
LEGACY_TEMP_NAME = re.compile(rf"^\..+\.[0-9a-f]{{8}}\.partial(?:{_EXTS})$")
"""Temporary names of earlier versions (``.NAME.ID.partial.EXT``): named in a warning, never removed
(they carry no process id, so a run of an old version could still be writing one)."""
_SIDECARS = ("-journal", "-wal", "-shm")



def temp_name(path: str | os.PathLike) -> str:
    """A fresh temporary name for ``path``'s folder: safe characters only, this machine's and
    process's tags (so a later run can tell a killed run's file from one still being written)."""
    return f".fastsam-geo-{_scope()}-{os.getpid()}-{uuid.uuid4().hex}.partial{Path(path).suffix.lower()}"


def reserve(path: Path) -> Path:
    """Create an empty temporary file beside ``path``, exclusively: it never is an existing file."""
    for _ in range(100):
        tmp = path.parent / temp_name(path)
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputError(f"{path}: cannot create a file in {path.parent} ({exc.strerror})") from exc
        return tmp
    raise OutputError(f"{path}: no free temporary name in {path.parent}; remove its .fastsam-geo-* files")


def discard(tmp: Path) -> None:
    """Remove a temporary file and any SQLite sidecar of it."""
    for p in (tmp, *(Path(f"{tmp}{s}") for s in _SIDECARS)):
        with contextlib.suppress(OSError):
            p.unlink()


def commit(tmp: Path, path: Path) -> None:
    """Rename the finished ``tmp`` over ``path``, durably: the data reach the disk before the
    name does, so a crash right after leaves the old file or the new one, never an empty one."""
    if tmp.stat().st_size == 0:  # the writer wrote somewhere else: never rename nothing over a result
        raise OutputError(f"{path}: the writer produced an empty file; nothing was replaced")
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # not every platform/file system can sync a folder
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def check_geopackage(path: Path) -> None:
    """An existing ``.gpkg`` must be a SQLite file nobody has open for writing: its other
    layers are kept, so it is copied, and a stale ``-wal`` would be replayed onto the copy."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb") as f:
        if f.read(16) != b"SQLite format 3\x00":
            raise OutputError(f"{path}: exists and is not a GeoPackage; delete it or write to another file")
    wal = Path(f"{path}-wal")
    if wal.exists():
        raise OutputError(f"{path}: is open in another program ({wal.name} exists); close it there and "
                          "run again")


def copy_geopackage(src: Path, dst: Path) -> None:
    """Copy a GeoPackage (a consistent snapshot, committed WAL content included) onto ``dst``."""
    try:
        with contextlib.closing(sqlite3.connect(src, timeout=10)) as a, \
                contextlib.closing(sqlite3.connect(dst)) as b:
            a.backup(b)
    except sqlite3.Error as exc:
        raise OutputError(f"{src}: cannot copy this GeoPackage to add the layer ({exc}); close it in "
                          "other programs or write to another file") from exc
    check_geopackage(src)  # our read finished its WAL unless someone else still has it open


@contextlib.contextmanager
def gdal_path(path: Path) -> Iterator[str]:
    """A name under which GDAL (through pyogrio) opens exactly ``path``.

    pyogrio reads ``!`` as an archive separator, ``scheme:`` prefixes as URLs, ``//host`` as a
    host and a last segment's ``;`` as URL params. Such a folder is reached through a symlink
    in a private temporary folder; such a file name (only a file we read: our temporary names
    are safe) through a symlink to the file.
    """
    target = str(path.absolute())
    if _verbatim(target):
        yield target
        return
    with tempfile.TemporaryDirectory(prefix="fastsam-geo-") as d:
        if _verbatim(str(Path(d) / path.name)):  # the folder's name is the trouble
            (Path(d) / "d").symlink_to(path.absolute().parent, target_is_directory=True)
            target = str(Path(d) / "d" / path.name)
        else:
            target = str(Path(d) / f"file{re.sub(r'[^A-Za-z0-9.]', '', path.suffix)}")
            Path(target).symlink_to(path.absolute())
        if not _verbatim(target):
            raise OutputError(f"{path}: GDAL cannot open this path; move or rename it (temporary folder {d})")
        yield target


def _verbatim(name: str) -> bool:
    """Whether pyogrio hands the absolute path ``name`` to GDAL unchanged, as a plain file."""
    if name.startswith(("//", "/vsi")):  # a POSIX "//host" path; GDAL's virtual file systems
        return False
    try:
        from pyogrio.util import vsi_path
    except ImportError:  # pyogrio moved it: accept only names it cannot misread
        return re.fullmatch(r"[\w./ -]+", name) is not None
    return vsi_path(name) == name


# -- leftovers of killed runs --------------------------------------------------------------------

def remove_leftovers(folder: str | os.PathLike) -> list[str]:
    """Remove our temporary files in ``folder`` whose run is over (written on this machine by
    a process that no longer exists: SIGKILL, out of memory, power loss); return their names.

    Only names matching :data:`TEMP_NAME` exactly are touched. Those of another machine or
    container (a shared folder; its processes cannot be checked from here) and of earlier
    versions are left, and named in the same :class:`LeftoverFilesWarning`.
    """
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    removed, kept = [], []
    for name in names:
        m = TEMP_NAME.match(name)
        if m and m["scope"] == _scope() and not _alive(int(m["pid"])):
            with contextlib.suppress(FileNotFoundError):  # a concurrent run removed it first
                os.unlink(os.path.join(folder, name))
            removed.append(name)
        elif (m and m["scope"] != _scope()) or LEGACY_TEMP_NAME.match(name):
            kept.append(name)
    _warn_leftovers(folder, removed, kept)
    return removed


def _warn_leftovers(folder, removed: list[str], kept: list[str]) -> None:
    parts = []
    if removed:
        parts.append(f"removed {len(removed)} temporary file(s) a killed run left: {', '.join(removed)}")
    if kept:
        parts.append(f"temporary file(s) of another machine or an older version, delete them if no run is "
                     f"writing there: {', '.join(kept)}")
    if parts:
        warnings.warn(f"{folder}: {'; '.join(parts)}", LeftoverFilesWarning, stacklevel=3)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists here (when in doubt: yes, so its file is kept)."""
    if pid == os.getpid():
        return True
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


@functools.lru_cache(maxsize=1)
def _scope() -> str:
    """Tags the machine, boot and PID namespace whose process ids a temporary name carries:
    a process id is only checkable where it was issued (not on another host sharing the
    folder, another container, or after a reboot)."""
    parts = [socket.gethostname()]
    for probe in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        with contextlib.suppress(OSError):
            parts.append(os.readlink(probe) if probe.endswith("/pid") else Path(probe).read_text().strip())
    return hashlib.sha1("\0".join(parts).encode()).hexdigest()[:8]


def replace_file(path: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` to a hidden name beside ``path`` (same suffix, so numpy adds none), then
    rename it over ``path``: readers see the old file or the new one, never half of one. For
    small files the caches keep (no fsync; a lost cache entry is only segmented again)."""
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:6]}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
