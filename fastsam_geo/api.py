"""The public API: every shell (CLI, QGIS plugin, notebooks) calls these functions."""

from __future__ import annotations

import importlib
import os
import warnings
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

__all__ = ["Options", "SegmentedRaster", "edge_map", "evaluate", "evaluate_by_tile", "load_segmenter",
           "object_proposals", "prepare_reference", "raster_info", "segment_raster", "single_call_cache"]

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
    dst_crs: object = None,
    progress: bool | ProgressCallback | None = None,
    stats: RunStats | None = None,
    job_dir: str | os.PathLike | None = None,
    restart: bool = False,
    client: object = None,
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
    prompts: ``PointPrompt`` / ``BoxPrompt`` / ``TextPrompt`` objects in any CRS (or a
        GeoDataFrame / GeoSeries / vector file of points and polygons, read as
        :func:`~fastsam_geo.io.read_prompts` reads a file); then only
        the tiles they touch are segmented, and the result has one row per prompt object
        (``prompt_id``, ``prompt_type``, ``found``), see :mod:`fastsam_geo.prompts`.
    options: an :class:`~fastsam_geo.options.Options`; or give its fields as keywords:
        ``tile_size`` (1024), ``overlap`` (128), ``bands``, ``stretch``, ``device``, ``conf``,
        ``iou``, ``imgsz``, ``max_det``, ``half``, ``batch_size``, ``tta``, ``threads``,
        ``min_area`` (16 px), ``simplify`` (px), ``dedup`` (True), ``prefer``, ``gsd`` (``"auto"``:
        tiles sized so the network sees the raster at the model card's GSD), and the footprint
        clean-up after merging (ground units, :mod:`fastsam_geo.cleanup`): ``regularize``,
        ``simplify_m``, ``min_area_m2``, ``max_area_m2``, ``fill_holes_below_m2``. Every value is
        checked before the raster is read or a model loaded (:class:`~fastsam_geo.errors.InputError`).
    bbox: only segment this ``(xmin, ymin, xmax, ymax)`` area, in ``bbox_crs`` (default: the
        raster's CRS); only the tiles it touches (and the neighbours needed to finish the
        objects reaching out of it) are read; objects touching it are returned.
    cache: keep per-tile results for later calls: a folder, or ``"auto"`` for the user
        cache folder (see :class:`SegmentedRaster`). Default: none.
    text_embedder: for text prompts: a CLIP spec (``"ViT-B-32:/path/weights.bin"``) or an
        embedder object; default CLIP ViT-B-32 from the local cache.
    output: also write the result there (.gpkg, .parquet, .geojson, .fgb); the path is
        checked before any work, and written atomically. A GeoJSON file is RFC 7946 (WGS 84
        lon/lat) unless ``dst_crs`` says otherwise.
    dst_crs: reproject the result (the frame and ``output``) to this CRS (anything pyproj
        reads); checked before any work. ``area_m2`` does not change (it is geodesic).
    progress: ``True`` for a progress bar (tqdm; a widget in Jupyter), or a callable given a
        :class:`~fastsam_geo.types.Progress` after each batch: return False to cancel.
    job_dir: a folder recording each finished tile durably (see :mod:`fastsam_geo.jobs`):
        the same call after a crash or kill segments only the tiles not yet recorded and gives
        the same result. A job started with other options or on a changed raster is refused
        unless ``restart`` (which discards it).
    client: a ``dask.distributed.Client``: tiles are read and segmented on its workers (which
        must see ``path``: a shared file system, ``/vsicurl/`` or ``/vsis3/``), seams merged
        here as they come back (see :mod:`fastsam_geo.distributed`). ``segmenter`` must then
        be weights or a ``package.module:factory`` spec.

    Returns
    -------
    GeoDataFrame with ``geometry`` (MultiPolygon), ``score`` (model confidence, 0-1),
    ``area_m2`` (geodesic area in square metres), ``source`` (the raster path as given) and
    ``model`` (the segmenter's name), in the raster's CRS (or ``dst_crs``).
    An empty result is a valid empty frame, with an :class:`EmptyResultWarning`.
    """
    from . import io
    from .session import SegmentedRaster, single_call_cache

    options = Options.of(options, **kwargs)
    prompts = _as_prompts(prompts)
    if output is not None:
        io.check_output(output, inputs=[path], layer=layer)
    if prompts is not None and bbox is not None:
        raise InputError("give prompts or a bbox, not both")
    sr = SegmentedRaster(path, segmenter=segmenter, options=options, cache=single_call_cache(cache, bool(prompts)),
                         text_embedder=text_embedder, job_dir=job_dir, restart=restart, client=client)
    if prompts is not None:
        return sr.prompt(prompts, progress=progress, output=output, layer=layer, stats=stats, dst_crs=dst_crs)
    return sr.segment(bbox=bbox, bbox_crs=bbox_crs, progress=progress, output=output, layer=layer,
                      stats=stats, dst_crs=dst_crs)


def _as_prompts(prompts: object) -> list | None:
    """``prompts`` as a list of prompt objects: a list or one prompt as given, a GeoDataFrame,
    GeoSeries or vector file path through :func:`~fastsam_geo.io.prompts_from_frame`."""
    from .prompts import BoxPrompt, PointPrompt, TextPrompt

    if prompts is None:
        return None
    if isinstance(prompts, PointPrompt | BoxPrompt | TextPrompt):
        return [prompts]
    if isinstance(prompts, str | os.PathLike):
        from .io import read_prompts

        return read_prompts(prompts)
    gpd_mod = importlib.import_module("geopandas")
    if isinstance(prompts, gpd_mod.GeoDataFrame | gpd_mod.GeoSeries):
        from .io import prompts_from_frame

        return prompts_from_frame(prompts, "prompts")
    try:
        return list(prompts)
    except TypeError:
        raise InputError(f"prompts must be PointPrompt/BoxPrompt/TextPrompt objects, a GeoDataFrame or a vector "
                         f"file, got {type(prompts).__name__}") from None


def evaluate(pred: gpd.GeoDataFrame | str | os.PathLike, gt: gpd.GeoDataFrame | str | os.PathLike, *,
             iou: float = 0.5, ignore_partial: bool = False, partial_column: str = "partial",
             min_area: float = 0.0, raster: str | os.PathLike | None = None, clip: bool = True,
             min_ref_area: str | None = None, pred_layer: str | None = None, gt_layer: str | None = None):
    """Score predicted footprints against reference footprints (greedy one-to-one IoU matching).

    Both may be GeoDataFrames or vector file paths (``pred_layer`` / ``gt_layer``: the layer of a
    file with several, which is otherwise refused); predictions are reprojected to the
    reference CRS when they differ. Rows without a polygon (NULL or empty geometry, points,
    lines: a prompt run's not-found rows) are not buildings and count neither way
    (``result.pred_without_area``, ``result.ref_without_area``). With ``raster`` (the image the
    predictions come from) and ``clip`` (default), the reference is cut to the raster's valid footprint first: reference
    polygons with no part on valid pixels are not counted (``result.out_of_extent`` says how
    many), so an area-wide label layer scores like one made for the image. With
    ``ignore_partial``, reference polygons flagged in ``partial_column`` (e.g. cut by the image
    edge) count neither way: they are not false negatives and predictions matching them are
    not false positives. ``min_ref_area`` drops reference polygons smaller than this:
    ``"20px"`` (raster pixels; the SpaceNet protocol ignores buildings under 20 px; without
    ``raster`` the reference must be in pixel coordinates, no CRS) or ``"15m2"`` (ground m²);
    ``min_area`` does the same in square CRS units. Returns a
    :class:`~fastsam_geo.metrics.MatchResult` (tp, fp, fn, precision, recall, f1, mean_iou,
    and how the reference was prepared).
    """
    return _evaluate(pred, gt, iou=iou, ignore_partial=ignore_partial, partial_column=partial_column,
                     min_area=min_area, raster=raster, clip=clip, min_ref_area=min_ref_area,
                     pred_layer=pred_layer, gt_layer=gt_layer)[0]


def prepare_reference(gt: gpd.GeoDataFrame | str | os.PathLike, *, raster: str | os.PathLike | None = None,
                      clip: bool = True, min_ref_area: str | None = None,
                      min_area: float = 0.0, layer: str | None = None) -> tuple[gpd.GeoDataFrame, dict]:
    """The reference as :func:`evaluate` scores it (rows without a polygon dropped, clipped to
    ``raster``'s valid footprint, small polygons dropped), and ``{clipped, out_of_extent,
    below_min_area, ref_without_area}``. ``layer``: the layer of a file with several."""
    import geopandas as gpd
    import numpy as np
    import shapely

    from . import io
    from .coords import geodesic_areas
    from .options import parse_quantity
    from .raster import valid_footprint

    gt_df, without = _polygons(gt if isinstance(gt, gpd.GeoDataFrame) else
                               io.read_vector(gt, layer=layer, layer_option="--ref-layer / gt_layer="))
    notes = {"clipped": False, "out_of_extent": 0, "below_min_area": 0, "ref_without_area": without}
    info = read_info(raster) if raster is not None else None
    if info is not None and clip:
        if gt_df.crs is None and len(gt_df):
            raise InputError("cannot clip the reference to the raster: the reference has no CRS (or use --no-clip)")
        fp = valid_footprint(raster)
        step = max(info.width * abs(info.transform.a), info.height * abs(info.transform.e)) / 64
        fp = gpd.GeoSeries([shapely.segmentize(fp, step)], crs=info.crs)
        fp = fp.to_crs(gt_df.crs).iloc[0] if len(gt_df) else fp.iloc[0]
        geoms = shapely.make_valid(np.asarray(gt_df.geometry.values, dtype=object))
        inside = shapely.intersection(geoms, fp)
        keep = shapely.area(inside) > 0
        gt_df = gt_df[keep].copy()
        gt_df = gt_df.set_geometry(gpd.GeoSeries(inside[keep], index=gt_df.index, crs=gt_df.crs))
        notes.update(clipped=True, out_of_extent=int((~keep).sum()))
    if min_ref_area is not None and len(gt_df):
        value, unit = parse_quantity(min_ref_area, "min_ref_area", ("px", "m2"))
        if unit == "px" and info is not None and gt_df.crs is not None:
            areas = gt_df.to_crs(info.crs).geometry.area.to_numpy() / abs(info.transform.determinant)
        elif unit == "px":
            if gt_df.crs is not None:
                raise InputError("min_ref_area in px needs the raster (--raster), or a reference in pixel "
                                 "coordinates (no CRS)")
            areas = gt_df.geometry.area.to_numpy()
        else:
            if gt_df.crs is None:
                raise InputError("min_ref_area in m2 needs a reference with a CRS")
            areas = geodesic_areas(gt_df.geometry.values, gt_df.crs)
        small = areas < value
        gt_df = gt_df[~small]
        notes["below_min_area"] += int(small.sum())
    if min_area > 0 and len(gt_df):
        small = (gt_df.geometry.area < min_area).to_numpy()
        gt_df = gt_df[~small]
        notes["below_min_area"] += int(small.sum())
    return gt_df, notes


def _polygons(df: gpd.GeoDataFrame) -> tuple[gpd.GeoDataFrame, int]:
    """``df``'s rows whose geometry has an area (a footprint), and how many were dropped: NULL or
    empty geometries, points and lines are no building to match or miss."""
    import numpy as np
    import shapely

    geoms = np.asarray(df.geometry.values, dtype=object)
    ok = np.zeros(len(geoms), bool)
    present = ~shapely.is_missing(geoms)
    ok[present] = shapely.area(shapely.make_valid(geoms[present])) > 0
    return (df, 0) if ok.all() else (df[ok], int((~ok).sum()))


def _partial_flags(values, column: str):
    """A reference's ``column`` as bools: 1/0, true/false, yes/no (any case); empty is 0."""
    import numpy as np
    import pandas as pd

    words = {"1": True, "0": False, "true": True, "false": False, "yes": True, "no": False, "y": True,
             "n": False, "t": True, "f": False, "": False}
    out = np.zeros(len(values), bool)
    for i, v in enumerate(values):
        if v is None or (not isinstance(v, str) and pd.isna(v)):
            continue
        key = str(v).strip().lower()
        if isinstance(v, bool | np.bool_) or not isinstance(v, str):
            try:
                key = {1.0: "1", 0.0: "0"}[float(v)]
            except (KeyError, TypeError, ValueError):
                key = "?"
        if key not in words:
            raise InputError(f"reference column {column!r} has the value {v!r}; use 1/0, true/false or yes/no")
        out[i] = words[key]
    return out


def _evaluate(pred, gt, *, iou, ignore_partial=False, partial_column="partial", min_area=0.0, raster=None,
              clip=True, min_ref_area=None, pred_layer=None, gt_layer=None):
    """``(result, pred_df, gt_df, raw, partial)``: the result, the layers as matched (predictions
    in the reference CRS, the prepared reference), the matching before partial references
    were set aside, and which references are partial (bool (M,))."""
    import dataclasses

    import geopandas as gpd
    import numpy as np

    from . import io
    from .metrics import MatchResult, match

    if not (isinstance(iou, int | float) and 0 < iou <= 1):
        raise InputError(f"iou must be a number in (0, 1], got {iou!r}")
    pred_df, pred_without = _polygons(pred if isinstance(pred, gpd.GeoDataFrame) else
                                      io.read_vector(pred, layer=pred_layer, layer_option="--pred-layer / pred_layer="))
    gt_df, notes = prepare_reference(gt, raster=raster, clip=clip, min_ref_area=min_ref_area, min_area=min_area,
                                     layer=gt_layer)
    notes["pred_without_area"] = pred_without
    if len(pred_df) and len(gt_df) and pred_df.crs != gt_df.crs:
        if pred_df.crs is None or gt_df.crs is None:
            raise InputError("cannot compare footprints: one of the layers has no CRS")
        pred_df = pred_df.to_crs(gt_df.crs)
    raw = dataclasses.replace(match(pred_df.geometry.values, gt_df.geometry.values, iou), **notes)
    partial = np.zeros(len(gt_df), bool)
    if not ignore_partial:
        return raw, pred_df, gt_df, raw, partial
    if partial_column not in gt_df.columns:
        from .errors import InputWarning

        warnings.warn(f"ignore_partial: the reference has no {partial_column!r} column, so every reference "
                      "polygon counts", InputWarning, stacklevel=3)
        return raw, pred_df, gt_df, raw, partial
    partial = _partial_flags(gt_df[partial_column].tolist(), partial_column)
    pairs = tuple(p for p in raw.pairs if not partial[p[1]])
    tp = len(pairs)
    # predictions matched to partial references are dropped from both counts
    res = MatchResult(tp=tp, fp=len(pred_df) - len(raw.pairs), fn=int((~partial).sum()) - tp,
                      iou_threshold=iou, mean_iou=float(np.mean([v for *_, v in pairs])) if pairs else 0.0,
                      pairs=pairs, **notes)
    return res, pred_df, gt_df, raw, partial


def evaluate_by_tile(pred: gpd.GeoDataFrame | str | os.PathLike, gt: gpd.GeoDataFrame | str | os.PathLike,
                     raster: str | os.PathLike, *, tile_size: int = 1024, iou: float = 0.5,
                     ignore_partial: bool = False, partial_column: str = "partial", clip: bool = True,
                     min_ref_area: str | None = None, pred_layer: str | None = None, gt_layer: str | None = None):
    """:func:`evaluate`, split by tile: the raster cut into ``tile_size``-pixel squares from
    its top-left corner, each polygon in the tile holding its centroid (a match counts in its
    reference's tile). Returns a DataFrame, one row per tile with any polygon: ``row``,
    ``col``, ``tp``, ``fp``, ``fn``, ``precision``, ``recall``, ``f1``, ``mean_iou``; its
    totals are :func:`evaluate`'s."""
    import numpy as np
    import pandas as pd
    import shapely

    from .coords import map_to_pixel

    if not (isinstance(tile_size, int) and tile_size > 0):
        raise InputError(f"tile_size must be a positive whole number, got {tile_size!r}")
    info = read_info(raster)

    def cells(df):
        if not len(df):
            return []
        c = shapely.point_on_surface(np.asarray(df.to_crs(info.crs).geometry.values, dtype=object))
        col, row = map_to_pixel(shapely.get_x(c), shapely.get_y(c), info.transform)
        return list(zip((np.floor(row) // tile_size).astype(int).tolist(),
                        (np.floor(col) // tile_size).astype(int).tolist()))

    split = _split(pred, gt, cells, iou=iou, ignore_partial=ignore_partial, partial_column=partial_column,
                   raster=raster, clip=clip, min_ref_area=min_ref_area, pred_layer=pred_layer, gt_layer=gt_layer)
    rows = [dict(row=r, col=c, **_scores(*counts)) for (r, c), counts in sorted(split.items())]
    return pd.DataFrame(rows, columns=["row", "col", *_SCORE_COLUMNS])


_SCORE_COLUMNS = ("tp", "fp", "fn", "precision", "recall", "f1", "mean_iou")

#: Building size classes of :func:`evaluate_by_size`, ground m²: a hut or kiosk, a small house,
#: a house, a large house or block, a large building.
SIZE_CLASSES_M2 = (20.0, 50.0, 150.0, 500.0)


def _split(pred, gt, keys, **kw) -> dict:
    """:func:`_evaluate`'s counts split by cell: ``keys(df)`` gives each polygon's cell (predictions
    in the reference CRS, the prepared reference); see :func:`~fastsam_geo.metrics.by_cell`."""
    from .metrics import by_cell

    _, pred_df, gt_df, raw, partial = _evaluate(pred, gt, **kw)
    return by_cell(raw, keys(pred_df), keys(gt_df), partial)


def _scores(tp: int, fp: int, fn: int, mean_iou: float) -> dict:
    p = tp / (tp + fp) if tp + fp else 0.0
    rc = tp / (tp + fn) if tp + fn else 0.0
    return dict(tp=tp, fp=fp, fn=fn, precision=p, recall=rc, f1=2 * p * rc / (p + rc) if p + rc else 0.0,
                mean_iou=mean_iou)


def evaluate_by_size(pred: gpd.GeoDataFrame | str | os.PathLike, gt: gpd.GeoDataFrame | str | os.PathLike, *,
                     sizes: Sequence[float] | str = SIZE_CLASSES_M2, raster: str | os.PathLike | None = None,
                     iou: float = 0.5, ignore_partial: bool = False, partial_column: str = "partial",
                     clip: bool = True, min_ref_area: str | None = None, pred_layer: str | None = None,
                     gt_layer: str | None = None):
    """:func:`evaluate`, split by footprint size: what a model finds of huts, houses and large
    buildings. ``sizes`` are the class edges in ground square metres (ascending, > 0; numbers or
    a string ``"20,50"``), so ``(20, 50)`` makes the classes [0, 20), [20, 50) and [50, inf). A match and a missed
    reference count in the reference's class; a prediction that matches nothing in its own
    (COCO's rule for small/medium/large). Areas are geodesic (true m² in any CRS, Web Mercator
    included); both layers need a CRS. Returns a DataFrame, one row per class, empty classes
    included: ``min_m2``, ``max_m2``, ``tp``, ``fp``, ``fn``, ``precision``, ``recall``, ``f1``,
    ``mean_iou``; its totals are :func:`evaluate`'s."""
    import numpy as np
    import pandas as pd

    from .coords import geodesic_areas

    try:
        values = [v for v in sizes.replace(" ", "").split(",") if v] if isinstance(sizes, str) else sizes
        edges = np.asarray([float(v) for v in values], dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"sizes must be comma-separated square metres, got {sizes!r}") from None
    if not len(edges) or not np.all(np.isfinite(edges)) or edges[0] <= 0 or np.any(np.diff(edges) <= 0):
        raise InputError(f"sizes must be ascending positive square metres, got {sizes!r}")

    def classes(df):
        if not len(df):
            return []
        if df.crs is None:
            raise InputError("evaluate by size needs layers with a CRS (areas are ground square metres)")
        return np.searchsorted(edges, geodesic_areas(df.geometry.values, df.crs), side="right").tolist()

    split = _split(pred, gt, classes, iou=iou, ignore_partial=ignore_partial, partial_column=partial_column,
                   raster=raster, clip=clip, min_ref_area=min_ref_area, pred_layer=pred_layer, gt_layer=gt_layer)
    bounds = [0.0, *edges.tolist(), float("inf")]
    rows = [dict(min_m2=bounds[k], max_m2=bounds[k + 1], **_scores(*split.get(k, (0, 0, 0, 0.0))))
            for k in range(len(edges) + 1)]
    return pd.DataFrame(rows, columns=["min_m2", "max_m2", *_SCORE_COLUMNS])


def edge_map(path: str | os.PathLike, output: str | os.PathLike, *, segmenter: object = None,
             options: Options | None = None, progress: bool | ProgressCallback | None = None, **kwargs):
    """Write the edge map of raster ``path`` to ``output`` (.tif): Sobel edges of the per-pixel mask
    probability, uint8, one band, a Cloud-Optimised GeoTIFF with overviews on ``path``'s exact grid,
    tiles blended without seams (:mod:`fastsam_geo.edges`). Returns the output path."""
    from .edges import write_edges

    return write_edges(path, output, segmenter=segmenter, options=options, progress=progress, **kwargs)


def object_proposals(path: str | os.PathLike, output: str | os.PathLike | None = None, *, segmenter: object = None,
                     options: Options | None = None, layer: str | None = None,
                     progress: bool | ProgressCallback | None = None, **kwargs) -> gpd.GeoDataFrame:
    """Every candidate box in raster ``path`` (``score``, ``rank``, ``tiles``), georeferenced and
    de-duplicated across tile seams (:mod:`fastsam_geo.proposals`); written to ``output`` if given."""
    from .proposals import proposals

    return proposals(path, output, segmenter=segmenter, options=options, layer=layer, progress=progress, **kwargs)
