"""Loading: through QGIS's own plugin loader (classFactory, initGui, unload) with no errors; a stub
with the exact pip command when fastsam-geo is missing; metadata, version, zip and layering rules."""

from __future__ import annotations

import ast
import configparser
import importlib.util
import re
import subprocess
import sys
import zipfile

from qgis.core import Qgis, QgsApplication
from qgis.PyQt.QtWidgets import QDockWidget, QToolBar
from qgis_fixtures import ROOT, set_settings

import fastsam_geo

PKG = "fastsam_geo_qgis"
PLUGIN_DIR = ROOT / "qgis_plugin" / PKG
ALGORITHMS = {"segment_raster", "segment_prompts", "evaluate"}


def test_loads_and_unloads_through_qgis_plugin_loader(qgis_iface, canvas, qgis_processing):
    import qgis.utils

    set_settings()
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if k == PKG or k.startswith(PKG + ".")}
    qgis.utils.plugin_paths.insert(0, str(PLUGIN_DIR.parent))
    log: list[str] = []

    def record(message, tag, level):
        if level >= Qgis.Warning:
            log.append(f"{tag}: {message}")

    QgsApplication.messageLog().messageReceived.connect(record)
    window, registry = qgis_iface.mainWindow(), QgsApplication.processingRegistry()
    try:
        qgis.utils.updateAvailablePlugins()
        assert PKG in qgis.utils.available_plugins
        assert qgis.utils.pluginMetadata(PKG, "version") == fastsam_geo.__version__
        assert qgis.utils.loadPlugin(PKG)
        assert qgis.utils.startPlugin(PKG), log
        plugin = qgis.utils.plugins[PKG]
        assert type(plugin).__name__ == "FastSAMGeoPlugin"
        assert {a.name() for a in registry.providerById("fastsam_geo").algorithms()} == ALGORITHMS
        toolbar = window.findChild(QToolBar, "FastSAMGeoToolbar")
        assert toolbar is not None and len(toolbar.actions()) == 7
        assert window.findChild(QDockWidget, "FastSAMGeoDock") is not None
        plugin.actions["points"].trigger()
        assert canvas.mapTool() is plugin.point_tool

        assert qgis.utils.unloadPlugin(PKG), log
        QgsApplication.processEvents()
        from qgis.PyQt.QtCore import QCoreApplication, QEvent

        QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)
        assert registry.providerById("fastsam_geo") is None
        assert window.findChild(QToolBar, "FastSAMGeoToolbar") is None
        assert window.findChild(QDockWidget, "FastSAMGeoDock") is None
        assert canvas.mapTool() is None
        assert PKG not in sys.modules
        assert not qgis_iface.messageBar().get_messages(Qgis.Critical)
        assert not log, log
    finally:
        QgsApplication.messageLog().messageReceived.disconnect(record)
        qgis.utils.plugin_paths.remove(str(PLUGIN_DIR.parent))
        sys.modules.update(saved)


def test_missing_fastsam_geo_gives_a_stub_with_the_pip_command(qgis_iface, monkeypatch, tmp_path):
    import fastsam_geo_qgis as pkg

    monkeypatch.setitem(sys.modules, "fastsam_geo", None)  # as in a QGIS whose Python lacks it
    monkeypatch.delenv(pkg.VENV_ENV, raising=False)
    monkeypatch.setattr(pkg, "default_venv", lambda: tmp_path / "no-venv")
    qgis_iface.messageBar().clear_messages()
    stub = pkg.classFactory(qgis_iface)
    assert type(stub).__name__ == "MissingDependencies"
    stub.initGui()
    stub.initProcessing()
    stub.unload()
    (msg,) = qgis_iface.messageBar().get_messages(Qgis.Critical)
    command = pkg.pip_command()
    assert command in msg  # in the message's first line, not behind "show more"
    assert "fastsam_geo (ModuleNotFoundError" in stub.message
    assert pkg.qgis_python() in command and "-m pip install" in command and "fastsam-geo" in command
    import numpy

    assert f'"numpy=={numpy.__version__}"' in command  # never replace the numpy QGIS's GDAL was built for
    if (ROOT / "EXTERNALLY-MANAGED").exists() or "--system-site-packages" in command:
        assert "-m venv --system-site-packages" in command
    qgis_iface.messageBar().clear_messages()


def test_qgis_python_is_the_interpreter_of_this_qgis(monkeypatch):
    import fastsam_geo_qgis as pkg

    monkeypatch.setattr(sys, "executable", "/root/.pyenv/shims/python3")  # what qgis_process reports here
    exe = pkg.qgis_python()
    assert exe.startswith(sys.exec_prefix) and "pyenv" not in exe


def test_metadata_is_complete_and_has_the_package_version():
    cp = configparser.ConfigParser()
    cp.read(PLUGIN_DIR / "metadata.txt", encoding="utf-8")
    meta = cp["general"]
    for key in ("name", "qgisMinimumVersion", "description", "about", "version", "author", "email", "tracker",
                "repository", "icon"):
        assert meta.get(key, "").strip(), key
    assert meta["qgisMinimumVersion"] == "3.22"
    assert meta["version"] == fastsam_geo.__version__, "metadata.txt and fastsam_geo/__init__.py disagree"
    assert meta["hasProcessingProvider"] == "yes"
    assert meta["tracker"].startswith("https://") and meta["repository"].startswith("https://")
    assert len(meta["description"]) > 40 and len(meta["about"]) > 200
    assert (PLUGIN_DIR / meta["icon"]).is_file()


def test_build_script_makes_an_installable_zip(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_plugin.py"), "-o", str(tmp_path)],
                         capture_output=True, text=True, check=True).stdout.strip()
    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
        meta = zf.read(f"{PKG}/metadata.txt").decode()
    assert out.endswith(f"{PKG}-{fastsam_geo.__version__}.zip")
    sources = {f"{PKG}/{p.relative_to(PLUGIN_DIR).as_posix()}" for p in PLUGIN_DIR.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    assert sources <= names and not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert all(n.startswith(f"{PKG}/") for n in names)  # one top folder, as "Install from ZIP" expects
    assert re.search(rf"^version={re.escape(fastsam_geo.__version__)}$", meta, re.M)


def test_layering_only_the_adapter_converts_and_nothing_below_imports_qgis():
    for path in (ROOT / "fastsam_geo").rglob("*.py"):
        assert not re.search(r"^\s*(import|from)\s+qgis\b", path.read_text(), re.M), path
    api_types = {"PointPrompt", "BoxPrompt", "TextPrompt", "Options"}
    for path in PLUGIN_DIR.glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and
                    n.module.startswith("fastsam_geo") for a in n.names}
        if path.name != "adapter.py":
            assert not imported & api_types, f"{path.name} builds API values itself: {imported & api_types}"
        assert len(path.read_text().splitlines()) < 300, f"{path.name} is too long"


def test_the_plugin_package_imports_without_qgis_types_leaking():
    spec = importlib.util.find_spec(PKG)
    assert spec is not None and str(PLUGIN_DIR) in spec.origin
