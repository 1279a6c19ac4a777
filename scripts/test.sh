#!/usr/bin/env bash
# Install, lint, check the layering contract, run the test suite, then the QGIS plugin's tests in real
# headless QGIS (scripts/test_qgis.sh installs Debian's QGIS when it is missing; FASTSAM_GEO_SKIP_QGIS=1
# skips that part on machines without apt). CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export YOLO_OFFLINE=true FASTSAM_GEO_HYPOTHESIS="${FASTSAM_GEO_HYPOTHESIS:-ci}"
.venv/bin/ruff check fastsam_geo tests benchmarks scripts qgis_plugin
.venv/bin/lint-imports
.venv/bin/python -m pytest -n 2 -q "$@"
if [ "${FASTSAM_GEO_SKIP_QGIS:-0}" = 1 ]; then
    echo "test: QGIS plugin tests skipped (FASTSAM_GEO_SKIP_QGIS=1)"
else
    bash scripts/test_qgis.sh -q
fi
