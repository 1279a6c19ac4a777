#!/usr/bin/env bash
# Install, lint, check the layering contract, run the test suite. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export YOLO_OFFLINE=true
.venv/bin/ruff check fastsam_geo tests benchmarks scripts
.venv/bin/lint-imports
.venv/bin/python -m pytest -n 2 -q "$@"
