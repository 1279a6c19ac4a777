"""Resolution-aware inference on real imagery: the bundled model on the shared OAM mosaics at
their native ~0.15 m and resampled to 0.3 m and 0.5 m ground GSD, with ``--gsd auto`` and
``--gsd native``.

For each mosaic (one per area by default, to keep CPU modest) the raster is resampled with GDAL
(``rasterio.warp.reproject``, average resampling, same CRS; the pixel size in CRS units is the
target ground GSD divided by the Mercator scale factor at the mosaic's centre) into a temporary
file, segmented by ``segment_raster`` (real pipeline) and scored by ``evaluate`` against the
mosaic's OpenStreetMap footprints at IoU >= 0.5, edge-cut buildings (``partial=1``) ignored.
Printed, measured in this run: F1 per mosaic and pooled (TP/FP/FN summed) for every
resolution x mode. At native resolution ``auto`` keeps the tiles (the mosaics lie within the
model's training range), so it is run once and reported for both. ``auto-plain`` is ``auto``
without what it does on imagery 2.5x coarser than the model's (sharpened tiles,
:func:`fastsam_geo.gsd.coarse_settings`), to show what that is worth.

    python benchmarks/gsd.py [--mosaics aoi1_zanzibar_tanzania/b ...] [--gsds 0.3 0.5]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.warp import Resampling, reproject

from fastsam_geo import evaluate, segment_raster
from fastsam_geo.gsd import ground_gsd

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FASTSAM_GEO_SHARED", ROOT.parent / "shared")) / "data" / "oam_osm"
DEFAULT = ["aoi1_zanzibar_tanzania/b", "aoi2_kampala_uganda/a", "aoi4_catanduanes_philippines/a",
           "aoi5_nairobi_kenya/b"]


def resample(src_path: Path, gsd: float, out: Path) -> Path:
    """``src_path`` resampled (average) to ``gsd`` ground metres per pixel at its centre, same CRS."""
    with rasterio.open(src_path) as src:
        native = ground_gsd(src.transform, src.crs, src.width, src.height)
        f = gsd / native
        t = src.transform * src.transform.scale(f, f)
        w, h = max(1, round(src.width / f)), max(1, round(src.height / f))
        profile = dict(src.profile, width=w, height=h, transform=t, tiled=True, blockxsize=256, blockysize=256)
        with rasterio.open(out, "w", **profile) as dst:
            for b in range(1, src.count + 1):
                arr = np.zeros((h, w), src.dtypes[b - 1])
                reproject(rasterio.band(src, b), arr, src_transform=src.transform, src_crs=src.crs,
                          dst_transform=t, dst_crs=src.crs, resampling=Resampling.average)
                dst.write(arr, b)
    return out


def f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mosaics", nargs="+", default=DEFAULT, help="AREA/a|b under the shared oam_osm folder")
    ap.add_argument("--gsds", nargs="+", type=float, default=[0.3, 0.5])
    ap.add_argument("--model", default=None,
                    help="checkpoint to measure (default: the bundled model), e.g. a train_buildings.py run")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    tmp = Path(tempfile.mkdtemp(prefix="fsg-gsd-"))
    rows: dict[tuple[str, str], dict[str, tuple[int, int, int]]] = {}
    t0 = time.perf_counter()
    for m in args.mosaics:
        area, side = m.split("/")
        tif = SHARED / area / f"mosaic_z20_{side}.tif"
        labels = SHARED / area / f"mosaic_z20_{side}_labels.geojson"
        if not tif.exists():
            raise SystemExit(f"no mosaic {tif}")
        for gsd in [None, *args.gsds]:
            path = tif if gsd is None else resample(tif, gsd, tmp / f"{area}_{side}_{gsd:g}.tif")
            res = "native" if gsd is None else f"{gsd:g} m"
            for mode in ("auto", "auto-plain", "native"):
                if gsd is None and mode != "auto":
                    rows.setdefault((res, mode), {})[m] = rows[(res, "auto")][m]
                    continue
                plain = dict(sharpen=0.0) if mode == "auto-plain" else {}
                pred = segment_raster(path, segmenter=args.model, gsd=mode.split("-")[0], **plain)
                r = evaluate(pred, labels, iou=0.5, ignore_partial=True)
                rows.setdefault((res, mode), {})[m] = (r.tp, r.fp, r.fn)
                print(f"{m:34s} {res:7s} --gsd {mode:6s} F1 {r.f1:.3f} (tp {r.tp} fp {r.fp} fn {r.fn})",
                      flush=True)
    name = args.model or "bundled model"
    print(f"\n## F1@0.5, {name}, edge-cut references ignored ({time.perf_counter() - t0:.0f} s)\n")
    names = [m.split("_")[0] + "/" + m.split("/")[1] for m in args.mosaics]
    print("| imagery | --gsd | " + " | ".join(names) + " | pooled |")
    print("|---|---|" + "---|" * (len(names) + 1))
    for (res, mode), per in rows.items():
        cells = [f"{f1(*per[m]):.3f}" for m in args.mosaics]
        pooled = f1(*(sum(v[i] for v in per.values()) for i in range(3)))
        print(f"| {res} | {mode} | " + " | ".join(cells) + f" | {pooled:.3f} |")


if __name__ == "__main__":
    main()
