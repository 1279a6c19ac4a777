"""The labelled scenes the input benchmarks (``levels.py``, ``flat.py``) run on, by group:

- ``in-sample``: the eight shared OAM mosaics (``$FASTSAM_GEO_SHARED`` or ``../shared``), which the
  bundled model trained on;
- ``unseen``: Banepa, Nepal (``extdata/hot_aoi3_kathmandu`` from ``scripts/fetch_extdata.py``), if present;
- ``sample``: the bundled sample.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastsam_geo.samples import SAMPLE_IMAGE, SAMPLE_LABELS

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FASTSAM_GEO_SHARED", ROOT.parent / "shared")) / "data" / "oam_osm"
UNSEEN = ROOT / "extdata" / "hot_aoi3_kathmandu"


def groups() -> dict[str, list[tuple[Path, Path]]]:
    """``{group: [(raster, labels), ...]}``, groups without data left out."""
    areas = sorted(p for p in SHARED.iterdir() if p.is_dir()) if SHARED.is_dir() else []
    out = {"in-sample": [(a / f"mosaic_z20_{s}.tif", a / f"mosaic_z20_{s}_labels.geojson")
                         for a in areas for s in "ab"],
           "unseen": [(UNSEEN / f"mosaic_z20_{s}.tif", UNSEEN / f"mosaic_z20_{s}_labels.geojson") for s in "ab"
                      if (UNSEEN / f"mosaic_z20_{s}.tif").exists()],
           "sample": [(Path(SAMPLE_IMAGE), Path(SAMPLE_LABELS))]}
    return {k: v for k, v in out.items() if v}
