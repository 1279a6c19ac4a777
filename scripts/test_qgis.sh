#!/usr/bin/env bash
# The QGIS plugin's tests in real QGIS (Debian's 3.22), headless: bash scripts/test_qgis.sh [pytest args]
# 1. installs QGIS from Debian when its bindings or qgis_process are missing (~1.5 min, ~1.3 GB);
# 2. creates/updates .venv-qgis: Debian's /usr/bin/python3 with --system-site-packages (the only Python
#    that imports qgis), the project without torch, and Debian's numpy (GDAL and scipy are built for it;
#    QGIS and qgis_process import it, so the venv must not bring another);
# 3. runs tests/qgis with pytest-qgis under QT_QPA_PLATFORM=offscreen, a scratch HOME and a fresh
#    0700 XDG_RUNTIME_DIR, with CI semantics: a missing QGIS fails the run instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-qgis
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

need=()
/usr/bin/python3 -c "import qgis.core" 2>/dev/null || need+=(python3-qgis)
command -v qgis_process.bin >/dev/null 2>&1 || need+=(qgis)
/usr/bin/python3 -c "import ensurepip" 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
    t0=$SECONDS
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        python3-qgis qgis python3-venv >/dev/null
    echo "test_qgis: installed ${need[*]} from Debian in $((SECONDS - t0)) s"
fi

t0=$SECONDS
[ -x "$VENV/bin/python" ] || /usr/bin/python3 -m venv --system-site-packages "$VENV"
numpy=$(/usr/bin/python3 -c "import numpy; print(numpy.__version__)" 2>/dev/null || true)
# the runtime dependencies but torch/torchvision/ultralytics; pins that keep numpy 1.x working:
# pyarrow 26 and opencv 4.12 need numpy 2 (pyarrow without saying so in its metadata)
deps=("numpy${numpy:+==$numpy}" "numpy<2" "attrs>=23.2" pytest pytest-qgis rasterio geopandas shapely pyproj
      pyogrio "pyarrow<26" click tqdm "opencv-python-headless<4.12" affine)
stamp="$(printf '%s\n' "${deps[@]}" | cat - pyproject.toml | sha1sum | cut -c1-16)"
if [ "$(cat "$VENV/.deps-stamp" 2>/dev/null)" != "$stamp" ]; then
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${deps[@]}"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e .
    echo "$stamp" > "$VENV/.deps-stamp"
fi
echo "test_qgis: environment ready in $((SECONDS - t0)) s"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/home" "$scratch/runtime"
chmod 700 "$scratch/runtime"
rm -rf tests/qgis/.qgis-settings  # pytest-qgis's profile (QgsSettings) from a previous run
HOME="$scratch/home" XDG_RUNTIME_DIR="$scratch/runtime" QT_QPA_PLATFORM=offscreen CI="${CI:-1}" \
    "$VENV/bin/python" -m pytest -c tests/qgis/pytest.ini tests/qgis "$@"
