"""FastSAM Geo for QGIS: ``classFactory`` and the dependency check.

QGIS's own Python does not come with fastsam-geo, torch or rasterio. Before the plugin proper is
imported, :func:`check_dependencies` looks for them in QGIS's Python, then in a virtual
environment made with ``--system-site-packages`` (``$FASTSAM_GEO_VENV``, the ``fastsam_geo/venv``
setting, or the default folder :func:`default_venv`), whose site-packages then go first on
``sys.path`` as they would in that venv. What is missing is reported with the exact pip command
for this QGIS's Python, and the plugin loads as a stub that shows it instead of failing.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import site
import sys
import sysconfig
from pathlib import Path

REQUIRED = ("fastsam_geo", "numpy", "rasterio", "geopandas", "shapely", "pyproj", "pyogrio", "pyarrow", "cv2")
VENV_ENV = "FASTSAM_GEO_VENV"
VENV_SETTING = "fastsam_geo/venv"


def qgis_python() -> str:
    """The Python interpreter of this QGIS. Inside QGIS ``sys.executable`` is the QGIS binary, or
    whatever ``python3`` comes first on PATH: trust it only when it lies in the running prefix."""
    exe = Path(sys.executable)
    prefix = Path(sys.prefix)
    if exe.name.lower().startswith("python") and exe.parent in (prefix, prefix / "bin", prefix / "Scripts"):
        return str(exe)
    v = sys.version_info
    for base in (Path(sys.exec_prefix), exe.parent):
        for cand in (base / "bin" / f"python{v.major}.{v.minor}", base / "bin" / "python3",
                     base / "python.exe", base / "python3.exe"):
            if cand.is_file():
                return str(cand)
    return "python3"


def default_venv() -> Path:
    """Where the README's command creates the venv for an externally managed (Linux distribution) Python."""
    if os.name == "nt":
        return Path(os.environ.get("APPDATA", Path.home())) / "fastsam-geo" / "qgis-venv"
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "fastsam-geo" / "qgis-venv"


def _quote(path: object) -> str:
    s = str(path)
    return f'"{s}"' if " " in s or os.name == "nt" else s


