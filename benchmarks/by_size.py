"""What a building model finds, by building size: recall, precision and F1@0.5 per footprint
size class (ground m², :func:`fastsam_geo.evaluate_by_size`: a match and a miss count in the
reference's class, an unmatched prediction in its own), pooled per scene group, through
``segment_raster`` + ``evaluate`` with buildings cut by the mosaic edge ignored.

Groups (``benchmarks/scenes.py``): in-sample (the eight shared OAM mosaics), unseen (Banepa,
Nepal, from ``scripts/fetch_extdata.py``, if present), the bundled sample. ``--model`` scores
another checkpoint (e.g. a leave-one-area-out fold model: then name its held-out area with
``--area`` to score only that area's two mosaics).

    python benchmarks/by_size.py [--model PATH] [--area aoi5_nairobi_kenya] [--groups ...]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import pandas as pd

os.environ.setdefault("YOLO_OFFLINE", "true")

from scenes import groups  # benchmarks/scenes.py, beside this script

from fastsam_geo import evaluate_by_size, segment_raster
from fastsam_geo.api import SIZE_CLASSES_M2


def pooled(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """Sum the counts of per-scene tables (same classes) and recompute the scores."""
    out = sum(t[["tp", "fp", "fn"]] for t in tables)
    out.insert(0, "m2", [f"{lo:g}-{hi:g}" if hi != float("inf") else f">= {lo:g}"
                         for lo, hi in zip(tables[0].min_m2, tables[0].max_m2)])
    p = out.tp / (out.tp + out.fp).where(out.tp + out.fp > 0)
    r = out.tp / (out.tp + out.fn).where(out.tp + out.fn > 0)
    f1 = (2 * p * r / (p + r)).where(p + r > 0, 0.0)
    out["recall"], out["precision"], out["f1"] = r, p, f1.where(out.tp + out.fp + out.fn > 0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="checkpoint to score (default: the bundled model)")
    ap.add_argument("--area", default=None, help="score only this area's mosaics (a fold's held-out area)")
    ap.add_argument("--groups", nargs="+", default=["in-sample", "unseen", "sample"])
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    for group, scenes in groups().items():
        if group not in args.groups:
            continue
        if args.area:
            scenes = [(r, lab) for r, lab in scenes if r.parent.name == args.area]
        if not scenes:
            continue
        tables = []
        for raster, labels in scenes:
            pred = segment_raster(raster, segmenter=args.model)
            tables.append(evaluate_by_size(pred, labels, raster=raster, ignore_partial=True, sizes=SIZE_CLASSES_M2))
        print(f"\n{group} ({len(scenes)} scene(s), model {args.model or 'bundled'})")
        print(pooled(tables).to_string(index=False, float_format=lambda v: f"{v:.2f}", na_rep="-"))
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
