"""Fine-tuning the way a mapper meets a new town: a base model that never saw the area,
fine-tuned for a few CPU minutes on one mosaic of it, tested on the other.

For each time budget the public API is run exactly as ``fastsam-geo train`` runs it
(``fastsam_geo.training.train``: spatial train/val split inside the training mosaic,
``--base`` weights, ``--minutes`` budget, ``--gsd auto`` keeps the base's scale), then the
fine-tuned model segments the *test* mosaic through ``segment_raster`` (its own card:
tiling, thresholds, GSD) and ``evaluate`` scores it against OpenStreetMap footprints at
IoU >= 0.5, buildings cut by the mosaic edge ignored. The base model is scored the same way
first (0 minutes). Each budget is its own run (its learning-rate schedule fitted to the time),
not a snapshot of a longer one. Printed, measured in this run: F1 / precision / recall per
budget, train and test wall time.

``--clock cpu`` (default) counts the budget in CPU minutes of the training process, so a run
on a busy machine gets the same compute as on an idle one: data loading runs in the process
(``workers=0``) and ultralytics' time budget reads ``time.process_time()`` instead of the wall
clock (its trainer module's ``time`` is swapped for the duration of the call; this benchmark
only). ultralytics trains with ``cpu_count - 1`` torch threads, one on a 2-core machine, so a
CPU minute is about a wall minute there when nothing else runs. ``--clock wall`` is what
``fastsam-geo train --minutes`` does.

    python benchmarks/finetune.py --base runs/loao_aoi1/model.pt --area aoi1_zanzibar_tanzania \
        --train b --test a --minutes 5 10 20 --out runs/ft_aoi1

The base must come with a card (``MODEL.json`` beside it, as ``scripts/train_buildings.py``
and ``fastsam-geo train`` write) so its GSD and inference settings are known.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import time
import types
import warnings
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "true")

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FASTSAM_GEO_SHARED", ROOT.parent / "shared")) / "data" / "oam_osm"


def score(model: Path, image: Path, labels: Path) -> dict:
    """F1@0.5 of ``model`` on ``image`` through the real pipeline (its card's settings)."""
    from fastsam_geo import evaluate, segment_raster
    from fastsam_geo.engine import FastSAMSegmenter

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "checkpoints are code": these are this project's own runs
        pred = segment_raster(image, segmenter=FastSAMSegmenter(model, trust=True))
    r = evaluate(pred, labels, iou=0.5, ignore_partial=True)
    return dict(tp=r.tp, fp=r.fp, fn=r.fn, precision=round(r.precision, 4), recall=round(r.recall, 4),
                f1=round(r.f1, 4), segment_seconds=round(time.perf_counter() - t0, 1))


def yaml_value(text: str):
    """``10`` -> 10, ``0.001`` -> 0.001, ``AdamW`` -> "AdamW"."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


@contextlib.contextmanager
def cpu_clock(on: bool):
    """ultralytics' trainer timing (its time budget) on this process's CPU time while ``on``."""
    if not on:
        yield
        return
    from ultralytics.engine import trainer

    saved = trainer.time
    trainer.time = types.SimpleNamespace(time=time.process_time)
    try:
        yield
    finally:
        trainer.time = saved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, type=Path)
    ap.add_argument("--area", required=True)
    ap.add_argument("--train", default="b", help="mosaic letter to fine-tune on")
    ap.add_argument("--test", default="a", help="mosaic letter to test on")
    ap.add_argument("--minutes", type=float, nargs="+", default=[5, 10, 20])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--skip-base", action="store_true", help="do not score the base again")
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    ap.add_argument("--hyp", nargs="*", default=[], metavar="KEY=VALUE",
                    help="ultralytics train arguments for the fine-tuning, e.g. freeze=10 lr0=0.001")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("YOLO_CONFIG_DIR", str(args.out / "yolo-config"))
    from fastsam_geo.training import train

    hyp = {k: yaml_value(v) for k, v in (kv.split("=", 1) for kv in args.hyp)}
    report_hyp = dict(hyp)

    area = SHARED / args.area
    image, labels = area / f"mosaic_z20_{args.train}.tif", area / f"mosaic_z20_{args.train}_labels.geojson"
    test_image, test_labels = area / f"mosaic_z20_{args.test}.tif", area / f"mosaic_z20_{args.test}_labels.geojson"
    report_path = args.out / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    report.update(base=str(args.base), area=args.area, train=image.name, test=test_image.name, hyp=report_hyp)
    if not args.skip_base:
        report["0"] = score(args.base, test_image, test_labels)
        print(f"base: {report['0']}", flush=True)
    for m in args.minutes:
        model = args.out / f"ft_{m:g}min.pt"
        shutil.rmtree(args.out / f"work_{m:g}", ignore_errors=True)
        t0, c0 = time.perf_counter(), time.process_time()
        with warnings.catch_warnings(), cpu_clock(args.clock == "cpu"):
            warnings.simplefilter("ignore")
            res = train([image], labels, model, base=str(args.base), minutes=m, epochs=1000, seed=0,
                        hyp=dict(hyp, **({"workers": 0} if args.clock == "cpu" else {})),
                        workdir=args.out / f"work_{m:g}",
                        attribution=["Imagery: OpenAerialMap contributors / HOT, CC-BY-4.0. Buildings: (c) "
                                     "OpenStreetMap contributors, ODbL-1.0."])
        cpu = (time.process_time() - c0) / 60
        row = score(model, test_image, test_labels)
        row.update(clock=args.clock, train_cpu_minutes=round(cpu, 1),
                   train_wall_minutes=round((time.perf_counter() - t0) / 60, 1),
                   epochs=len((args.out / f"work_{m:g}" / "yolo/train/results.csv").read_text().splitlines()) - 1,
                   train_minutes=res.info["train_minutes"], validation_f1=res.info["validation"].get("f1"),
                   train_tiles=res.info["dataset"]["train_tiles"], gsd=res.info.get("gsd"))
        report[f"{m:g}"] = row
        report_path.write_text(json.dumps(report, indent=2))
        print(f"{m:g} min: {row}", flush=True)
    report_path.write_text(json.dumps(report, indent=2))
    base_f1 = report.get("0", {}).get("f1")
    print(f"\n{args.area}: fine-tune on {image.name}, test on {test_image.name}")
    print("| CPU minutes | F1@0.5 | P / R | train tiles |")
    print("|---|---|---|---|")
    for k in ["0"] + [f"{m:g}" for m in args.minutes]:
        r = report.get(k)
        if r:
            print(f"| {k} | {r['f1']:.3f} | {r['precision']:.2f} / {r['recall']:.2f} | {r.get('train_tiles', '-')} |")
    if base_f1 is not None:
        best = max(report[f"{m:g}"]["f1"] for m in args.minutes)
        print(f"best fine-tuned / base F1: {best / base_f1:.2f}x" if base_f1 else "")


if __name__ == "__main__":
    main()
