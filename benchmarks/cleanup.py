"""Footprint clean-up, measured: F1 and mean IoU with and without each step on real imagery.

For every mosaic in ``../shared/data/oam_osm`` (or ``$FASTSAM_GEO_SHARED/data/oam_osm``), the
bundled building model segments it once with the default options (``segment_raster``, real
pipeline; the raw result is kept in ``--raw`` so later runs skip the network), then each
clean-up of :func:`fastsam_geo.cleanup.clean` is applied to that same result and scored with
:func:`fastsam_geo.evaluate` against the mosaic's OpenStreetMap footprints at IoU >= 0.5
(buildings cut by the mosaic edge, ``partial=1``, count neither way). Printed, measured in
this run: TP/FP/FN summed over all mosaics, F1, and mean IoU of the matched pairs, per
configuration, and the change against no clean-up.

    python benchmarks/cleanup.py [--raw /tmp/fsg-cleanup-raw]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np

from fastsam_geo import evaluate, segment_raster
from fastsam_geo.cleanup import clean

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FASTSAM_GEO_SHARED", ROOT.parent / "shared")) / "data" / "oam_osm"
CONFIGS = {
    "none": {},
    "fill holes < 1 m²": dict(fill_holes_below_m2=1.0),
    "fill holes < 5 m²": dict(fill_holes_below_m2=5.0),
    "fill holes < 20 m²": dict(fill_holes_below_m2=20.0),
    "regularize": dict(regularize_=True),
    "simplify 0.1 m": dict(simplify_m=0.1),
    "simplify 0.25 m": dict(simplify_m=0.25),
    "simplify 0.5 m": dict(simplify_m=0.5),
    "min area 2 m²": dict(min_area_m2=2.0),
    "min area 5 m²": dict(min_area_m2=5.0),
    "min area 10 m²": dict(min_area_m2=10.0),
    "min area 15 m²": dict(min_area_m2=15.0),
    "min area 20 m²": dict(min_area_m2=20.0),
    "max area 500 m²": dict(max_area_m2=500.0),
    "max area 1000 m²": dict(max_area_m2=1000.0),
}


def raw_result(tif: Path, folder: Path) -> gpd.GeoDataFrame:
    """The bundled model's result on ``tif`` with default options, segmented once and kept."""
    dst = folder / f"{tif.parent.name}__{tif.stem}.gpkg"
    if not dst.exists():
        folder.mkdir(parents=True, exist_ok=True)
        segment_raster(tif).to_file(dst, driver="GPKG")
    return gpd.read_file(dst)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw", type=Path, default=Path("/tmp/fsg-cleanup-raw"),
                    help="folder keeping each mosaic's raw result (segmented once)")
    ap.add_argument("--only", nargs="*", default=None, help="configurations to run (default: all)")
    args = ap.parse_args()
    mosaics = sorted(SHARED.glob("*/mosaic_z20_*.tif"))
    if not mosaics:
        raise SystemExit(f"no mosaics under {SHARED}")
    warnings.simplefilter("ignore")
    data = [(raw_result(t, args.raw), gpd.read_file(t.with_name(t.stem + "_labels.geojson"))) for t in mosaics]
    configs = {k: v for k, v in CONFIGS.items() if args.only is None or k in args.only or k == "none"}
    rows = {}
    for name, kw in configs.items():
        tp = fp = fn = 0
        ious: list[float] = []
        t0 = time.perf_counter()
        for pred, ref in data:
            geoms, _ = clean(pred.geometry.values, pred.crs, **kw)
            out = gpd.GeoDataFrame(geometry=list(geoms), crs=pred.crs)
            r = evaluate(out, ref, iou=0.5, ignore_partial=True)
            tp, fp, fn = tp + r.tp, fp + r.fp, fn + r.fn
            ious += [v for *_, v in r.pairs]
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
        rows[name] = (tp, fp, fn, f1, float(np.mean(ious)) if ious else 0.0, time.perf_counter() - t0)
    base = rows["none"]
    print(f"{len(mosaics)} mosaics, bundled model, IoU >= 0.5, partial references ignored\n")
    print("| clean-up | TP | FP | FN | F1 | ΔF1 | mean IoU | Δ mean IoU | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, (tp, fp, fn, f1, miou, sec) in rows.items():
        print(f"| {name} | {tp} | {fp} | {fn} | {f1:.3f} | {f1 - base[3]:+.3f} | {miou:.3f} | {miou - base[4]:+.3f} "
              f"| {sec:.1f} |")


if __name__ == "__main__":
    main()
