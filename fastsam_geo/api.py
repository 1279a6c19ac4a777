"""The public API: every shell (CLI, QGIS plugin, notebooks) calls these functions."""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .errors import InputError
from .options import Options
from .raster import read_info
from .types import ProgressCallback, RasterInfo

if TYPE_CHECKING:
    import geopandas as gpd

    from .models import load_segmenter
    from .pipeline import RunStats
    from .prompts import Prompt
    from .session import SegmentedRaster, single_call_cache

__all__ = ["Options", "SegmentedRaster", "evaluate", "load_segmenter", "raster_info", "segment_raster",
           "single_call_cache"]

_LAZY = {"SegmentedRaster": ".session", "single_call_cache": ".session", "load_segmenter": ".models",
         "RunStats": ".pipeline"}


def __getattr__(name: str):
    """Heavy names load on first use: ``fastsam-geo info`` needs no geopandas (~0.45 s to import)."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __package__), name)
    globals()[name] = value
    return value


def raster_info(path: str | os.PathLike) -> RasterInfo:
    """Header of a georeferenced raster (CRS, size, bands, dtype, nodata)."""
    return read_info(path)


def segment_raster(
    path: str | os.PathLike,
    *,
    segmenter: object = None,
    prompts: Sequence[Prompt] | None = None,
    options: Options | None = None,
    bbox: tuple[float, float, float, float] | None = None,
    bbox_crs: object = None,
    cache: str | os.PathLike | None = None,
    text_embedder: object = None,
    output: str | os.PathLike | None = None,
    layer: str | None = None,
    progress: bool | ProgressCallback | None = None,
    stats: RunStats | None = None,
    **kwargs,
) -> gpd.GeoDataFrame:
    """Segment a georeferenced raster into polygons in the raster's CRS: every object, or
    the objects selected by ``prompts``.

    The raster is read tile by tile (``tile_size`` pixels, ``overlap`` shared between
    neighbours), so its size is limited by disk, not memory. Objects cut by tile seams
    come out once and whole.

    Parameters
    ----------
    segmenter: ``None`` (the bundled building model), weights (``"FastSAM-s.pt"``,
        ``"FastSAM-x.pt"`` or a path), ``"package.module:factory"``, or a callable
        ``segmenter(images: list[np.ndarray]) -> list[MaskSet]`` taking ``(H, W, 3) uint8``
        RGB tiles at native resolution.
    prompts: ``PointPrompt`` / ``BoxPrompt`` / ``TextPrompt`` objects in any CRS; then only
        the tiles they touch are segmented, and the result has one row per prompt object
        (``prompt_id``, ``prompt_type``, ``found``), see :mod:`fastsam_geo.prompts`.
    options: an :class:`~fastsam_geo.options.Options`; or give its fields as keywords:
        ``tile_size`` (1024), ``overlap`` (128), ``bands``, ``stretch``, ``device``, ``conf``,
        ``iou``, ``imgsz``, ``max_det``, ``half``, ``batch_size``, ``tta``, ``threads``,
        ``min_area`` (16 px), ``simplify`` (px), ``dedup`` (True), ``prefer``, ``gsd`` (``"auto"``:
        tiles sized so the network sees the raster at the model card's GSD). Every value is
        checked before the raster is read or a model loaded (:class:`~fastsam_geo.errors.InputError`).
    bbox: only segment this ``(xmin, ymin, xmax, ymax)`` area, in ``bbox_crs`` (default: the
        raster's CRS); only the tiles it touches (and the neighbours needed to finish the
        objects reaching out of it) are read; objects touching it are returned.
    cache: keep per-tile results for later calls: a folder, or ``"auto"`` for the user
        cache folder (see :class:`SegmentedRaster`). Default: none.
    text_embedder: for text prompts: a CLIP spec (``"ViT-B-32:/path/weights.bin"``) or an
        embedder object; default CLIP ViT-B-32 from the local cache.
    output: also write the result there (.gpkg, .parquet, .geojson, .fgb); the path is
        checked before any work, and written atomically.
    progress: ``True`` for a progress bar (tqdm; a widget in Jupyter), or a callable given a
        :class:`~fastsam_geo.types.Progress` after each batch: return False to cancel.

    Returns
    -------
    GeoDataFrame with ``geometry`` (Polygon/MultiPolygon), ``score`` (model confidence,
    0-1) and ``area_m2`` (geodesic area in square metres), in the raster's CRS.
    An empty result is a valid empty frame, with an :class:`EmptyResultWarning`.
    """
    from . import io
    from .session import SegmentedRaster, single_call_cache

    options = Options.of(options, **kwargs)
    if output is not None:
        io.check_output(output, inputs=[path], layer=layer)
    if prompts is not None and bbox is not None:
        raise InputError("give prompts or a bbox, not both")
    sr = SegmentedRaster(path, segmenter=segmenter, options=options, cache=single_call_cache(cache, bool(prompts)),
                         text_embedder=text_embedder)
    if prompts is not None:
        return sr.prompt(prompts, progress=progress, output=output, layer=layer, stats=stats)
    return sr.segment(bbox=bbox, bbox_crs=bbox_crs, progress=progress, output=output, layer=layer,
                      stats=stats)


def evaluate(pred: gpd.GeoDataFrame | str | os.PathLike, gt: gpd.GeoDataFrame | str | os.PathLike, *,
             iou: float = 0.5, ignore_partial: bool = False, partial_column: str = "partial",
             min_area: float = 0.0):
    """Score predicted footprints against reference footprints (greedy one-to-one IoU matching).

    Both may be GeoDataFrames or vector file paths; predictions are reprojected to the
    reference CRS when they differ. With ``ignore_partial``, reference polygons flagged in
    ``partial_column`` (e.g. cut by the image edge) count neither way: they are not false
    negatives and predictions matching them are not false positives. Reference polygons
    smaller than ``min_area`` (square CRS units) are dropped first (SpaceNet drops < 20 px).
    Returns a :class:`~fastsam_geo.metrics.MatchResult` (tp, fp, fn, precision, recall,
    f1, mean_iou).
    """
    import geopandas as gpd
    import numpy as np

    from . import io
    from .metrics import MatchResult, match

    if not (isinstance(iou, int | float) and 0 < iou <= 1):
        raise InputError(f"iou must be a number in (0, 1], got {iou!r}")
    pred_df = pred if isinstance(pred, gpd.GeoDataFrame) else io.read_vector(pred)
    gt_df = gt if isinstance(gt, gpd.GeoDataFrame) else io.read_vector(gt)
    if len(pred_df) and len(gt_df) and pred_df.crs != gt_df.crs:
        if pred_df.crs is None or gt_df.crs is None:
            raise InputError("cannot compare footprints: one of the layers has no CRS")
        pred_df = pred_df.to_crs(gt_df.crs)
    if min_area > 0 and len(gt_df):
        gt_df = gt_df[gt_df.geometry.area >= min_area]
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
