#!/usr/bin/env bash
# Install fastsam-geo, then segment the bundled sample (OpenAerialMap, Zanzibar) with the bundled
# building model, offline, into sample_buildings.gpkg. ~2-3 minutes on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
YOLO_OFFLINE=true .venv/bin/fastsam-geo demo -o "${1:-sample_buildings.gpkg}"
