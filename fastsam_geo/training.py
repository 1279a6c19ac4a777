"""Fine-tune or train a building model on your own imagery and footprints, offline.

``train(images, labels, output)`` tiles the GeoTIFFs exactly as inference does, writes a
YOLO-seg dataset with a spatial train/val split (:mod:`fastsam_geo.dataset`), trains with
ultralytics (:func:`fastsam_geo.engine.train_yolo`), writes a slim checkpoint that carries its
own inference settings, and beside it a model card (``MODEL.json``): data used, attribution,
epochs, and validation metrics measured by running the new model through ``segment_raster``
on the validation areas and scoring it with ``evaluate``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd

from . import __version__
from .api import evaluate, segment_raster
from .coords import crs_name
from .dataset import build_dataset, check_coarsen, load_labels
from .errors import FineTuneWarning, InputError, OutputError, UntrustedCheckpointWarning
from .gsd import model_gsd
from .gsd import validate as validate_gsd
from .metrics import MatchResult
from .models import model_card
from .options import Options
from .raster import measure_levels, model_levels, read_info

AERIAL_AUG = dict(flipud=0.5, fliplr=0.5, degrees=10.0, scale=0.5, translate=0.1, mosaic=1.0,
                  hsv_h=0.02, hsv_s=0.6, hsv_v=0.4)
"""Default augmentation (ultralytics train arguments) for overhead imagery: flips both ways and
small rotations (an aerial scene has no "up"), scale, colour. The bundled model's recipe."""

TIMED_CLOSE_MOSAIC_SHARE = 0.125
"""With ``minutes`` and an architecture ``base`` (training from scratch), the last 12.5 % of the
epochs train without mosaic, as the bundled model's recipe does (5 of 40): a time-budgeted run
learns its epoch count only once it runs, so ultralytics' fixed ``close_mosaic=10`` would be a
different share of every budget. A ``close_mosaic`` (count) or ``close_mosaic_share`` in ``hyp``
overrides it."""
FINE_TUNE_CLOSE_MOSAIC_SHARE = 0.5
"""With ``minutes`` and weights as ``base`` (fine-tuning), the last half of the epochs train on
the user's tiles as they are, without mosaic. Chosen on the validation band of the Zanzibar
fine-tune (``benchmarks/finetune.py``, 5 / 10 / 20 CPU minutes): mean validation F1 0.815 at 0.5,
0.777 at 0.125, 0.788 with ultralytics' fixed 10 epochs."""


@dataclass(frozen=True)
class TrainResult:
    """Where the model and its card were written, and the card itself."""

    model: Path
    card: Path
    info: dict


