"""Real QGIS, headless: pytest-qgis under QT_QPA_PLATFORM=offscreen (run with scripts/test_qgis.sh).

Where QGIS's bindings cannot be imported (the project's own .venv), only test_environment.py is
collected: it skips, or fails when the CI variable is set (in CI these tests must run). The main
suite deselects it through the ``qgis`` marker.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

try:
    import qgis.core  # noqa: F401

    QGIS_ERROR = None
except Exception as exc:  # ImportError, or a broken install
    QGIS_ERROR = f"{type(exc).__name__}: {exc}"

if QGIS_ERROR is not None:
    collect_ignore = [p.name for p in HERE.glob("*.py") if p.name not in ("conftest.py", "test_environment.py")]
else:
    for path in (str(ROOT / "qgis_plugin"), str(HERE)):
        if path not in sys.path:
            sys.path.insert(0, path)
    from qgis_fixtures import *  # noqa: F403 - the fixtures


def pytest_configure(config):
    """pytest imports every conftest.py as the module ``conftest`` (the last one wins), and the
    suite's tests import helpers with ``from conftest import ...`` from tests/conftest.py: when that
    one is loaded too (the main suite), give the name back to it. Runs when this file is imported."""
    root = ROOT / "tests" / "conftest.py"
    for plugin in config.pluginmanager.get_plugins():
        if getattr(plugin, "__file__", None) and Path(plugin.__file__).resolve() == root:
            sys.modules["conftest"] = plugin
