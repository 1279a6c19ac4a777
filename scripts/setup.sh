#!/usr/bin/env bash
# Create .venv and install fastsam-geo with its test tools (idempotent; ~2 min on a fresh machine).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch/torchvision are capped in pyproject.toml at the builds that ship as local wheels here
.venv/bin/python -m pip install -q -e ".[dev,text]"
