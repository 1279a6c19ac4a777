"""Self-training on a town the model never saw, with no labels from it: does fine-tuning a
base on its *own* confident predictions of the new imagery (pseudo-labels) find more of the
town's buildings?

For a leave-one-area-out fold model (``--base``, never trained on ``--area``):

1. the base segments both mosaics of the area through ``segment_raster`` at ``--pl-conf``
   (only confident objects become pseudo-labels; chosen before any run, not tuned);
2. ``fastsam_geo.training.train`` fine-tunes the base on both mosaics with those pseudo-labels
   for ``--minutes`` CPU minutes (as ``benchmarks/finetune.py --clock cpu``: data loading in
   the process, ultralytics' time budget on the process's CPU time), no validation split;
3. base and adapted model segment both mosaics with their card settings, scored against the
   OpenStreetMap footprints (F1@0.5, edge-cut buildings ignored), pooled over the two mosaics.

The area's reference footprints are read only in step 3. Printed, measured in this run.

    python benchmarks/selftrain.py --base runs/loao_aoi2/model.pt --area aoi2_kampala_uganda \
        --out runs/st_aoi2 [--pl-conf 0.5] [--minutes 10]
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import geopandas as gpd
import pandas as pd

os.environ.setdefault("YOLO_OFFLINE", "true")

from finetune import SHARED, cpu_clock  # benchmarks/finetune.py, beside this script


def segment(model: Path, image: Path, **kw) -> gpd.GeoDataFrame:
    from fastsam_geo import segment_raster
    from fastsam_geo.engine import FastSAMSegmenter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "checkpoints are code": these are this project's own runs
        return segment_raster(image, segmenter=FastSAMSegmenter(model, trust=True), **kw)


def pooled(model: Path, scenes: list[tuple[Path, Path]]) -> dict:
    from fastsam_geo import evaluate

    tp = fp = fn = 0
    for image, labels in scenes:
        r = evaluate(segment(model, image), labels, iou=0.5, ignore_partial=True)
        tp, fp, fn = tp + r.tp, fp + r.fp, fn + r.fn
    p, r = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    return dict(tp=tp, fp=fp, fn=fn, precision=round(p, 4), recall=round(r, 4),
                f1=round(2 * p * r / (p + r) if p + r else 0.0, 4))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, type=Path)
    ap.add_argument("--area", required=True)
    ap.add_argument("--pl-conf", type=float, default=0.5)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("YOLO_CONFIG_DIR", str(args.out / "yolo-config"))
    from fastsam_geo.training import train

    area = SHARED / args.area
    images = [area / f"mosaic_z20_{s}.tif" for s in "ab"]
    t0 = time.perf_counter()
    pl = pd.concat([segment(args.base, im, conf=args.pl_conf) for im in images], ignore_index=True)
    pl_path = args.out / "pseudo_labels.gpkg"
    pl[["geometry"]].to_file(pl_path)
    t_pl = time.perf_counter() - t0
    model = args.out / "adapted.pt"
    c0 = time.process_time()
    with warnings.catch_warnings(), cpu_clock(True):
        warnings.simplefilter("ignore")
        train(images, pl_path, model, base=str(args.base), minutes=args.minutes, epochs=1000, seed=0,
              val_fraction=0.0, hyp={"workers": 0}, workdir=args.out / "work",
              attribution=["Imagery: OpenAerialMap contributors / HOT, CC-BY-4.0."])
    cpu = (time.process_time() - c0) / 60
    scenes = [(im, im.with_name(im.stem + "_labels.geojson")) for im in images]
    report = dict(base=str(args.base), area=args.area, pl_conf=args.pl_conf, minutes=args.minutes,
                  pseudo_labels=len(pl), pseudo_label_seconds=round(t_pl, 1), train_cpu_minutes=round(cpu, 1),
                  before=pooled(args.base, scenes), after=pooled(model, scenes))
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    b, a = report["before"], report["after"]
    print(f"{args.area}: {len(pl)} pseudo-labels at conf {args.pl_conf}, {cpu:.1f} CPU min of training")
    print(f"before F1 {b['f1']:.3f} (P {b['precision']:.2f} / R {b['recall']:.2f})  "
          f"after F1 {a['f1']:.3f} (P {a['precision']:.2f} / R {a['recall']:.2f})")


if __name__ == "__main__":
    main()
