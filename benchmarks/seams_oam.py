"""Seams and duplicates on real imagery: the bundled model on the shared OpenAerialMap mosaics.

For every mosaic in ``../shared/data/oam_osm`` (or ``$FASTSAM_GEO_SHARED/data/oam_osm``), the
bundled building model segments it (``segment_raster``, real pipeline) and the result is matched
one-to-one at IoU >= 0.5 against the mosaic's OpenStreetMap footprints (buildings cut by the
mosaic edge, ``partial=1``, count neither way). Each reference and each prediction is put in the
*seam band* when its centroid lies within ``--band`` px (64) of a boundary between tile cores
(the middle of every overlap: where tiles' views meet), else in the *interior*. Printed, measured
in this run, for each configuration: F1 overall, in the seam band and in the interior, and the
output pairs overlapping by more than 20 % of the smaller (duplicates).

Configurations differ only after the per-tile cache (duplicate suppression, which whole view
is kept), so the network runs once per tiling. ``--legacy`` runs with only the arguments old
revisions had (to measure a revision before this one: ``PYTHONPATH=<worktree> python ...``).

    python benchmarks/seams_oam.py [--tiles 1024:128 512:64] [--band 64]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely

from fastsam_geo import segment_raster
from fastsam_geo.coords import map_to_pixel
from fastsam_geo.metrics import match
from fastsam_geo.raster import read_info
from fastsam_geo.tiling import plan_tiles

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FASTSAM_GEO_SHARED", ROOT.parent / "shared")) / "data" / "oam_osm"
CONFIGS = {"dedup, keep the view farthest from edges (default)": dict(dedup=True, prefer="edge"),
           "dedup, keep the best-scoring view": dict(dedup=True, prefer="score"),
           "no dedup": dict(dedup=False, prefer="edge")}


def seam_distance(xs: np.ndarray, ys: np.ndarray, grid) -> np.ndarray:
    """Pixels from each point to the nearest boundary between tile cores."""
    bx = sorted({t.core[0] for t in grid if t.core[0] > 0})
    by = sorted({t.core[1] for t in grid if t.core[1] > 0})
    d = np.full(len(xs), np.inf)
    for b in bx:
        d = np.minimum(d, np.abs(xs - b))
    for b in by:
        d = np.minimum(d, np.abs(ys - b))
    return d


def score(pred: gpd.GeoDataFrame, ref: gpd.GeoDataFrame, tif: Path, grid, band: int) -> dict:
    ref = ref.to_crs(pred.crs) if len(pred) else ref
    partial = ref.get("partial", 0)
    partial = np.asarray(partial if not np.isscalar(partial) else np.zeros(len(ref)), float) == 1
    res = match(pred.geometry.values, ref.geometry.values, 0.5)
    info = read_info(tif)

    def where(geoms):
        c = shapely.centroid(np.asarray(geoms, dtype=object))
        col, row = map_to_pixel(shapely.get_x(c), shapely.get_y(c), info.transform)
        return seam_distance(col, row, grid) <= band

    seam_ref, seam_pred = where(ref.geometry.values), where(pred.geometry.values) if len(pred) else np.zeros(0, bool)
    out = {}
    for name, pick_ref, pick_pred in (("all", np.ones(len(ref), bool), np.ones(len(pred), bool)),
                                      ("seam", seam_ref, seam_pred), ("interior", ~seam_ref, ~seam_pred)):
        matched_p = {p: g for p, g, _ in res.pairs}
        matched_g = {g for _, g, _ in res.pairs}
        tp = sum(1 for p, g, _ in res.pairs if pick_ref[g] and not partial[g])
        fp = sum(1 for p in range(len(pred)) if pick_pred[p] and p not in matched_p)
        fn = sum(1 for g in range(len(ref)) if pick_ref[g] and not partial[g] and g not in matched_g)
        out[name] = (tp, fp, fn)
    return out


def duplicates(gdf: gpd.GeoDataFrame) -> int:
    geoms = list(gdf.geometry)
    if not geoms:
        return 0
    tree = shapely.STRtree(geoms)
    return sum(1 for i, g in enumerate(geoms) for j in tree.query(g)
               if j > i and g.intersection(geoms[j]).area > 0.2 * min(g.area, geoms[j].area))


def f1(tp, fp, fn) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiles", nargs="+", default=["1024:128", "512:64"], help="TILE:OVERLAP tilings")
    ap.add_argument("--band", type=int, default=64)
    ap.add_argument("--legacy", action="store_true", help="only arguments old revisions had (one config)")
    ap.add_argument("--cache", default=None, help="per-tile cache folder (default: a temporary one)")
    args = ap.parse_args()
    mosaics = sorted(SHARED.glob("*/mosaic_z20_*.tif"))
    if not mosaics:
        raise SystemExit(f"no mosaics under {SHARED}")
    cache = args.cache or tempfile.mkdtemp(prefix="fsg-seams-")
    configs = {"legacy": {}} if args.legacy else CONFIGS
    warnings.simplefilter("ignore")
    for tiling in args.tiles:
        tile, overlap = (int(v) for v in tiling.split(":"))
        # the network at native resolution (the bundled model's 1024-px input shrinks a 512-px tile
        # to half its resolution): old revisions took imgsz only on the segmenter itself
        if tile == 1024:
            imgsz = {}
        elif args.legacy:
            from fastsam_geo import load_segmenter

            imgsz = {"segmenter": load_segmenter(None, imgsz=tile)}
        else:
            imgsz = {"imgsz": tile}
        print(f"\n## tiles {tile} px, overlap {overlap}, seam band ±{args.band} px")
        totals = {c: {"all": [0, 0, 0], "seam": [0, 0, 0], "interior": [0, 0, 0], "dup": 0} for c in configs}
        rows = []
        for tif in mosaics:
            ref = gpd.read_file(tif.with_name(tif.stem + "_labels.geojson"))
            info = read_info(tif)
            grid = plan_tiles(info.width, info.height, tile, overlap)
            for c, kw in configs.items():
                gdf = segment_raster(tif, tile_size=tile, overlap=overlap, cache=cache, **imgsz, **kw)
                s = score(gdf, ref, tif, grid, args.band)
                d = duplicates(gdf)
                for k in ("all", "seam", "interior"):
                    totals[c][k] = [a + b for a, b in zip(totals[c][k], s[k])]
                totals[c]["dup"] += d
                rows.append((f"{tif.parent.name}/{tif.stem}", c, s, d))
        print("| mosaic | config | F1 all | F1 seam band (TP/FP/FN) | F1 interior | duplicates |")
        print("|---|---|---|---|---|---|")
        for m, c, s, d in rows:
            print(f"| {m} | {c} | {f1(*s['all']):.3f} | {f1(*s['seam']):.3f} ({'/'.join(map(str, s['seam']))}) | "
                  f"{f1(*s['interior']):.3f} | {d} |")
        print("\n| config | F1 all | F1 seam band | F1 interior | seam - interior | duplicate pairs |")
        print("|---|---|---|---|---|---|")
        for c, t in totals.items():
            fs, fi = f1(*t["seam"]), f1(*t["interior"])
            print(f"| {c} | {f1(*t['all']):.3f} | {fs:.3f} ({'/'.join(map(str, t['seam']))}) | {fi:.3f} | "
                  f"{fs - fi:+.3f} | {t['dup']} |")


if __name__ == "__main__":
    main()
