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
import os
import platform
import shutil
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
from .dataset import build_dataset, load_labels
from .errors import InputError, OutputError, UntrustedCheckpointWarning
from .raster import read_info


@dataclass(frozen=True)
class TrainResult:
    """Where the model and its card were written, and the card itself."""

    model: Path
    card: Path
    info: dict


def train(images: Sequence[str | os.PathLike], labels: gpd.GeoDataFrame | str | os.PathLike,
          output: str | os.PathLike, *, base: str = "yolov8n-seg.yaml", epochs: int = 100,
          imgsz: int = 512, tile_size: int = 1024, overlap: int = 256, batch: int = 8,
          device: str = "auto", val_fraction: float = 0.15, val_images: Sequence[str] | None = None,
          conf: float = 0.25, iou: float = 0.6, seed: int = 0, attribution: Sequence[str] = (),
          workdir: str | os.PathLike | None = None, name: str | None = None,
          hyp: dict | None = None) -> TrainResult:
    """Train a YOLOv8-seg building model on georeferenced ``images`` and footprint ``labels``.

    ``base``: ``yolov8n-seg.yaml`` (from scratch, ~6 MB model), another architecture yaml,
    or weights to fine-tune (``FastSAM-s.pt``, a previous model). ``tile_size`` pixels are
    resized to ``imgsz`` for the network, as at inference. Labels in another CRS are
    reprojected. ``conf``/``iou`` are the inference thresholds stored in the checkpoint.
    Raises :class:`InputError` for labels that are empty or miss every image.
    """
    t_start = time.perf_counter()
    output = Path(output)
    if output.suffix != ".pt":
        raise OutputError(f"{output}: the model file must end in .pt")
    if not output.resolve().parent.is_dir():
        raise OutputError(f"{output}: output folder {output.resolve().parent} does not exist")
    if not images:
        raise InputError("no training images given")
    infos = [read_info(p) for p in images]  # fails early on missing / non-georeferenced rasters
    from .engine.train import resolve_base

    with warnings.catch_warnings():  # (its notice comes once, when training loads it)
        warnings.simplefilter("ignore", UntrustedCheckpointWarning)
        resolve_base(base)  # a missing or unverified base fails now, not after the dataset is tiled
    gdf = load_labels(labels)
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=f".{output.stem}-train-",
                                                               dir=output.resolve().parent))
    try:
        summary = build_dataset(images, gdf, work / "dataset", tile_size=tile_size, overlap=overlap,
                                val_fraction=val_fraction, val_images=val_images, seed=seed)
        from .engine import export_checkpoint, train_yolo

        best = train_yolo(summary.yaml, work / "yolo", base=base, epochs=epochs, imgsz=imgsz, batch=batch,
                          device=device, seed=seed, **(hyp or {}))
        minutes = (time.perf_counter() - t_start) / 60
        meta = dict(name=name or output.stem, base=str(base), imgsz=imgsz, tile_size=tile_size,
                    conf=conf, iou=iou, classes=["building"], epochs=epochs)
        tmp = output.with_name(f".{output.name}.partial")
        export_checkpoint(best, tmp, **meta)
        os.replace(tmp, output)
        metrics = _validate(output, summary, images, infos, gdf, tile_size)
        card = dict(
            **meta, fastsam_geo=__version__, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            train_minutes=round(minutes, 1), python=platform.python_version(),
            data=[dict(path=os.fspath(p), crs=crs_name(i.crs), width=i.width, height=i.height,
                       resolution=list(i.res)) for p, i in zip(images, infos)],
            labels=dict(source=os.fspath(labels) if not isinstance(labels, gpd.GeoDataFrame) else "GeoDataFrame",
                        polygons=len(gdf), crs=crs_name(gdf.crs)),
            dataset=dict(train_tiles=summary.train_tiles, val_tiles=summary.val_tiles,
                         train_polygons=summary.train_polygons, val_polygons=summary.val_polygons,
                         split="spatial: whole rasters or bands of tile columns; train tiles touching "
                               "val tiles dropped"),
            validation=metrics, attribution=list(attribution),
        )
        card_path = output.with_suffix(".json")
        card_path.write_text(json.dumps(card, indent=2))
        return TrainResult(output, card_path, card)
    finally:
        if workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def _validate(model: Path, summary, images, infos, gdf: gpd.GeoDataFrame, tile_size: int) -> dict:
    """F1@0.5 etc. of the trained model on the validation areas, through the real pipeline."""
    from .engine import FastSAMSegmenter

    regions = summary.val_regions
    if not regions:
        return {"note": "no validation split (val_fraction=0); metrics not measured"}
    with warnings.catch_warnings():  # the model this run just wrote: no "checkpoints are code" notice
        warnings.simplefilter("ignore", UntrustedCheckpointWarning)
        seg = FastSAMSegmenter(model, trust=True)
    tp = fp = fn = 0
    for path, bounds in regions:
        info = infos[[os.fspath(p) for p in images].index(path)]
        pred = segment_raster(path, segmenter=seg, tile_size=tile_size, overlap=tile_size // 8, bbox=bounds)
        ref = gdf.to_crs(info.crs) if gdf.crs != info.crs else gdf
        ref = ref[ref.geometry.centroid.within(_box(bounds))]
        pred = pred[pred.geometry.centroid.within(_box(bounds))]
        r = evaluate(pred, ref, iou=0.5)
        tp, fp, fn = tp + r.tp, fp + r.fp, fn + r.fn
    p = tp / (tp + fp) if tp + fp else 0.0
    rc = tp / (tp + fn) if tp + fn else 0.0
    return dict(iou=0.5, tp=tp, fp=fp, fn=fn, precision=round(p, 4), recall=round(rc, 4),
                f1=round(2 * p * rc / (p + rc), 4) if p + rc else 0.0)


def _box(bounds):
    from shapely.geometry import box

    return box(*bounds)
