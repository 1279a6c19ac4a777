"""The public API: every shell (CLI, QGIS plugin, notebooks) calls these functions."""

from __future__ import annotations

import importlib
import os
import re
import warnings
from collections.abc import Sequence

import geopandas as gpd
import numpy as np
import shapely

from . import io
from .coords import bbox_to_pixels, crs_name, geodesic_areas, parse_crs
from .errors import EmptyResultWarning, InputError, ModelError, RasterError
from .pipeline import RunStats, SegmentFn, VectorOptions, run
from .raster import TileReader, read_info
from .tiling import plan_tiles
from .types import ProgressCallback, RasterInfo

COLUMNS = {"score": "float32", "area_m2": "float64"}


def load_segmenter(model: object = None, *, device: str = "auto", **kwargs) -> SegmentFn:
    """Resolve what ``segment_raster(segmenter=...)`` accepts into a callable segmenter.

    ``None`` -> the bundled default model; a string or path -> :class:`FastSAMSegmenter`
    on those weights (``"FastSAM-s.pt"``, ``"FastSAM-x.pt"`` or a local ``.pt``);
    ``"package.module:factory"`` -> ``factory()`` (a custom segmenter, also from the CLI);
    any callable -> itself. ``kwargs`` (imgsz, conf, iou, batch_size, ...) go to the engine.
    """
    if model is None:
        raise ModelError("no model given: pass a segmenter or weights (segmenter='FastSAM-s.pt' "
                         "or --model PATH)")
    if isinstance(model, str) and _FACTORY.match(model) and not os.path.exists(model):
        return _import_factory(model)
    if isinstance(model, str | os.PathLike):
        from .engine import FastSAMSegmenter  # torch + ultralytics load here, not at import

        return FastSAMSegmenter(model, device=device, **kwargs)
    if callable(model):
        return model  # type: ignore[return-value]
    raise InputError(f"segmenter must be None, a weights path or a callable, got {type(model).__name__}")


_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def _import_factory(spec: str) -> SegmentFn:
    module, _, name = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ModelError(f"cannot import segmenter factory {spec!r} ({exc})") from exc
    seg = factory()
    if not callable(seg):
        raise ModelError(f"{spec}() returned {type(seg).__name__}, not a callable segmenter")
    return seg


def raster_info(path: str | os.PathLike) -> RasterInfo:
    """Header of a georeferenced raster (CRS, size, bands, dtype, nodata)."""
    return read_info(path)


def segment_raster(
    path: str | os.PathLike,
    *,
    segmenter: object = None,
    tile_size: int = 1024,
    overlap: int = 128,
    bands: Sequence[int] | None = None,
    stretch: str = "auto",
    batch_size: int | None = None,
    device: str = "auto",
    min_area: int = 16,
    simplify: float = 0.0,
    bbox: tuple[float, float, float, float] | None = None,
    bbox_crs: object = None,
    output: str | os.PathLike | None = None,
    progress: ProgressCallback | None = None,
    stats: RunStats | None = None,
) -> gpd.GeoDataFrame:
    """Segment every object in a georeferenced raster into polygons in the raster's CRS.

    The raster is read tile by tile (``tile_size`` pixels, ``overlap`` shared between
    neighbours), so its size is limited by disk, not memory. Objects cut by tile seams
    come out once and whole.

    Parameters
    ----------
    segmenter: ``None`` (bundled building model), weights (``"FastSAM-s.pt"`` or a path),
        or a callable ``segmenter(images: list[np.ndarray]) -> list[MaskSet]`` taking
        ``(H, W, 3) uint8`` RGB tiles at native resolution.
    bands: 1-based bands read as R, G, B (one band is shown as grey); default: the RGB
        colour bands, else band 1.
    stretch: ``"auto"`` (one 2-98 % percentile stretch per raster unless the data are
        uint8), ``"percentile"`` or ``"none"``.
    min_area: drop masks of fewer pixels. ``simplify``: outline tolerance in pixels.
    bbox: only segment this ``(xmin, ymin, xmax, ymax)`` area, in ``bbox_crs`` (default: the
        raster's CRS); only the tiles it touches are read, and objects touching it returned.
    output: also write the result there (.gpkg, .parquet, .geojson, .fgb); the path is
        checked before any work, and written atomically.
    progress: called with :class:`~fastsam_geo.types.Progress` after each batch; return
        False to cancel.

    Returns
    -------
    GeoDataFrame with ``geometry`` (Polygon/MultiPolygon), ``score`` (model confidence,
    0-1) and ``area_m2`` (geodesic area in square metres), in the raster's CRS.
    An empty result is a valid empty frame, with an :class:`EmptyResultWarning`.
    """
    if output is not None:
        io.check_output(output)
    info = read_info(path)
    grid = plan_tiles(info.width, info.height, tile_size, overlap, info.transform)
    tiles, area, region = None, None, None
    if bbox is not None:
        tiles, area, region = _tiles_in_bbox(grid, info, bbox, bbox_crs)
    reader = TileReader(path, bands, stretch=stretch)
    seg = load_segmenter(segmenter, device=device)
    bs = batch_size or getattr(seg, "batch_size", None) or 4
    stats = stats if stats is not None else RunStats()
    geoms: list = []
    scores: list[float] = []
    with reader:
        for g, s in run(reader, grid, seg, batch_size=bs, progress=progress, stats=stats, tiles=tiles,
                        region=region, options=VectorOptions(min_area=min_area, simplify=simplify)):
            geoms.extend(g)
            scores.extend(s)
    if stats.tiles_skipped == stats.tiles:
        raise RasterError(f"{path}: every pixel {'in the bbox ' if area else ''}is nodata or masked; "
                          "nothing to segment")
    if area is not None and geoms:
        keep = shapely.intersects(np.asarray(geoms, dtype=object), area)
        geoms = [g for g, k in zip(geoms, keep) if k]
        scores = [s for s, k in zip(scores, keep) if k]
    gdf = to_frame(geoms, scores, info)
    if len(gdf) == 0:
        warnings.warn(f"{path}: no objects found; the result is an empty layer",
                      EmptyResultWarning, stacklevel=2)
    if output is not None:
        io.write(gdf, output)
    return gdf


