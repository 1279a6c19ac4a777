"""Masks on flat, featureless image areas: the bundled model with and without the featureless
filter (``FastSAMSegmenter(flat_std=...)``, :func:`fastsam_geo.masks.featureless`).

A network trained from scratch on a few drone mosaics draws roof-sized boxes on flat bright
areas: the white fill collar of an orthomosaic exported without nodata, blown-out sand, cloud.
For each scene this measures, through ``segment_raster`` + ``evaluate`` (F1@0.5, edge-cut
references ignored), pooled per group:

- the scene as it is: does the filter cost real buildings? (in-sample: the eight shared OAM
  mosaics; unseen: Banepa, Nepal from ``scripts/fetch_extdata.py``, if present; the bundled sample)
- the scene with a white collar: its left and top quarter set to 255 and faintly noisy (sigma 1.5,
  as JPEG leaves fill), no nodata: objects found in the collar (all false) and F1 on the rest
  (reference buildings under the collar left out).

Printed, measured in this run, for the filter off (``flat_std=0``) and at the default.

    python benchmarks/flat.py [--groups in-sample unseen sample]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely

os.environ.setdefault("YOLO_OFFLINE", "true")

from scenes import groups  # benchmarks/scenes.py, beside this script

from fastsam_geo import evaluate, segment_raster
from fastsam_geo.engine import BUNDLED_PATH, FastSAMSegmenter
from fastsam_geo.masks import FLAT_STD


def with_collar(src: Path, dst: Path, seed: int = 0) -> tuple[Path, shapely.Polygon]:
    """``src`` with its left and top quarter white (255 + faint noise), and the collar's polygon."""
    with rasterio.open(src) as s:
        data, profile, t = s.read(), s.profile, s.transform
    _, h, w = data.shape
    cx, cy = w // 4, h // 4
    noise = np.random.default_rng(seed).normal(0, 1.5, data.shape)
    white = np.clip(255 - np.abs(noise), 0, 255).astype(np.uint8)
    data[:, :, :cx] = white[:, :, :cx]
    data[:, :cy, :] = white[:, :cy, :]
    profile.update(compress="deflate", photometric="rgb")
    profile.pop("jpeg_quality", None)
    with rasterio.open(dst, "w", **profile) as d:
        d.write(data)
    collar = shapely.union(shapely.box(*(t * (0, 0)), *(t * (cx, h))), shapely.box(*(t * (0, 0)), *(t * (w, cy))))
    return dst, shapely.normalize(collar)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--groups", nargs="+", default=["in-sample", "unseen", "sample"])
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    tmp = Path(tempfile.mkdtemp(prefix="fsg-flat-"))
    t0 = time.perf_counter()
    segs = {"off (flat_std=0)": FastSAMSegmenter(BUNDLED_PATH, flat_std=0),
            f"on (flat_std={FLAT_STD:g})": FastSAMSegmenter(BUNDLED_PATH)}
    table: dict[tuple[str, str], str] = {}
    try:
        for group, items in groups().items():
            if group not in args.groups:
                continue
            collared = [(*with_collar(tif, tmp / f"{group}_{i}.tif"), labels) for i, (tif, labels) in enumerate(items)]
            for name, seg in segs.items():
                plain = [0, 0, 0]
                rest = [0, 0, 0]
                in_collar = 0
                for tif, labels in items:
                    r = evaluate(segment_raster(tif, segmenter=seg), labels, iou=0.5, ignore_partial=True)
                    plain = [plain[0] + r.tp, plain[1] + r.fp, plain[2] + r.fn]
                for path, collar, labels in collared:
                    pred = segment_raster(path, segmenter=seg)
                    inside = pred.geometry.representative_point().within(collar)
                    in_collar += int(inside.sum())
                    refs = gpd.read_file(labels).to_crs(pred.crs)
                    refs = refs[~refs.geometry.intersects(collar)]  # buildings under the white are not there
                    r = evaluate(pred[~inside], refs, iou=0.5, ignore_partial=True)
                    rest = [rest[0] + r.tp, rest[1] + r.fp, rest[2] + r.fn]
                f1 = [2 * v[0] / max(1, 2 * v[0] + v[1] + v[2]) for v in (plain, rest)]
                table[(group, name)] = f"{f1[0]:.3f} | {in_collar} | {f1[1]:.3f}"
                print(f"{group:9s} {name:18s} F1 {f1[0]:.3f} (tp {plain[0]} fp {plain[1]} fn {plain[2]}); "
                      f"white collar: {in_collar} objects in it, F1 elsewhere {f1[1]:.3f}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n## Bundled model, featureless filter off / on ({time.perf_counter() - t0:.0f} s)\n")
    print("| scenes | filter | F1@0.5 as they are | objects in a white collar | F1@0.5 outside the collar |")
    print("|---|---|---|---|---|")
    for (group, name), cells in table.items():
        print(f"| {group} | {name} | {cells} |")


if __name__ == "__main__":
    main()