def train(images: Sequence[str | os.PathLike], labels: gpd.GeoDataFrame | str | os.PathLike,
          output: str | os.PathLike, *, base: str = "yolov8n-seg.yaml", epochs: int = 100,
          minutes: float | None = None, imgsz: int = 512, tile_size: int | None = None, overlap: int = 256,
          batch: int = 8, device: str = "auto", val_fraction: float = 0.15,
          val_images: Sequence[str] | None = None, conf: float | None = None, iou: float | None = None,
          gsd: str | float = "auto", seed: int = 0, attribution: Sequence[str] = (),
          workdir: str | os.PathLike | None = None, name: str | None = None,
          hyp: dict | None = None, coarsen: float = 0.0, labels_layer: str | None = None) -> TrainResult:
    """Train a YOLOv8-seg building model on georeferenced ``images`` and footprint ``labels``.

    ``base``: ``yolov8n-seg.yaml`` (from scratch, ~6 MB model), another architecture yaml,
    or weights to fine-tune (``buildings-nano``, ``FastSAM-s.pt``, a previous model).
    ``minutes``: train for that long (ultralytics' time budget; the schedule is fitted to it)
    instead of ``epochs``.
    ``coarsen`` (0..1): share of training tiles that also train as 1.5-4x coarser imagery
    (blurred and enlarged back, as ``--gsd auto`` feeds coarse rasters; see
    :func:`fastsam_geo.dataset.build_dataset`), for a model that will meet coarser imagery than
    it trains on. Recorded in the card.

    ``gsd`` (ground m/px the network sees): ``"auto"`` is the base model's card GSD when it
    has one (fine-tuning keeps the scale the base learned), else the imagery's own;
    ``"native"`` cuts tiles at native pixels; a number resamples to it. Tiles are cut so
    ``tile_size`` pixels at that GSD cover a tile (default ``tile_size``: ``imgsz`` with a
    GSD, else 1024 native pixels), resized to ``imgsz`` as at inference.

    The model card records the GSD the network saw (``gsd``, ``gsd_range``), so ``segment
    --gsd auto`` resamples new imagery to it. Inference settings (``imgsz``, ``conf``, ``iou``)
    default to the base's card when fine-tuning. Labels in another CRS are reprojected;
    ``labels_layer`` names the layer of a labels file with several. Raises
    :class:`InputError` for labels that are empty or miss every image.
    """
    t_start = time.perf_counter()
    output = Path(output)
    if output.suffix != ".pt":
        raise OutputError(f"{output}: the model file must end in .pt")
    if not output.resolve().parent.is_dir():
        raise OutputError(f"{output}: output folder {output.resolve().parent} does not exist")
    if not images:
        raise InputError("no training images given")
    if minutes is not None and not (math.isfinite(minutes) and minutes > 0):
        raise InputError(f"minutes must be a positive number, got {minutes!r}")
    target = validate_gsd(gsd)
    check_coarsen(coarsen)
    infos = [read_info(p) for p in images]  # fails early on missing / non-georeferenced rasters
    gdf = load_labels(labels, layer=labels_layer)  # and on unreadable labels, before ultralytics loads
    from .engine.train import resolve_base

    with warnings.catch_warnings():  # (its notice comes once, when training loads it)
        warnings.simplefilter("ignore", UntrustedCheckpointWarning)
        resolve_base(base)  # a missing or unverified base fails now, not after the dataset is tiled
    base_card = _base_card(base)
    base_gsd = model_gsd(base_card)
    if target == "auto":
        target = base_gsd.gsd if base_gsd else None
    elif target == "native":
        target = None
    if tile_size is None:
        tile_size = imgsz if target is not None else 1024
    infer_imgsz = int(base_card["imgsz"]) if base_card and base_card.get("imgsz") else imgsz
    conf_source = "given" if conf is not None else "base model card" if base_card and "conf" in base_card \
        else "default"
    conf = conf if conf is not None else float((base_card or {}).get("conf", 0.25))
    base_conf = float((base_card or {}).get("conf", conf))
    iou = iou if iou is not None else float((base_card or {}).get("iou", 0.6))
    base_levels = model_levels(base_card)  # non-uint8 imagery: stretched as the base model expects it
    levels = measure_levels(images, levels=base_levels)  # what the network will see; into the card
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=f".{output.stem}-train-",
                                                               dir=output.resolve().parent))
    try:
        summary = build_dataset(images, gdf, work / "dataset", tile_size=tile_size, overlap=overlap,
                                val_fraction=val_fraction, val_images=val_images, seed=seed, gsd=target,
                                coarsen=coarsen, levels=base_levels)
        from .engine import train_yolo

        args = dict(AERIAL_AUG, **(hyp or {}))
        if minutes is not None:
            args["time"] = minutes / 60  # ultralytics: hours, overrides epochs
            if "close_mosaic" not in args and "close_mosaic_share" not in args:
                args["close_mosaic_share"] = TIMED_CLOSE_MOSAIC_SHARE if _is_architecture(base) \
                    else FINE_TUNE_CLOSE_MOSAIC_SHARE
        best_weights = train_yolo(summary.yaml, work / "yolo", base=base, epochs=epochs, imgsz=imgsz,
                                  batch=batch, device=device, seed=seed, **args)
        train_minutes = (time.perf_counter() - t_start) / 60
        # tile_size == imgsz: at --gsd auto the network sees the card's GSD (fastsam_geo.gsd)
        meta = dict(name=name or output.stem, base=str(base), imgsz=infer_imgsz, tile_size=infer_imgsz,
                    conf=conf, iou=iou, classes=["building"], epochs=epochs_trained(best_weights, epochs))
        meta.update(training_gsd(summary, imgsz))
        meta["input_levels"] = dict(percentiles=list(levels.percentiles), values=list(levels.values))
        _export(best_weights, output, meta)
        card = dict(
            **meta, fastsam_geo=__version__, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            train_minutes=round(train_minutes, 1), minutes_budget=minutes, train_imgsz=imgsz, coarsen=coarsen,
            close_mosaic=_close_mosaic_record(args),
            train_tile_size_at_gsd=tile_size, python=platform.python_version(),
            gsd_note=("ground m/px the network saw in training (each raster's ground GSD x native tile / imgsz); "
                      "segment --gsd auto resamples imagery to it"),
            base_model=_base_summary(base, base_card),
            data=[dict(path=os.fspath(p), crs=crs_name(i.crs), width=i.width, height=i.height,
                       resolution=list(i.res), ground_gsd=None if g is None else round(g, 4), native_tile=t)
                  for p, i, g, t in zip(images, infos, summary.raster_gsd, summary.tile_sizes)],
            labels=dict(source=os.fspath(labels) if not isinstance(labels, gpd.GeoDataFrame) else "GeoDataFrame",
                        **({"layer": labels_layer} if labels_layer is not None else {}),
                        polygons=len(gdf), crs=crs_name(gdf.crs)),
            dataset=dict(train_tiles=summary.train_tiles, coarsened_tiles=summary.coarsened_tiles,
                         val_tiles=summary.val_tiles,
                         train_polygons=summary.train_polygons, val_polygons=summary.val_polygons,
                         split="spatial: whole rasters or bands of tile columns; train tiles touching "
                               "val tiles dropped"),
            attribution=list(attribution) + list((base_card or {}).get("attribution") or []),
        )
        card_path = output.with_suffix(".json")
        _write_card(card_path, card)  # first: validation below runs with --gsd auto, which reads it
        conf_source = _validate_into(card, meta, conf_source, output, best_weights, summary, gdf, base, base_card,
                                     base_conf)
        card["conf_source"] = conf_source
        _write_card(card_path, card)
        return TrainResult(output, card_path, card)
    finally:
        if workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def _validate_into(card: dict, meta: dict, conf_source: str, output: Path, best_weights: Path, summary,
                   gdf: gpd.GeoDataFrame, base, base_card: dict | None, base_conf: float) -> str:
    """Score the new model on the validation area at every threshold into ``card["validation"]``;
    take the best threshold when the area has enough buildings and none was given (rewriting
    the weights' settings); for a fine-tune also score the base there and warn when the new
    model is worse. Returns where the threshold came from."""
    from .engine.train import resolve_base

    val = validate_model(output, summary.val_regions, gdf, confs=sorted({*CONF_GRID, meta["conf"]}),
                         near=meta["conf"])
    if "by_conf" in val and conf_source != "given" and val["tp"] + val["fn"] >= MIN_VAL_BUILDINGS \
            and val["best_conf"] != meta["conf"]:
        # a fine-tuned model's scores are not its base's: take the threshold it scores best at
        # on its own validation area (ties: the one nearest the old threshold, so a flat curve
        # changes little). Measured, Zanzibar, 10 CPU-minute fine-tune: 0.25 -> 0.15, F1 on
        # the unseen test mosaic 0.40 -> 0.46 (5 minutes: 0.25 -> 0.3, 0.365 -> 0.363).
        conf_source = f"validation (the {conf_source}'s was {meta['conf']:g})"
        meta["conf"] = card["conf"] = val["best_conf"]
        _export(best_weights, output, meta)
    if "by_conf" in val:  # headline figures at the model's own threshold
        val = dict(val, conf=meta["conf"], **val["by_conf"][f"{meta['conf']:g}"])
        if base_card is not None:  # fine-tuning: did it help on this area at all?
            from .engine import FastSAMSegmenter

            with warnings.catch_warnings():  # its "checkpoints are code" notice came with training
                warnings.simplefilter("ignore", UntrustedCheckpointWarning)
                base_seg = FastSAMSegmenter(resolve_base(base)[0], **_as_segment(conf=base_conf))  # restricted
            before = validate_model(base_seg, summary.val_regions, gdf, confs=[base_conf])
            card["validation_base"] = before
            if val["f1"] < before["f1"] - 0.05:
                warnings.warn(
                    f"the fine-tuned model scores F1 {val['f1']:.2f} on the validation area, the base "
                    f"{before['f1']:.2f}: check that the labels line up with the imagery (footprints a few "
                    "metres off fail IoU 0.5) and that there are enough of them; the base may serve better",
                    FineTuneWarning, stacklevel=3)
    elif base_card is not None:  # the check against the base cannot run: say so
        warnings.warn("no validation area (no raster is three or more tiles wide, or val_fraction is 0), so the "
                      "fine-tuned model was not compared with its base; give a larger area or hold out a raster "
                      "(val_images) before trusting it", FineTuneWarning, stacklevel=3)
    card["validation"] = val
    return conf_source


