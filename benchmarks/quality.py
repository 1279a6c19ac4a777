"""Does the mask ``quality`` column (stability score) rank buildings better than the box score?

The bundled building model segments every shared OpenAerialMap mosaic once (``segment_raster``,
the real pipeline; results cached as GeoParquet under ``--cache``, default /tmp/fsg-quality), and
its polygons are matched one-to-one at IoU >= 0.5 against the mosaic's OpenStreetMap footprints
(:func:`fastsam_geo.metrics.match`, what ``evaluate`` uses; buildings cut by the mosaic edge,
``partial=1``, count neither way). Printed, measured in this run, for three rankings of all
predictions pooled over the mosaics (``score``, ``quality``, their product):

* average precision (area under the precision-recall curve, matches fixed) and precision at
  50 / 75 % of the recall reached with every prediction;
* AUROC of telling true from false positives;
* Spearman correlation of each with the IoU of a matched prediction and its footprint;
* filtering: drop the lowest-ranked 10 / 20 / 30 % of each mosaic's predictions and re-match
  (precision, recall, F1 pooled), and the best F1 over every cut-off.

    python benchmarks/quality.py [--mosaics N] [--cache DIR]
"""

from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np

from fastsam_geo import segment_raster
from fastsam_geo.metrics import match

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FASTSAM_GEO_SHARED", ROOT.parent / "shared")) / "data" / "oam_osm"


def load(tif: Path, cache: Path) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    out = cache / f"{tif.parent.name}_{tif.stem}.parquet"
    if out.exists():
        pred = gpd.read_parquet(out)
    else:
        pred = segment_raster(tif)
        pred.to_parquet(out)
    ref = gpd.read_file(tif.with_name(tif.stem + "_labels.geojson")).to_crs(pred.crs)
    partial = np.asarray(ref["partial"], float) == 1 if "partial" in ref else np.zeros(len(ref), bool)
    return pred, ref.assign(partial=partial)


def counts(pred: gpd.GeoDataFrame, ref: gpd.GeoDataFrame) -> tuple[int, int, int, np.ndarray, np.ndarray]:
    """TP, FP, FN (partial references count neither way), each prediction's TP flag and whether it
    matched a partial reference."""
    res = match(pred.geometry.values, ref.geometry.values, 0.5)
    partial = ref["partial"].to_numpy()
    tp_flag = np.zeros(len(pred), bool)
    ignored = np.zeros(len(pred), bool)
    for p, g, _ in res.pairs:
        (ignored if partial[g] else tp_flag)[p] = True
    matched = {g for _, g, _ in res.pairs}
    fn = sum(1 for g in range(len(ref)) if not partial[g] and g not in matched)
    return int(tp_flag.sum()), int((~tp_flag & ~ignored).sum()), fn, tp_flag, ignored


def auroc(key: np.ndarray, pos: np.ndarray) -> float:
    import pandas as pd

    r = pd.Series(key).rank().to_numpy()  # average ranks for ties
    n1, n0 = pos.sum(), (~pos).sum()
    return float((r[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mosaics", type=int, default=8, help="how many mosaics (sorted by path)")
    ap.add_argument("--cache", default="/tmp/fsg-quality", help="folder of segmented mosaics (GeoParquet)")
    args = ap.parse_args()
    mosaics = sorted(SHARED.glob("*/mosaic_z20_*.tif"))[:args.mosaics]
    if not mosaics:
        raise SystemExit(f"no mosaics under {SHARED}")
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    warnings.simplefilter("ignore")
    data = [load(t, cache) for t in mosaics]
    keys = {"score": lambda p: p["score"].to_numpy(float), "quality": lambda p: p["quality"].to_numpy(float),
            "score x quality": lambda p: (p["score"] * p["quality"]).to_numpy(float)}
    # ranking, matches fixed (one match per prediction; predictions matched to partial refs left out)
    flags, ign, total_fn, total_tp = [], [], 0, 0
    for pred, ref in data:
        tp, fp, fn, flag, ignored = counts(pred, ref)
        flags.append(flag & ~ignored)
        ign.append(ignored)
        total_fn += fn
        total_tp += tp
    n_ref = total_tp + total_fn
    print(f"{len(mosaics)} mosaics, {sum(len(p) for p, _ in data)} predictions, {n_ref} reference buildings, "
          f"{total_tp} matched at IoU 0.5 (recall {total_tp / n_ref:.3f})")
    print("\n| ranking by | average precision | precision at 50 % / 75 % of full recall | AUROC TP vs FP |")
    print("|---|---|---|---|")
    for name, fn_ in keys.items():
        key = np.concatenate([fn_(p)[~i] for (p, _), i in zip(data, ign)])
        pos = np.concatenate([f[~i] for f, i in zip(flags, ign)])
        order = np.argsort(-key, kind="stable")
        hits = np.cumsum(pos[order])
        prec = hits / np.arange(1, len(order) + 1)
        rec = hits / n_ref
        ap_ = float((prec * pos[order]).sum() / n_ref)
        at = [float(prec[np.searchsorted(rec, f * rec[-1])]) for f in (0.5, 0.75)]
        print(f"| {name} | {ap_:.3f} | {at[0]:.3f} / {at[1]:.3f} | {auroc(key, pos):.3f} |")
    print("\n| filter: drop each mosaic's lowest | by | precision | recall | F1 |")
    print("|---|---|---|---|---|")
    best = {}
    for name, fn_ in keys.items():
        for drop in (0.0, 0.1, 0.2, 0.3):
            tp = fp = fn = 0
            for pred, ref in data:
                k = fn_(pred)
                keep = k >= np.quantile(k, drop) if drop and len(k) else np.ones(len(k), bool)
                a, b, c, *_ = counts(pred[keep], ref)
                tp, fp, fn = tp + a, fp + b, fn + c
            p, r = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
            f1 = 2 * tp / max(2 * tp + fp + fn, 1)
            if drop == 0 and name != "score":
                continue
            print(f"| {int(drop * 100)} % | {name if drop else 'nothing (all)'} | {p:.3f} | {r:.3f} | {f1:.3f} |")
        # best F1 over global cut-offs (matches fixed)
        key = np.concatenate([fn_(p)[~i] for (p, _), i in zip(data, ign)])
        pos = np.concatenate([f[~i] for f, i in zip(flags, ign)])
        order = np.argsort(-key, kind="stable")
        hits = np.cumsum(pos[order])
        f1s = 2 * hits / (np.arange(1, len(order) + 1) + n_ref)
        j = int(np.argmax(f1s))
        best[name] = (float(f1s[j]), float(key[order][j]))
    # does either track the mask's IoU with its footprint, among matched predictions?
    import pandas as pd

    rows = []
    for pred, ref in data:
        res = match(pred.geometry.values, ref.geometry.values, 0.5)
        for p, _, iou in res.pairs:
            rows.append((float(pred["score"].iloc[p]), float(pred["quality"].iloc[p]), iou))
    m = pd.DataFrame(rows, columns=["score", "quality", "iou"])
    print(f"\nmatched predictions: {len(m)}, IoU with the footprint: Spearman rho "
          f"score {m['score'].rank().corr(m['iou'].rank()):.3f}, "
          f"quality {m['quality'].rank().corr(m['iou'].rank()):.3f}")
    print("\n| ranking by | best F1 over cut-offs | at cut-off |")
    print("|---|---|---|")
    for name, (f, c) in best.items():
        print(f"| {name} | {f:.3f} | {c:.3f} |")


if __name__ == "__main__":
    main()
