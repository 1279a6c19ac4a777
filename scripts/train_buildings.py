"""Train (and score) the bundled building model: reproducible, offline, from ../shared/data/oam_osm.

Leave-one-area-out:  python scripts/train_buildings.py --holdout aoi1_zanzibar_tanzania --out runs/loao_aoi1
Shipped model:       python scripts/train_buildings.py --out runs/final \
                         --export fastsam_geo/data/buildings-nano.pt

Each run builds a YOLO-seg dataset with fastsam_geo.dataset (same tiling as inference), trains
YOLOv8n-seg from scratch with ultralytics (no downloads), exports a slim fp16 checkpoint with
its inference settings, and, with --holdout, segments the held-out area's mosaics through the
real segment_raster pipeline and scores them with fastsam_geo.evaluate (partial buildings at the
mosaic edge ignored), sweeping the confidence threshold. Results go to OUT/report.json.

The three stages can run apart (a GPU machine without the geospatial stack trains, this one
prepares and scores): --prepare-only builds OUT/dataset and the report's dataset, schedule and
GSD; --train-only trains from them and writes OUT/model.pt (needs only torch and ultralytics);
--score-only scores OUT/model.pt. scripts/device_train.py runs the middle stage of several
prepared runs at once on one GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "true")

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FASTSAM_GEO_SHARED", ROOT.parent / "shared")) / "data" / "oam_osm"
AREAS = sorted(p.name for p in DATA.iterdir()) if DATA.exists() else []


def score_area(model: Path, area: str | Path, tile_size: int, confs: list[float]) -> dict:
    """Segment both mosaics of ``area`` (a name under DATA, or a folder laid out the same way)
    at the lowest conf, then score each threshold."""
    import geopandas as gpd

    from fastsam_geo import segment_raster
    from fastsam_geo.api import evaluate
    from fastsam_geo.engine import FastSAMSegmenter
    from fastsam_geo.metrics import MatchResult

    seg = FastSAMSegmenter(model, conf=min(confs))
    rows = {c: [0, 0, 0] for c in confs}
    seconds = 0.0
    for s in "ab":
        t0 = time.perf_counter()
        pred = segment_raster(DATA / area / f"mosaic_z20_{s}.tif", segmenter=seg, tile_size=tile_size)
        seconds += time.perf_counter() - t0
        gt = gpd.read_file(DATA / area / f"mosaic_z20_{s}_labels.geojson")  # (DATA / absolute = absolute)
        for c in confs:
            r = evaluate(pred[pred.score >= c], gt, iou=0.5, ignore_partial=True)
            rows[c][0] += r.tp
            rows[c][1] += r.fp
            rows[c][2] += r.fn
    out = {}
    for c, (tp, fp, fn) in rows.items():
        m = MatchResult(tp=tp, fp=fp, fn=fn, iou_threshold=0.5, mean_iou=float("nan"))
        out[f"{c:g}"] = dict(tp=tp, fp=fp, fn=fn, precision=round(m.precision, 4), recall=round(m.recall, 4),
                             f1=round(m.f1, 4))
    out["segment_seconds"] = round(seconds, 1)
    return out


def schedule(tiles: int, batch: int, epochs: int, close_mosaic: int, steps: int | None = None) -> dict:
    """Epochs, mosaic-free last epochs and optimizer steps of a run over ``tiles`` training tiles.

    With ``steps``, the epoch count is stretched so the run makes at least that many updates
    (ultralytics makes ceil(tiles / batch) per epoch) and ``close_mosaic`` keeps its share of
    the run: ``epochs=40, close_mosaic=5, steps=1120`` over 217 tiles is exactly 40 / 5 epochs,
    over 92 tiles 94 / 12.
    """
    per_epoch = math.ceil(tiles / batch)
    if steps:
        ratio = close_mosaic / epochs
        epochs = math.ceil(steps / per_epoch)
        close_mosaic = max(1, round(ratio * epochs)) if close_mosaic else 0
    return {"epochs": epochs, "close_mosaic": close_mosaic, "steps": epochs * per_epoch}


def collect_loao(runs: Path, conf: float) -> dict:
    """The held-out scores of every fold run beside the final run (``runs/*/report.json``)."""
    loao = {}
    for rep in sorted(runs.glob("*/report.json")):
        r = json.loads(rep.read_text())
        for area, scores in (r.get("holdout") or {}).items():
            best = max((v for k, v in scores.items() if k != "segment_seconds"), key=lambda v: v["f1"])
            sweep = {k: v for k, v in scores.items() if k != "segment_seconds"}
            schedule = r.get("schedule") or {"epochs": int(r["args"]["epochs"])}
            loao[area] = {"run": rep.parent.name, "at_model_conf": scores.get(f"{conf:g}"), "best_conf": best,
                          "sweep_f1": {k: v["f1"] for k, v in sweep.items()},
                          "train_minutes": r.get("train_minutes"), **schedule, "unseen": r.get("unseen")}
    return loao


def nested_conf(loao: dict) -> dict:
    """A confidence threshold for imagery no fold saw, chosen without looking at the fold it scores.

    For each held-out area, the threshold with the best mean F1 over the *other* folds' held-out
    sweeps is applied to it (nested leave-one-area-out: the area's own labels never choose it);
    ``conf_all_folds`` is the threshold the same rule picks from every fold (for new imagery).
    """
    sweeps = {a: v["sweep_f1"] for a, v in loao.items() if v.get("sweep_f1")}
    if len(sweeps) < 2:
        return {}
    confs = sorted(set.intersection(*(set(s) for s in sweeps.values())), key=float)

    def pick(areas: list[str]) -> str:
        return max(confs, key=lambda c: (sum(sweeps[a][c] for a in areas) / len(areas), float(c)))

    per_area = {}
    for a in sweeps:
        c = pick([b for b in sweeps if b != a])
        per_area[a] = {"conf": float(c), "f1": sweeps[a][c]}
    f1s = [v["f1"] for v in per_area.values()]
    return {"per_area": per_area, "mean_f1": round(sum(f1s) / len(f1s), 4), "worst_f1": min(f1s),
            "conf_all_folds": float(pick(list(sweeps)))}


def trained_and_held_out(train: list[str | Path], holdout: str | None, unseen: list[Path]) -> list[str]:
    """Areas (by folder name) that a run would both train on and score as never seen: must be none."""
    held = {Path(h).resolve().name for h in [holdout, *unseen] if h}
    return sorted(held & {Path(t).resolve().name for t in train})


def loao_summary(loao: dict, areas: list[str]) -> dict:
    """The card's leave-one-area-out section: every fold, their mean and worst, the folds not run."""
    f1s = [v["at_model_conf"]["f1"] for v in loao.values() if v.get("at_model_conf")]
    out = {"leave_one_area_out": loao}
    if f1s:
        out["leave_one_area_out_summary"] = {
            "folds": len(f1s), "of": len(areas), "not_run": [a for a in areas if a not in loao],
            "mean_f1": round(sum(f1s) / len(f1s), 4), "worst_f1": min(f1s),
            "protocol": "each area left out of training in turn (same recipe), both its mosaics segmented "
                        "by segment_raster and scored by evaluate at IoU 0.5, buildings cut by the mosaic "
                        "edge ignored, at the model's confidence"}
        nested = nested_conf(loao)
        if nested:
            out["leave_one_area_out_summary"]["threshold_chosen_on_other_folds"] = nested
    return out


def prepare(args: argparse.Namespace, train_areas: list[str], extra: list[Path]) -> dict:
    """Build OUT/dataset from the training areas; the report's dataset, schedule, GSD and input levels."""
    import geopandas as gpd
    import pandas as pd

    from fastsam_geo.dataset import build_dataset
    from fastsam_geo.raster import measure_levels
    from fastsam_geo.training import AERIAL_AUG, training_gsd

    dirs = [DATA / a for a in train_areas] + extra
    images = [d / f"mosaic_z20_{s}.tif" for d in dirs for s in "ab"]
    levels = measure_levels(images)  # where its 8-bit training imagery lies: non-uint8 input is stretched to it
    out = {"input_levels": {"percentiles": list(levels.percentiles), "values": list(levels.values)}}
    if args.score_only:
        return out
    frames = [gpd.read_file(d / "labels_osm.geojson").to_crs(4326) for d in dirs]
    labels = gpd.GeoDataFrame(pd.concat(frames), crs=4326)
    summary = build_dataset(images, labels, args.out / "dataset", tile_size=args.tile_size,
                            overlap=args.overlap, val_fraction=args.val_fraction, keep_empty=0.3,
                            seed=args.seed, coarsen=args.coarsen)
    out["dataset"] = {k: v for k, v in vars(summary).items() if k != "images"}
    out["schedule"] = schedule(summary.train_tiles, args.batch, args.epochs, args.close_mosaic, args.steps)
    out["gsd"] = training_gsd(summary, args.imgsz)
    out["augmentation"] = dict(AERIAL_AUG) if args.aug == "aerial" else {}  # the train stage needs no geo stack
    return out


def train(args: argparse.Namespace, report: dict, model: Path, arch: str, itile: int, iimg: int) -> None:
    """Train from OUT/dataset as the report's schedule (or --minutes) says; export OUT/model.pt + card."""
    from fastsam_geo.engine import export_checkpoint, train_yolo

    data_yaml = args.out / "dataset" / "data.yaml"
    if args.train_only:  # prepared elsewhere: point the yaml at this copy of the dataset
        text = data_yaml.read_text().splitlines()
        data_yaml.write_text("\n".join([f"path: {data_yaml.parent.resolve()}", *text[1:]]) + "\n")
    epochs, close_mosaic = report["schedule"]["epochs"], report["schedule"]["close_mosaic"]
    hyp = dict(report["augmentation"], copy_paste=args.copy_paste, close_mosaic=close_mosaic)
    if args.cache != "none":
        hyp["cache"] = args.cache
    if args.minutes:  # ultralytics stops at the budget; start from a long schedule it then re-fits
        hyp["time"] = args.minutes / 60
        hyp["close_mosaic_share"] = close_mosaic / epochs if close_mosaic else None
        epochs = max(epochs, 1000)
    t0 = time.perf_counter()
    best = train_yolo(data_yaml, args.out / "yolo", base=args.base, epochs=epochs, imgsz=args.imgsz,
                      batch=args.batch, seed=args.seed, val=args.val_fraction > 0, device=args.device,
                      workers=args.workers, **hyp)
    report["train_minutes"] = round((time.perf_counter() - t0) / 60, 1)
    if args.minutes:  # what the budget came to
        rows = (args.out / "yolo" / "train" / "results.csv").read_text().strip().splitlines()[1:]
        per_epoch = math.ceil(report["dataset"]["train_tiles"] / args.batch)
        report["schedule"] = {"epochs": len(rows), "steps": len(rows) * per_epoch, "minutes": args.minutes,
                              "close_mosaic_share": hyp["close_mosaic_share"], "batch": args.batch,
                              "device": args.device}
        epochs = len(rows)
    export_checkpoint(best, model, name="buildings-nano", arch=arch, imgsz=iimg,
                      tile_size=itile, conf=args.conf, iou=args.iou, classes=["building"],
                      epochs=epochs, train_areas=report["train_areas"], holdout=args.holdout)
    card = dict(name=f"buildings-nano ({'all areas' if not args.holdout else 'without ' + args.holdout})",
                imgsz=iimg, tile_size=itile, conf=args.conf, iou=args.iou, epochs=epochs,
                steps=report["schedule"]["steps"], train_areas=report["train_areas"], arch=arch,
                holdout=args.holdout, coarsen=args.coarsen, **report["gsd"], input_levels=report["input_levels"])
    model.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--holdout", default=None, help="area left out of training and scored")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--steps", type=int, default=None,
                    help="train for this many optimizer steps instead: epochs = ceil(steps / batches per "
                         "epoch), --close-mosaic scaled by the same factor, so a fold with fewer tiles "
                         "gets as many updates as the model trained on every area")
    ap.add_argument("--imgsz", type=int, default=512)
    ap.add_argument("--tile-size", type=int, default=1024)
    ap.add_argument("--overlap", type=int, default=512, help="training tile overlap (more = more crops)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--base", default="yolov8n-seg.yaml")
    ap.add_argument("--aug", choices=["default", "aerial"], default="aerial")
    ap.add_argument("--copy-paste", type=float, default=0.0, help="ultralytics copy_paste augmentation")
    ap.add_argument("--coarsen", type=float, default=0.0,
                    help="probability that a training tile also gets a copy blurred to 1.5-4x coarser GSD "
                         "and enlarged back, as --gsd auto feeds coarse imagery (fastsam_geo.dataset)")
    ap.add_argument("--close-mosaic", type=int, default=10, help="last epochs without mosaic")
    ap.add_argument("--infer-tile", type=int, default=None, help="tile size at inference (default --tile-size)")
    ap.add_argument("--infer-imgsz", type=int, default=None, help="network size at inference (default --imgsz)")
    ap.add_argument("--conf", type=float, default=0.25, help="confidence written into the model card")
    ap.add_argument("--iou", type=float, default=0.45, help="NMS IoU written into the model card")
    ap.add_argument("--export", type=Path, default=None, help="also copy the model here")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val-fraction", type=float, default=0.0,
                    help="spatial val split inside the training areas (0: validate on train; the "
                         "held-out area is the real test)")
    ap.add_argument("--minutes", type=float, default=None,
                    help="train for this long instead (ultralytics' time budget: the epoch count is "
                         "re-estimated after each epoch and --close-mosaic keeps its share of the run)")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    ap.add_argument("--workers", type=int, default=2, help="dataloader processes")
    ap.add_argument("--cache", choices=["none", "ram"], default="none",
                    help="ram: decode the training tiles once (faster epochs; same pixels)")
    ap.add_argument("--prepare-only", action="store_true",
                    help="only build OUT/dataset and the report's dataset/schedule/GSD (needs the geo stack)")
    ap.add_argument("--train-only", action="store_true",
                    help="train from a prepared OUT (needs only torch + ultralytics) and write OUT/model.pt")
    ap.add_argument("--score-only", action="store_true",
                    help="reuse OUT/model.pt, only score (with --export: write the card, keep the exported weights)")
    ap.add_argument("--loao-only", action="store_true",
                    help="with --export: only refresh the exported card's leave-one-area-out section from runs/*")
    ap.add_argument("--unseen", type=Path, nargs="*", default=[],
                    help="extra area folders no run trains on (mosaic_z20_{a,b}.tif + _labels.geojson, e.g. "
                         "extdata/hot_aoi3_kathmandu from scripts/fetch_extdata.py): scored for every run")
    ap.add_argument("--extra-train", type=Path, nargs="*", default=[],
                    help="extra area folders to train on too (same layout as --unseen, labels_osm.geojson "
                         "with all the area's footprints): more of the world in training")
    args = ap.parse_args()

    if args.loao_only:
        card_path = args.export.with_suffix(".json")
        card = json.loads(card_path.read_text())
        card.pop("leave_one_area_out_summary", None)
        card.update(loao_summary(collect_loao(args.out.parent, args.conf), card["train_areas"]))
        card_path.write_text(json.dumps(card, indent=2) + "\n")
        print(json.dumps(card.get("leave_one_area_out_summary"), indent=1))
        return
    os.environ.setdefault("YOLO_CONFIG_DIR", str(args.out / "yolo-config"))
    args.out.mkdir(parents=True, exist_ok=True)
    report_path = args.out / "report.json"
    old = json.loads(report_path.read_text()) if report_path.exists() else {}  # an earlier stage's
    prepared = old if args.train_only else {}
    train_areas = prepared.get("train_areas") or [a for a in AREAS if a != args.holdout]
    extra = [d.resolve() for d in args.extra_train]
    if leak := trained_and_held_out(train_areas + extra, args.holdout, args.unseen):
        raise SystemExit(f"error: {', '.join(leak)} would be trained on and scored as held out")
    arch = Path(args.base).stem  # yolov8n-seg.yaml -> yolov8n-seg
    itile, iimg = args.infer_tile or args.tile_size, args.infer_imgsz or args.imgsz
    model = args.out / "model.pt"
    report: dict = {"args": {k: str(v) for k, v in vars(args).items()},
                    "train_areas": prepared.get("train_areas") or train_areas + [d.name for d in extra]}
    if args.score_only:  # trained earlier (or elsewhere): keep what it took
        report["train_minutes"] = old.get("train_minutes")
    if args.train_only:
        report.update({k: prepared[k] for k in ("dataset", "schedule", "gsd", "input_levels", "augmentation")})
        report["prepare_args"] = prepared["args"]
    elif not args.score_only or args.export:
        report.update(prepare(args, train_areas, extra))
        if args.prepare_only:
            report_path.write_text(json.dumps(report, indent=2))
            print(json.dumps(report["schedule"]))
            return
    else:
        report["input_levels"] = old.get("input_levels")
    input_levels = report.get("input_levels")
    if not args.score_only:
        train(args, report, model, arch, itile, iimg)
        if args.train_only:
            report_path.write_text(json.dumps(report, indent=2))
            print(json.dumps({k: report[k] for k in ("schedule", "train_minutes")}))
            return
    confs = [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5]
    if args.holdout:
        report["holdout"] = {args.holdout: score_area(model, args.holdout, itile, confs)}
    if args.unseen:
        report["unseen"] = {d.name: score_area(model, d.resolve(), itile, [args.conf])[f"{args.conf:g}"]
                            for d in args.unseen}
    if args.export:
        from fastsam_geo import evaluate, segment_raster
        from fastsam_geo.engine import FastSAMSegmenter, export_checkpoint
        from fastsam_geo.samples import ATTRIBUTION, SAMPLE_IMAGE, SAMPLE_LABELS

        # at the card's threshold (a run trained elsewhere carries the one it was trained with)
        pred = segment_raster(SAMPLE_IMAGE, segmenter=FastSAMSegmenter(model, conf=args.conf), tile_size=itile)
        sample = evaluate(pred, SAMPLE_LABELS, iou=0.5, ignore_partial=True)
        prev_path = args.export.with_suffix(".json")
        prev = json.loads(prev_path.read_text()) if prev_path.exists() else {}
        in_sample = {Path(a).name: score_area(model, a, itile, [args.conf])[f"{args.conf:g}"]
                     for a in train_areas + extra}
        loao = collect_loao(args.out.parent, args.conf)
        run_card = json.loads(model.with_suffix(".json").read_text()) if model.with_suffix(".json").exists() else {}
        card = {
            "name": "buildings-nano", "arch": f"{arch} (FastSAM's YOLOv8-seg family, from scratch)",
            "imgsz": iimg, "tile_size": itile, "conf": args.conf, "iou": args.iou,
            "gsd": run_card.get("gsd"), "gsd_range": run_card.get("gsd_range"),
            "input_levels": input_levels,
            "input_levels_note": "where the 2nd and 98th percentiles of its 8-bit training imagery lie (bands "
                                 "pooled, median over the training mosaics: fastsam_geo.raster.measure_levels); "
                                 "non-uint8 imagery is stretched to them, one map for all bands",
            "epochs": run_card.get("epochs", args.epochs), "steps": run_card.get("steps", args.steps),
            "schedule": report.get("schedule") or old.get("schedule"),
            "augmentation": args.aug, "coarsen": args.coarsen,
            "seed": args.seed,
            "train_areas": report["train_areas"], "train_minutes": report.get("train_minutes"),
            "data": "HOT fAIr-utilities training data (hotosm/fAIr-utilities 61f15156, ramp-data/TRAIN/HOTOSM/2): "
                    "OpenAerialMap drone mosaics (~0.15 m, EPSG:3857) and OpenStreetMap building footprints; "
                    "every source, its licence, and the unseen test areas: docs/training_data.md",
            "attribution": [ATTRIBUTION,
                            "Imagery: OpenAerialMap contributors / HOT, licensed CC-BY-4.0.",
                            "Labels: (c) OpenStreetMap contributors, licensed ODbL-1.0."],
            "sample_f1": round(sample.f1, 4), "sample_metrics": sample.as_dict(),
            "in_sample_f1": in_sample, "leave_one_area_out": loao,
            "unseen_areas": report.get("unseen"),
            "script": "scripts/train_buildings.py " + " ".join(
                f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                if v not in (None, False, []) and k not in ("score_only", "train_only", "prepare_only", "unseen",
                                                          "extra_train"))
                + "".join(f" --extra-train extdata/{d.name}" for d in extra),
        }
        card.update(loao_summary(loao, train_areas))
        for key in ("train_minutes", "gsd_note", "gsd", "gsd_range"):  # kept when only re-scoring
            if card.get(key) is None and key in prev:
                card[key] = prev[key]
        if not (args.score_only and args.export.exists()):  # re-exporting would change the pinned bytes
            export_checkpoint(model, args.export, name="buildings-nano", arch=arch, imgsz=iimg,
                              tile_size=itile, conf=args.conf, iou=args.iou, classes=["building"],
                              epochs=run_card.get("epochs", args.epochs), train_areas=report["train_areas"])
        args.export.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
        report["export"] = {"sample_f1": sample.f1, "in_sample": in_sample}
    prev = dict(old)
    prev.update(report)
    (args.out / "report.json").write_text(json.dumps(prev, indent=2))
    print(json.dumps({k: report.get(k) for k in ("holdout", "export")}, indent=1))


if __name__ == "__main__":
    main()