def epochs_trained(best_weights: str | os.PathLike, planned: int) -> int:
    """How many epochs the run behind ``best_weights`` (``RUN/weights/best.pt``) trained: the rows
    of its ``results.csv``, one per finished epoch (a time budget stops early; the card must not
    claim the planned ``epochs``); ``planned`` when there is no log to count."""
    log = Path(best_weights).parent.parent / "results.csv"
    try:
        rows = [line for line in log.read_text().splitlines()[1:] if line.strip()]
    except OSError:
        return planned
    return len(rows) or planned


def _export(weights: Path, output: Path, meta: dict) -> None:
    """The slim checkpoint with ``meta`` at ``output``, written whole or not at all."""
    from .engine import export_checkpoint

    tmp = output.with_name(f".{output.name}.partial")
    export_checkpoint(weights, tmp, **meta)
    os.replace(tmp, output)


def training_gsd(summary, imgsz: int) -> dict:
    """``gsd`` and ``gsd_range`` for a model card: the ground m/px the network saw, each raster's
    geodesic GSD x its native tile / ``imgsz`` (median, and the range over the rasters); empty
    when no raster has a CRS."""
    seen = [g * t / imgsz for g, t in zip(summary.raster_gsd, summary.tile_sizes) if g is not None]
    if not seen:
        return {}
    return dict(gsd=round(statistics.median(seen), 4), gsd_range=[round(min(seen), 4), round(max(seen), 4)])