def pip_command(extra: str = "") -> str:
    """The exact command that installs fastsam-geo (with ``extra``, e.g. ``"text"``) for this QGIS."""
    py = qgis_python()
    pkg = f'"fastsam-geo[{extra}]"' if extra else "fastsam-geo"
    numpy = importlib.util.find_spec("numpy")
    pin = ""
    if numpy is not None:  # QGIS's compiled modules (GDAL, scipy) are built against this numpy major
        import numpy as np

        # keep the numpy QGIS's compiled modules (GDAL, scipy) are built against; pyarrow 26 needs
        # numpy 2 without saying so in its metadata, so pip cannot work that one out
        pin = f' "numpy=={np.__version__}"' + (' "pyarrow<26"' if np.__version__.startswith("1.") else "")
    if Path(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED").exists():
        venv = default_venv()
        vpy = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
        return (f"{_quote(py)} -m venv --system-site-packages {_quote(venv)} && "
                f"{_quote(vpy)} -m pip install {pkg}{pin}")
    return f"{_quote(py)} -m pip install --user {pkg}{pin}"


def _site_packages(venv: Path) -> Path | None:
    v = sys.version_info
    for sp in (venv / "lib" / f"python{v.major}.{v.minor}" / "site-packages", venv / "Lib" / "site-packages"):
        if sp.is_dir():
            return sp
    return None


def _venv_candidates() -> list[Path]:
    out = [os.environ.get(VENV_ENV, "")]
    try:
        from qgis.core import QgsSettings

        out.append(str(QgsSettings().value(VENV_SETTING, "") or ""))
    except Exception:
        pass
    out.append(str(default_venv()))
    return [Path(p).expanduser() for p in out if p]


def _use_venv(venv: Path) -> str | None:
    """Put ``venv``'s site-packages first on ``sys.path``; a reason when it cannot be used."""
    sp = _site_packages(venv)
    if sp is None:
        v = sys.version_info
        return f"{venv} has no site-packages for Python {v.major}.{v.minor} (QGIS's Python)"
    if str(sp) in sys.path:
        return None
    before = list(sys.path)
    site.addsitedir(str(sp))  # also runs its .pth files (editable installs)
    added = [p for p in sys.path if p not in before]
    sys.path[:] = added + before
    importlib.invalidate_caches()
    return None


def _load_own_geo_libraries() -> None:
    """Import the wheels that carry their own GEOS, PROJ and GDAL with ``RTLD_DEEPBIND`` (Linux).

    The QGIS executable links the system's GEOS, PROJ and GDAL, so their symbols are global: a
    pip wheel's shapely (or pyproj, rasterio, pyogrio) would call QGIS's GEOS through its own
    library's name, and crash or fail ("WKB output dimension must be 2 or 3", double free in
    ``qgis_process``). Deep binding makes each wheel use the library it ships. Modules already
    imported (e.g. distribution packages built against QGIS's libraries) are left as they are.
    """
    if not hasattr(os, "RTLD_DEEPBIND"):
        return  # Windows and macOS resolve symbols per library: no clash
    flags = sys.getdlopenflags()
    sys.setdlopenflags(flags | os.RTLD_DEEPBIND)
    try:
        for name in ("shapely", "pyproj", "rasterio", "pyogrio"):
            if name not in sys.modules:
                with contextlib.suppress(Exception):  # reported by _missing()
                    importlib.import_module(name)
    finally:
        sys.setdlopenflags(flags)


def _missing() -> list[str]:
    _load_own_geo_libraries()
    missing = []
    for name in REQUIRED:
        try:
            importlib.import_module(name)
        except Exception as exc:  # ImportError, or a binary module built for another numpy
            missing.append(f"{name} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
    return missing


def check_dependencies() -> str | None:
    """``None`` when fastsam-geo and its dependencies import, else a message naming what is
    missing and the pip command that installs it for this QGIS's Python."""
    notes = []
    if importlib.util.find_spec("fastsam_geo") is None:  # before importing anything: one numpy only
        for venv in _venv_candidates():
            if venv.exists():
                reason = _use_venv(venv)
                if reason is None and importlib.util.find_spec("fastsam_geo") is not None:
                    break
                notes.append(reason or f"{venv} has no fastsam-geo")
    missing = _missing()
    if not missing:
        return None
    msg = (f"fastsam-geo is missing from QGIS's Python; install it with  {pip_command()}  and restart QGIS\n"
           f"QGIS's Python: {qgis_python()}\nmissing: {'; '.join(missing)}\nA venv created with "
           f"--system-site-packages is found through ${VENV_ENV} or the setting {VENV_SETTING}.")
    return msg + ("\n" + "\n".join(notes) if notes else "")


def torch_hint() -> str | None:
    """A warning when torch is absent (models cannot run; cached results and custom segmenters still work)."""
    if importlib.util.find_spec("torch") is not None:
        return None
    return f"torch is missing from QGIS's Python, so no model can run; install it with  {pip_command()}"


class MissingDependencies:
    """What QGIS loads when fastsam-geo cannot be imported: it says what to install, and does nothing else."""

    def __init__(self, iface, message: str):
        self.iface, self.message = iface, message

    def initProcessing(self):
        from qgis.core import Qgis, QgsMessageLog

        QgsMessageLog.logMessage(self.message, "FastSAM Geo", Qgis.Critical)

    def initGui(self):
        from qgis.core import Qgis

        self.initProcessing()
        if self.iface is not None:
            first = self.message.split("\n")[0]
            self.iface.messageBar().pushMessage("FastSAM Geo", first, self.message, level=Qgis.Critical, duration=0)

    def unload(self):
        pass


def classFactory(iface):
    """QGIS's entry point: the plugin, or a stub explaining what to install."""
    message = check_dependencies()
    if message is not None:
        return MissingDependencies(iface, message)
    from .plugin import FastSAMGeoPlugin

    return FastSAMGeoPlugin(iface)
