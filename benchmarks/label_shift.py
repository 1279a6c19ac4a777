"""Are the reference footprints offset from the imagery? For each scene, the bundled model's
predictions (``segment_raster``) are scored against the reference shifted by every (dx, dy) on
a grid of ground metres (F1@0.5, edge-cut buildings ignored); a systematic offset of the labels
shows as a best shift away from (0, 0) with a clear gain in F1.

Shifts are in the raster CRS's units, converted from ground metres by the raster's own scale
(Web Mercator metres are 1/cos(latitude) ground metres). Printed per scene: F1 unshifted, the
best shift and its F1.

    python benchmarks/label_shift.py [--max 6] [--step 0.6] [--groups in-sample unseen sample]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np

os.environ.setdefault("YOLO_OFFLINE", "true")

from scenes import groups  # benchmarks/scenes.py, beside this script

from fastsam_geo import evaluate, raster_info, segment_raster
from fastsam_geo.api import prepare_reference
from fastsam_geo.gsd import ground_gsd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max", type=float, default=6.0, help="largest shift, ground metres")
    ap.add_argument("--step", type=float, default=0.6, help="grid step, ground metres")
    ap.add_argument("--groups", nargs="+", default=["in-sample", "unseen", "sample"])
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    offsets = np.arange(-args.max, args.max + 1e-9, args.step)
    print("| scene | F1@0.5 as labelled | best shift (ground m, east / north) | F1@0.5 there |")
    print("|---|---|---|---|")
    for group, scenes in groups().items():
        if group not in args.groups:
            continue
        for raster, labels in scenes:
            pred = segment_raster(raster)
            ref, _ = prepare_reference(labels, raster=raster)
            ref = ref.to_crs(pred.crs)
            info = raster_info(raster)
            units = abs(info.transform.a) / ground_gsd(info.transform, info.crs, info.width, info.height)
            base = evaluate(pred, ref, ignore_partial=True).f1
            best = (base, 0.0, 0.0)
            for dx in offsets:
                for dy in offsets:
                    moved = ref.set_geometry(ref.geometry.translate(dx * units, dy * units))
                    f = evaluate(pred, moved, ignore_partial=True).f1
                    if f > best[0] + 1e-9:
                        best = (f, dx, dy)
            name = raster.stem if group == "sample" else f"{raster.parent.name}/{raster.stem}"
            print(f"| {name} | {base:.3f} | {best[1]:+.1f} / {best[2]:+.1f} | {best[0]:.3f} |", flush=True)
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
