#!/usr/bin/env python3
"""Build the QGIS plugin zip ("Plugins > Install from ZIP"): ``python3 scripts/build_plugin.py [-o DIR]``.

Standard library only, no network. The plugin's version is the package's: read from
``fastsam_geo/__init__.py`` (``__version__``), checked against ``pyproject.toml``, and written into
the zip's ``metadata.txt``. The ``metadata.txt`` in the repository carries the same version (a test
checks), so the plugin loaded straight from ``qgis_plugin/`` reports it too. Files are stored in a
fixed order with a fixed timestamp, so the same sources give the same zip.
"""

from __future__ import annotations

import argparse
import re
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "qgis_plugin" / "fastsam_geo_qgis"
SKIP_DIRS = {"__pycache__", ".pytest_cache"}
SKIP_SUFFIXES = {".pyc", ".pyo", ".orig", ".rej"}
STAMP = (2024, 1, 1, 0, 0, 0)


def package_version() -> str:
    """``__version__`` of fastsam_geo (read, not imported: no dependency needed to build)."""
    text = (ROOT / "fastsam_geo" / "__init__.py").read_text(encoding="utf-8")
    m = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', text, re.M)
    if not m:
        raise SystemExit("error: no __version__ in fastsam_geo/__init__.py")
    version = m.group(1)
    py = re.search(r'^version\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(encoding="utf-8"), re.M)
    if py and py.group(1) != version:
        raise SystemExit(f"error: fastsam_geo/__init__.py says {version}, pyproject.toml says {py.group(1)}")
    return version


def with_version(metadata: str, version: str) -> str:
    out, n = re.subn(r"^version=.*$", f"version={version}", metadata, flags=re.M)
    if n != 1:
        raise SystemExit("error: metadata.txt must have exactly one version= line")
    return out


def plugin_files() -> list[Path]:
    return sorted(p for p in PLUGIN.rglob("*") if p.is_file() and not SKIP_DIRS & set(p.relative_to(PLUGIN).parts)
                  and p.suffix not in SKIP_SUFFIXES)


def build(out_dir: Path) -> Path:
    version = package_version()
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{PLUGIN.name}-{version}.zip"
    tmp = target.with_suffix(".zip.partial")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in plugin_files():
            data = path.read_bytes()
            if path.name == "metadata.txt" and path.parent == PLUGIN:
                data = with_version(data.decode("utf-8"), version).encode("utf-8")
            info = zipfile.ZipInfo(f"{PLUGIN.name}/{path.relative_to(PLUGIN).as_posix()}", STAMP)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
        for extra in ("LICENSE", "LICENSE.txt", "LICENSE.md"):
            if (ROOT / extra).is_file():
                zf.write(ROOT / extra, f"{PLUGIN.name}/LICENSE")
                break
    tmp.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, default=ROOT / "dist", help="output folder (default: dist/)")
    args = parser.parse_args(argv)
    print(build(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