def _tiles_in_bbox(grid, info: RasterInfo, bbox, bbox_crs):
    """The tiles touching a map bbox, and the bbox as a polygon in the raster CRS."""
    src_crs = info.crs if bbox_crs is None else parse_crs(bbox_crs)
    try:
        pix, area = bbox_to_pixels(bbox, src_crs, info.crs, info.transform, info.width, info.height)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if pix is None:
        b = ", ".join(f"{v:.6g}" for v in info.bounds)
        raise InputError(f"bbox {tuple(bbox)} ({crs_name(src_crs)}) lies outside the raster "
                         f"(bounds {b} in {crs_name(info.crs)})")
    return list(grid.intersecting(pix)), area, pix


def to_frame(geoms: list, scores: list[float], info: RasterInfo) -> gpd.GeoDataFrame:
    """Polygons in the raster CRS -> the output GeoDataFrame (score, area_m2, geometry)."""
    if not geoms:
        return io.empty_frame(info.crs, COLUMNS)
    arr = np.asarray(geoms, dtype=object)
    return gpd.GeoDataFrame(
        {"score": np.asarray(scores, dtype=np.float32), "area_m2": geodesic_areas(arr, info.crs)},
        geometry=gpd.GeoSeries(arr, crs=info.crs), crs=info.crs)


def evaluate(pred: gpd.GeoDataFrame | str | os.PathLike, gt: gpd.GeoDataFrame | str | os.PathLike, *,
             iou: float = 0.5, ignore_partial: bool = False, partial_column: str = "partial"):
    """Score predicted footprints against reference footprints (greedy one-to-one IoU matching).

    Both may be GeoDataFrames or vector file paths; predictions are reprojected to the
    reference CRS when they differ. With ``ignore_partial``, reference polygons flagged in
    ``partial_column`` (e.g. cut by the image edge) count neither way: they are not false
    negatives and predictions matching them are not false positives.
    Returns a :class:`~fastsam_geo.metrics.MatchResult` (tp, fp, fn, precision, recall,
    f1, mean_iou).
    """
    from .metrics import MatchResult, match

    pred_df = pred if isinstance(pred, gpd.GeoDataFrame) else io.read_vector(pred)
    gt_df = gt if isinstance(gt, gpd.GeoDataFrame) else io.read_vector(gt)
    if len(pred_df) and len(gt_df) and pred_df.crs != gt_df.crs:
        if pred_df.crs is None or gt_df.crs is None:
            raise InputError("cannot compare footprints: one of the layers has no CRS")
        pred_df = pred_df.to_crs(gt_df.crs)
    res = match(pred_df.geometry.values, gt_df.geometry.values, iou)
    if not ignore_partial or partial_column not in gt_df.columns:
        return res
    partial = gt_df[partial_column].fillna(0).astype(int).to_numpy() == 1
    pairs = tuple(p for p in res.pairs if not partial[p[1]])
    tp = len(pairs)
    # predictions matched to partial references are dropped from both counts
    return MatchResult(tp=tp, fp=len(pred_df) - len(res.pairs), fn=int((~partial).sum()) - tp,
                       iou_threshold=iou, mean_iou=float(np.mean([v for *_, v in pairs])) if pairs else 0.0,
                       pairs=pairs)