def _is_architecture(base: str | os.PathLike) -> bool:
    """``yolov8n-seg.yaml`` and the like: training from scratch, not from weights."""
    return str(base).lower().endswith((".yaml", ".yml"))


def _close_mosaic_record(args: dict) -> dict:
    """For the card: how many last epochs trained without mosaic, a share of a time-budgeted
    run's epochs or a count (ultralytics' default 10 when none was given)."""
    if args.get("close_mosaic_share") is not None:
        return {"share": args["close_mosaic_share"]}
    return {"epochs": int(args.get("close_mosaic", 10))}


def _base_card(base: str | os.PathLike) -> dict | None:
    """The card beside a weights base (the bundled model's, a fine-tuned model's); ``None`` for
    an architecture yaml or weights without one."""
    if os.fspath(base).endswith((".yaml", ".yml")):
        return None
    return model_card(base)


def _base_summary(base: str | os.PathLike, card: dict | None) -> dict | None:
    if os.fspath(base).endswith((".yaml", ".yml")):
        return None
    keep = ("name", "gsd", "gsd_range", "train_areas", "epochs", "sample_f1")
    return dict({k: card[k] for k in keep if card and k in card}, spec=os.fspath(base))


def _write_card(path: Path, card: dict) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(card, indent=2))
    os.replace(tmp, path)


CONF_GRID = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)
"""Confidence thresholds :func:`validate_model` scores (one segmentation, at the lowest)."""
MIN_VAL_BUILDINGS = 20
"""A validation area with fewer reference buildings does not move the model's threshold."""


def validate_model(model: str | os.PathLike | object, regions, labels: gpd.GeoDataFrame,
                   confs: Sequence[float] = CONF_GRID, near: float | None = None) -> dict:
    """F1@0.5 of ``model`` on validation ``regions`` at each confidence in ``confs``, through
    the real pipeline (the model's own tiling and ``--gsd auto``, as ``segment --model`` runs it).
    ``model``: weights (loaded with the lowest confidence), or a segmenter callable used as is.

    ``regions``: ``(raster path, (xmin, ymin, xmax, ymax) in the raster's CRS)`` pairs, as
    :attr:`~fastsam_geo.dataset.DatasetSummary.val_regions`; objects and footprints are counted
    where their centroid lies inside. Returns the pooled counts at the best-scoring confidence
    (``best_conf``; ties go to the one nearest ``near``, else the higher one) and ``by_conf`` for
    all of them."""
    from .engine import FastSAMSegmenter

    if not regions:
        return {"note": "no validation split (val_fraction 0, or no raster three or more tiles wide); "
                        "metrics not measured"}
    if callable(model):
        seg = model
    else:
        with warnings.catch_warnings():  # the model this run just wrote: no "checkpoints are code" notice
            warnings.simplefilter("ignore", UntrustedCheckpointWarning)
            seg = FastSAMSegmenter(model, trust=True, **_as_segment(conf=min(confs)))
    counts = {c: [0, 0, 0] for c in confs}
    for path, bounds in regions:
        crs = read_info(path).crs
        pred = segment_raster(path, segmenter=seg, bbox=bounds)
        ref = labels.to_crs(crs) if labels.crs != crs else labels
        ref = ref[ref.geometry.centroid.within(_box(bounds))]
        pred = pred[pred.geometry.centroid.within(_box(bounds))]
        for c in confs:
            r = evaluate(pred[pred["score"] >= c], ref, iou=0.5)
            counts[c] = [counts[c][0] + r.tp, counts[c][1] + r.fp, counts[c][2] + r.fn]
    rows = {c: _scores(*counts[c]) for c in confs}
    best = max(confs, key=lambda c: (rows[c]["f1"], -abs(c - near) if near is not None else c))
    return dict(iou=0.5, best_conf=best, **rows[best], by_conf={f"{c:g}": rows[c] for c in confs})


def _as_segment(**changes) -> dict:
    """The engine settings ``segment --model`` uses (``--gsd auto``: coarse tiles enlarged
    bicubically), with ``changes``: a model is validated on the pixels it will be run on."""
    return dict(Options().engine(), **changes)


def _scores(tp: int, fp: int, fn: int) -> dict:
    r = MatchResult(tp, fp, fn, 0.5, float("nan"))  # its precision / recall / F1 rules
    return dict(tp=tp, fp=fp, fn=fn, precision=round(r.precision, 4), recall=round(r.recall, 4), f1=round(r.f1, 4))


def _box(bounds):
    from shapely.geometry import box

    return box(*bounds)
