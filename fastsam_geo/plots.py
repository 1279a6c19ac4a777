"""Figures of a raster and its objects, georeferenced: for notebooks, reports and PNG files.

Every function draws into ``ax`` (a new figure when ``None``) and returns the Axes; save
with :func:`save` (or ``ax.figure.savefig``). Coordinates are the raster's own CRS, whose
name and units label the axes; vector layers in another CRS are reprojected to it.

The image is never read whole: :func:`show_raster` reads the view (the raster, or ``bbox``)
through rasterio's ``out_shape``, at most ``max_size`` pixels along its long side (GDAL
takes overviews when the file has them), so a 16384² mosaic costs what a 1600² one does.
Bands and stretch are the pipeline's (:func:`~fastsam_geo.raster.choose_bands`, one
percentile stretch per raster for non-uint8 data): the picture is what the model saw.

matplotlib (and folium, for :func:`explore`) are imported inside the functions only, so
importing this module, like ``import fastsam_geo``, loads neither.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from affine import Affine
from pyproj import CRS
from rasterio.enums import Resampling
from rasterio.windows import Window

from .coords import bbox_to_pixels, crs_name, parse_crs, transform_xy
from .errors import InputError
from .prompts import BoxPrompt, PointPrompt
from .raster import choose_bands, compute_stretch, expands_palette, gdal_env, palette_lut, read_info
from .tiling import plan_tiles

OUTLINE = {"edgecolor": "#ffe000", "linewidth": 1.2}
"""Default style of object outlines (:func:`show_objects`): bright yellow, visible on imagery."""
EVAL_COLORS = {"tp": "#00c49a", "fp": "#ff5a1f", "fn": "#3d8bff", "ignored": "#e0e0e0"}
"""TP / FP / FN colours of :func:`show_evaluation`: green, orange-red and blue, after Okabe & Ito's
colour-blind-safe palette (lightened to stand out on imagery), told apart by line style too."""
PROMPT_COLORS = {"foreground": "#00e676", "background": "#ff1744", "box": "#00e5ff", "result": "#ffe000"}
WINDOW_COLORS = ("#f5f5f5", "#bdbdbd")
"""Tile windows of :func:`show_tiles` (alternating, thin); seams are dashed white."""
SEAM_OBJECT_COLOR = "#00e5ff"
"""Objects crossing a seam in :func:`show_tiles` (cyan: apart from yellow for any colour vision)."""
MAX_SIZE = 1600
"""Default decimation: at most this many image pixels along the long side of the view."""
_MAX_TILE_LABELS = 100


# -- the image ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class View:
    """What :func:`show_raster` drew: the raster's CRS, the view's bounds in it
    ``(xmin, ymin, xmax, ymax)``, its raster-pixel window ``(x0, y0, x1, y1)``, and the
    decimation factor of the image read (1: full resolution)."""

    crs: CRS
    bounds: tuple[float, float, float, float]
    window: tuple[int, int, int, int]
    scale: float


def read_image(raster: str | os.PathLike, *, bbox=None, bbox_crs=None, bands: Sequence[int] | None = None,
               max_size: int = MAX_SIZE, stretch: str = "auto") -> tuple[np.ndarray, Affine, View]:
    """The view of ``raster`` (all of it, or ``bbox`` in ``bbox_crs``, default the raster's CRS)
    as ``(H, W, 4) uint8`` RGBA (alpha 0 where GDAL's dataset mask says nodata), decimated to at
    most ``max_size`` px on the long side, with the affine transform of that image's pixels and
    the :class:`View`."""
    info = read_info(raster)
    view = _view(raster, bbox, bbox_crs)
    x0, y0, x1, y1 = view.window
    w, h = x1 - x0, y1 - y0
    scale = max(1.0, max(w, h) / max(1, int(max_size)))
    shape = (max(1, round(h / scale)), max(1, round(w / scale)))
    palette = expands_palette(info, bands)
    bands = choose_bands(info, bands)
    win = Window(x0, y0, w, h)
    with gdal_env(), rasterio.open(info.path) as src:
        if palette:
            idx = src.read(1, window=win, out_shape=shape, resampling=Resampling.nearest)
            rgba = palette_lut(src)[idx]
            data = rgba[..., :3].transpose(2, 0, 1)
        else:
            uniq = sorted(set(bands))
            data = src.read(uniq, window=win, out_shape=(len(uniq), *shape), resampling=Resampling.average)
            data = data[[uniq.index(b) for b in bands]]
        valid = src.dataset_mask(window=win, out_shape=shape, resampling=Resampling.nearest) > 0
        transform = src.window_transform(win) @ Affine.scale(w / shape[1], h / shape[0])
    rgb = compute_stretch(info.path, bands, mode=stretch, palette=palette).apply(data)
    image = np.dstack([rgb.transpose(1, 2, 0), np.where(valid, 255, 0).astype(np.uint8)])
    return image, transform, dataclasses.replace(view, scale=scale)


def show_raster(raster: str | os.PathLike, ax=None, *, bbox=None, bbox_crs=None, bands: Sequence[int] | None = None,
                max_size: int = MAX_SIZE, stretch: str = "auto", title: str | None = None, image: bool = True):
    """Draw ``raster`` (or its ``bbox``) decimated (see :func:`read_image`) in its own CRS, with
    axes labelled by the CRS, and return the Axes. ``image=False`` draws nothing but sets the
    view and labels (to overlay on an axes that already shows the image)."""
    view = _view(raster, bbox, bbox_crs)
    if ax is None:
        ax = _new_axes(view.bounds)
    if image:
        from rasterio.plot import show

        arr, transform, view = read_image(raster, bbox=bbox, bbox_crs=bbox_crs, bands=bands, max_size=max_size,
                                          stretch=stretch)
        if transform.b == 0 and transform.d == 0:  # north-up: an extent is exact
            show(arr.transpose(2, 0, 1), transform=transform, ax=ax, interpolation="nearest")
        else:  # rotated or sheared: the image's own affine transform
            import matplotlib.transforms as mtransforms

            im = ax.imshow(arr, extent=(0, arr.shape[1], arr.shape[0], 0), interpolation="nearest")
            t = transform
            im.set_transform(mtransforms.Affine2D([[t.a, t.b, t.c], [t.d, t.e, t.f], [0, 0, 1]]) + ax.transData)
    _frame(ax, view, title)
    return ax


# -- objects --------------------------------------------------------------------------------------

def show_objects(raster: str | os.PathLike, objects, ax=None, *, bbox=None, bbox_crs=None,
                 bands: Sequence[int] | None = None, max_size: int = MAX_SIZE, title: str | None = None,
                 label: str = "objects", image: bool = True, **style):
    """Draw ``raster`` with the outlines of ``objects`` (a GeoDataFrame, GeoSeries or vector
    file, any CRS; empty geometries, e.g. prompts that found nothing, are left out) on top.

    ``style`` goes to matplotlib (default :data:`OUTLINE`: yellow outlines, no fill). The
    outlines form one collection labelled ``label`` (for the legend); the title defaults to
    ``"<n> <label>"`` counting the objects drawn in the view. Returns the Axes.
    """
    ax = show_raster(raster, ax, bbox=bbox, bbox_crs=bbox_crs, bands=bands, max_size=max_size, image=image)
    view = _view(raster, bbox, bbox_crs)
    geoms = _in_view(_geoms(objects, view.crs), view)
    _draw(ax, geoms, label=label, **({"facecolor": "none"} | OUTLINE | style))
    ax.set_title(title if title is not None else f"{len(geoms)} {label}")
    _limits(ax, view)
    return ax


def show_evaluation(raster: str | os.PathLike, pred, ref, result=None, ax=None, *, iou: float | None = None,
                    ignore_partial: bool = False, partial_column: str = "partial", bbox=None, bbox_crs=None,
                    colors: dict | None = None, max_size: int = MAX_SIZE, title: str | None = None,
                    legend: bool = True, image: bool = True):
    """Draw an evaluation of predicted footprints ``pred`` against reference footprints ``ref``
    (GeoDataFrames or vector files, any CRS) on ``raster``: true positives (matched predictions,
    filled), false positives (unmatched predictions, filled) and false negatives (missed
    references, dashed outlines) in three colour-blind-safe colours (:data:`EVAL_COLORS`), and,
    with ``ignore_partial``, references flagged in ``partial_column`` in grey (they count
    neither way). The legend gives the counts; the title precision, recall and F1.

    ``result``: the :class:`~fastsam_geo.metrics.MatchResult` of
    ``fastsam_geo.evaluate(pred, ref, iou=..., ignore_partial=...)`` for these layers, or
    ``None`` to compute it (``iou`` default 0.5). A result whose counts do not fit the layers
    drawn (other data, or another ``ignore_partial``) is an :class:`InputError`: the picture
    always shows the numbers it claims. Counts are of the whole layers; ``bbox`` only zooms.
    Returns the Axes (``ax.figure.savefig("eval.png")`` or :func:`save` writes a PNG).
    """
    from .api import evaluate

    colors = EVAL_COLORS | (colors or {})
    threshold = result.iou_threshold if result is not None else (0.5 if iou is None else iou)
    if result is not None and iou is not None and not math.isclose(iou, threshold):
        raise InputError(f"iou={iou} but the result was computed at IoU {threshold}")
    pred_df, ref_df = _frame_of(pred), _frame_of(ref)
    computed = evaluate(pred_df, ref_df, iou=threshold, ignore_partial=ignore_partial, partial_column=partial_column)
    if result is None:
        result = computed
    elif (result.tp, result.fp, result.fn) != (computed.tp, computed.fp, computed.fn):
        raise InputError(f"the result (TP {result.tp}, FP {result.fp}, FN {result.fn}) is not the evaluation of "
                         f"these layers with ignore_partial={ignore_partial} (TP {computed.tp}, FP {computed.fp}, "
                         f"FN {computed.fn}); pass the same options as to evaluate()")
    kinds = _classify(pred_df, ref_df, threshold, ignore_partial, partial_column)
    counts = {k: len(v) for k, v in kinds.items()}
    if (counts["tp"], counts["fp"], counts["fn"]) != (result.tp, result.fp, result.fn):  # pragma: no cover
        raise AssertionError(f"evaluation drawn {counts} differs from evaluate()'s {result}")

    from matplotlib.colors import to_rgba
    from matplotlib.patches import Patch

    ax = show_raster(raster, ax, bbox=bbox, bbox_crs=bbox_crs, max_size=max_size, image=image)
    view = _view(raster, bbox, bbox_crs)
    pred_geoms = _geoms(pred_df, view.crs, keep_empty=True)  # positions are evaluate()'s indexes
    ref_geoms = _geoms(ref_df, view.crs, keep_empty=True)
    _draw(ax, pred_geoms[kinds["ignored_pred"]], facecolor=to_rgba(colors["ignored"], 0.3),
          edgecolor=colors["ignored"], linewidth=1.0, label="ignored_pred")
    names = {"tp": "TP: matched", "fp": "FP: no reference", "fn": "FN: missed reference",
             "ignored": "ignored: reference cut by the edge"}
    handles = []
    for kind, geoms, fill, linewidth, linestyle in (("ignored", ref_geoms, False, 1.6, ":"),
                                                   ("fn", ref_geoms, False, 1.8, "--"),
                                                   ("fp", pred_geoms, True, 1.4, "-"),
                                                   ("tp", pred_geoms, True, 1.4, "-")):
        c = colors[kind]
        face = to_rgba(c, 0.35) if fill else "none"
        _draw(ax, geoms[kinds[kind]], facecolor=face, edgecolor=c, linewidth=linewidth, linestyle=linestyle,
              label=kind)
        if kind == "ignored":
            if not counts["ignored"]:
                continue
            c, face = "#707070", to_rgba(colors["ignored"], 0.6)  # light grey reads on imagery, not on white
        handles.append(Patch(edgecolor=c, facecolor=face, linestyle=linestyle, linewidth=linewidth,
                             label=f"{names[kind]} ({counts[kind]})"))
    if legend:
        ax.legend(handles=handles[::-1], loc="upper right", fontsize=9, framealpha=0.85,
                  title=f"IoU ≥ {threshold:g}", title_fontsize=9)
    ax.set_title(title if title is not None else
                 f"precision {result.precision:.3f}  recall {result.recall:.3f}  F1 {result.f1:.3f}")
    _limits(ax, view)
    return ax


def _classify(pred_df, ref_df, iou: float, ignore_partial: bool, partial_column: str) -> dict[str, np.ndarray]:
    """Positions of TP and FP predictions, FN and ignored (partial) references, and the
    predictions matched to ignored references, as :func:`fastsam_geo.evaluate` counts them:
    matched once without the partial rule, then pairs with a partial reference dropped from
    both sides (those predictions are neither TP nor FP)."""
    from .api import evaluate

    full = evaluate(pred_df, ref_df, iou=iou)
    partial = np.zeros(len(ref_df), bool)
    if ignore_partial and partial_column in getattr(ref_df, "columns", ()):
        partial = ref_df[partial_column].fillna(0).astype(int).to_numpy() == 1
    matched_p = np.array([p for p, _, _ in full.pairs], int)
    matched_g = np.array([g for _, g, _ in full.pairs], int)
    tp = np.sort(matched_p[~partial[matched_g]]) if len(matched_p) else np.zeros(0, int)
    fp = np.setdiff1d(np.arange(len(pred_df)), matched_p)
    fn = np.setdiff1d(np.flatnonzero(~partial), matched_g)
    ignored_pred = np.sort(matched_p[partial[matched_g]]) if len(matched_p) else np.zeros(0, int)
    return {"tp": tp, "fp": fp, "fn": fn, "ignored": np.flatnonzero(partial), "ignored_pred": ignored_pred}


# -- tiles ----------------------------------------------------------------------------------------

def show_tiles(raster: str | os.PathLike, tile_size: int = 1024, overlap: int = 128, ax=None, *, bbox=None,
               bbox_crs=None, objects=None, labels: bool | None = None, max_size: int = MAX_SIZE,
               title: str | None = None, image: bool = True):
    """Draw the tile grid ``plan_tiles`` lays over ``raster``: each tile's window (thin
    light outlines, alternating shades: neighbours overlap by ``overlap`` px) and the seams, the
    boundaries between tile cores where merging decides which tile owns a pixel (dashed white).
    Tiles are labelled ``row,col`` when ``labels`` (default: when at most 100 are in view).

    ``objects`` (GeoDataFrame or file): also outline them, those crossing a seam in thick cyan,
    the others as :func:`show_objects` does, with their counts in the legend: an object cut
    by a seam that comes out as one polygon was merged whole. Returns the Axes.
    """
    info = read_info(raster)
    grid = plan_tiles(info.width, info.height, tile_size, overlap, info.transform)
    ax = show_raster(raster, ax, bbox=bbox, bbox_crs=bbox_crs, max_size=max_size, image=image)
    view = _view(raster, bbox, bbox_crs)
    tiles = list(grid.intersecting(view.window))
    t = info.transform
    windows = gpd.GeoSeries([_pixel_box(tile.box, t) for tile in tiles], crs=info.crs)
    even = np.array([(tile.row + tile.col) % 2 == 0 for tile in tiles], bool)
    for sel, colour in ((even, WINDOW_COLORS[0]), (~even, WINDOW_COLORS[1])):
        _draw(ax, windows.values[sel], facecolor="none", edgecolor=colour, linewidth=0.8, label="tiles")
    seams = _seams(tiles, t)
    from matplotlib.collections import LineCollection

    lines = LineCollection([np.asarray(s.coords) for s in seams], colors="white", linewidths=1.6,
                           linestyles=[(0, (5, 3))], label="seams", zorder=4)
    lines.set_gid("seams")
    ax.add_collection(lines, autolim=False)
    if labels if labels is not None else len(tiles) <= _MAX_TILE_LABELS:
        vx0, vy0, vx1, vy1 = view.window
        for tile in tiles:  # at the middle of the tile's core, where it lies in view
            c0, r0, c1, r1 = tile.core
            cx, cy = (max(c0, vx0) + min(c1, vx1)) / 2, (max(r0, vy0) + min(r1, vy1)) / 2
            if not (c0 < vx1 and c1 > vx0 and r0 < vy1 and r1 > vy0):
                continue
            ax.text(*(t @ (cx, cy)), f"{tile.row},{tile.col}", ha="center", va="center", fontsize=8,
                    color="white", clip_on=True, zorder=6,
                    bbox=dict(boxstyle="round,pad=0.2", facecolor="black", alpha=0.55, linewidth=0))
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="#9e9e9e", lw=1, label=f"tile windows ({tile_size} px, overlap {overlap})"),
               Line2D([], [], color="#9e9e9e", lw=1.6, ls=(0, (5, 3)), label="seams (core boundaries)")]
    if objects is not None:
        geoms = _in_view(_geoms(objects, info.crs), view)
        line = shapely.union_all(seams) if len(seams) else shapely.LineString()
        cross = shapely.intersects(geoms, line) if len(geoms) else np.zeros(0, bool)
        _draw(ax, geoms[~cross], facecolor="none", label="objects", **OUTLINE)
        _draw(ax, geoms[cross], facecolor="none", edgecolor=SEAM_OBJECT_COLOR, linewidth=2.2, label="across a seam")
        handles += [Line2D([], [], color=OUTLINE["edgecolor"], lw=1.2, label=f"objects ({int((~cross).sum())})"),
                    Line2D([], [], color=SEAM_OBJECT_COLOR, lw=2.2,
                           label=f"objects across a seam ({int(cross.sum())})")]
    legend = ax.legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.85)
    legend.get_frame().set_facecolor("#f4f4f4")
    ax.set_title(title if title is not None else f"{len(grid)} tiles ({grid.n_rows} x {grid.n_cols}), "
                                                 f"{len(tiles)} in view")
    _limits(ax, view)
    return ax


def _seams(tiles, t: Affine) -> np.ndarray:
    """The inner core boundaries of ``tiles`` as line segments in map coordinates."""
    segs = []
    for tile in tiles:
        c0, r0, c1, r1 = tile.core
        if c0 > 0:
            segs.append(((c0, r0), (c0, r1)))
        if r0 > 0:
            segs.append(((c0, r0), (c1, r0)))
    return np.array([shapely.LineString([t @ a, t @ b]) for a, b in segs], dtype=object)


# -- prompts --------------------------------------------------------------------------------------

def show_prompts(raster: str | os.PathLike, prompts: Sequence, result=None, ax=None, *, bbox=None, bbox_crs=None,
                 pad: float = 48, min_size: float = 200, numbers: bool = True, max_size: int = MAX_SIZE,
                 title: str | None = None):
    """Draw point and box prompts (any CRS, reprojected to the raster's) on ``raster``:
    foreground points as green stars, background points (``label=0``) as red crosses, boxes as
    dashed cyan outlines, each numbered by its index in ``prompts`` (= ``prompt_id``). Text
    prompts have no place and are skipped.

    ``result`` (what ``SegmentedRaster.prompt`` / ``segment_raster(prompts=...)`` returned):
    also draw the selected objects (filled yellow). ``ax``: one Axes, or two for the prompts
    alone on the left and with the result on the right; ``None``: a new figure, of two panels
    when ``result`` is given. Without ``bbox`` the view fits the prompts and the result, ``pad``
    raster pixels around them and at least ``min_size`` pixels across. Returns the Axes (or
    the pair).
    """
    info = read_info(raster)
    pts, boxes = _prompt_geometry(prompts, info.crs)
    found = _geoms(result, info.crs) if result is not None else np.zeros(0, dtype=object)
    if bbox is None:
        bbox = _fit([g for _, _, g in pts] + [g for _, g in boxes] + list(found), info, pad, min_size)
        bbox_crs = None
    pair = (ax is None and result is not None) or isinstance(ax, Sequence | np.ndarray)
    if ax is None:
        ax = _new_axes(_view(raster, bbox, bbox_crs).bounds, panels=2 if pair else 1)
    axes = list(np.ravel(ax)) if pair else [ax]
    for k, a in enumerate(axes):
        show_raster(raster, a, bbox=bbox, bbox_crs=bbox_crs, max_size=max_size)
        with_result = result is not None and (not pair or k == 1)
        if with_result:
            _draw(a, found, facecolor=(1.0, 0.88, 0.0, 0.35), edgecolor=PROMPT_COLORS["result"], linewidth=1.6,
                  label="result")
        _draw(a, np.array([g for _, g in boxes], dtype=object), facecolor="none", edgecolor=PROMPT_COLORS["box"],
              linewidth=1.8, linestyle="--", label="boxes")
        for fg in (1, 0):
            sel = [(i, g) for i, lab, g in pts if lab == fg]
            if sel:
                xs, ys = [g.x for _, g in sel], [g.y for _, g in sel]
                kind = "foreground" if fg else "background"
                a.scatter(xs, ys, s=190 if fg else 110, marker="*" if fg else "X", c=PROMPT_COLORS[kind],
                          edgecolors="black", linewidths=0.9, zorder=5, label=f"{kind} points")
        if numbers:
            for i, g in [(i, g) for i, _, g in pts] + [(i, shapely.Point(g.bounds[0], g.bounds[3])) for i, g in boxes]:
                a.annotate(str(i), (g.x, g.y), xytext=(6, 6), textcoords="offset points", fontsize=9,
                           color="white", fontweight="bold", zorder=6,
                           bbox=dict(boxstyle="round,pad=0.15", facecolor="black", alpha=0.6, linewidth=0))
        n = int(np.sum([not g.is_empty for g in found])) if with_result else None
        a.set_title(title if title is not None else
                    (f"{len(pts) + len(boxes)} prompts" if n is None else f"result: {n} objects"))
        _limits(a, _view(raster, bbox, bbox_crs))
    return tuple(axes) if pair else axes[0]


def _prompt_geometry(prompts: Sequence, crs: CRS) -> tuple[list, list]:
    """Points ``[(index, label, Point)]`` and boxes ``[(index, Polygon)]`` in ``crs``."""
    pts, boxes = [], []
    for i, p in enumerate(prompts):
        src = crs if getattr(p, "crs", None) is None else parse_crs(p.crs)
        if isinstance(p, PointPrompt):
            x, y = transform_xy([p.x], [p.y], src, crs)
            pts.append((i, p.label, shapely.Point(x[0], y[0])))
        elif isinstance(p, BoxPrompt):
            ring = shapely.segmentize(shapely.box(p.xmin, p.ymin, p.xmax, p.ymax),
                                      max(p.xmax - p.xmin, p.ymax - p.ymin) / 16)
            xy = np.asarray(ring.exterior.coords)
            x, y = transform_xy(xy[:, 0], xy[:, 1], src, crs)
            boxes.append((i, shapely.Polygon(np.column_stack([x, y]))))
    return pts, boxes


def _fit(geoms: list, info, pad: float, min_size: float) -> tuple[float, float, float, float]:
    """A view around ``geoms`` (raster CRS), ``pad`` px around, ``min_size`` px across at least,
    inside the raster."""
    geoms = [g for g in geoms if g is not None and not g.is_empty]
    if not geoms:
        return info.bounds
    xmin, ymin, xmax, ymax = shapely.total_bounds(np.asarray(geoms, dtype=object))
    rx, ry = info.res
    half_w = max((xmax - xmin) / 2 + pad * rx, min_size * rx / 2)
    half_h = max((ymax - ymin) / 2 + pad * ry, min_size * ry / 2)
    cx, cy = (xmin + xmax) / 2, (ymin + ymax) / 2
    bx0, by0, bx1, by1 = info.bounds
    return (max(bx0, cx - half_w), max(by0, cy - half_h), min(bx1, cx + half_w), min(by1, cy + half_h))


# -- interactive ----------------------------------------------------------------------------------

def explore(raster: str | os.PathLike, objects=None, *, online: bool | None = None, max_size: int = 1024,
            tiles: str | None = "OpenStreetMap", color: str = OUTLINE["edgecolor"]):
    """An interactive folium map: ``raster`` (decimated, in Web Mercator) as an image layer over
    a ``tiles`` basemap, with the outlines of ``objects`` (score and area in a tooltip) and a
    layer switch.

    Folium's page loads Leaflet from a CDN, so without internet it would be a blank box.
    Without folium, or offline (``online=False``, or ``None`` and the CDN unreachable within
    2 s), this falls back to the static :func:`show_objects` picture, returned as a matplotlib
    ``Figure`` (not registered with pyplot: a notebook shows it once, ``.savefig`` writes it);
    otherwise returns the ``folium.Map``. Either way, make it a notebook cell's last value.
    """
    try:
        import folium
    except ImportError:
        folium = None
    if folium is None or not (online if online is not None else is_online()):
        from matplotlib.figure import Figure

        view = _view(raster, None, None)
        fig = Figure(figsize=_figsize(view.bounds), layout="constrained")
        ax = show_objects(raster, objects if objects is not None else gpd.GeoSeries([]), fig.add_subplot(),
                          max_size=max(max_size, MAX_SIZE))
        ax.set_title(f"{ax.get_title()} (static: {'folium is not installed' if folium is None else 'offline'})")
        return fig
    from rasterio.warp import Resampling as WarpResampling
    from rasterio.warp import calculate_default_transform, reproject

    arr, transform, view = read_image(raster, max_size=max_size)
    merc = CRS.from_epsg(3857)
    h, w = arr.shape[:2]
    if view.crs != merc:
        dst_t, dw, dh = calculate_default_transform(view.crs, merc, w, h, *rasterio.transform.array_bounds(
            h, w, transform))
        out = np.zeros((4, dh, dw), np.uint8)
        reproject(arr.transpose(2, 0, 1), out, src_transform=transform, src_crs=view.crs, dst_transform=dst_t,
                  dst_crs=merc, resampling=WarpResampling.bilinear)
        arr, transform, h, w = out.transpose(1, 2, 0), dst_t, dh, dw
    west, south, east, north = rasterio.transform.array_bounds(h, w, transform)
    (lon0, lon1), (lat0, lat1) = transform_xy([west, east], [south, north], merc, CRS.from_epsg(4326))
    m = folium.Map(tiles=tiles, control_scale=True, max_zoom=22)
    folium.raster_layers.ImageOverlay(np.ascontiguousarray(arr), bounds=[[lat0, lon0], [lat1, lon1]],
                                      name=os.path.basename(os.fspath(raster)), mercator_project=False).add_to(m)
    if objects is not None:
        gdf = _frame_of(objects)
        gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty].to_crs(4326)
        fields = [c for c in ("score", "area_m2", "prompt_id") if c in gdf.columns]
        folium.GeoJson(gdf[[*fields, "geometry"]].to_json(), name=f"objects ({len(gdf)})",
                       style_function=lambda _: {"color": color, "weight": 2, "fillOpacity": 0.0},
                       tooltip=folium.GeoJsonTooltip(fields=fields) if fields else None).add_to(m)
    folium.LayerControl().add_to(m)
    m.fit_bounds([[lat0, lon0], [lat1, lon1]])
    return m


def is_online(host: str = "cdn.jsdelivr.net", port: int = 443, timeout: float = 2.0) -> bool:
    """Whether ``host`` (Leaflet's CDN) accepts a connection within ``timeout`` seconds (name
    lookup included, which sockets alone do not time out)."""
    import socket

    ok: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    th = threading.Thread(target=probe, daemon=True)
    th.start()
    th.join(timeout)
    return bool(ok)


def save(ax, path: str | os.PathLike, *, dpi: int = 110, close: bool = True) -> str:
    """Write the figure of ``ax`` (an Axes, a pair, or a Figure) to ``path`` (PNG, SVG, PDF by
    suffix), tightly cropped, and close it (``close``) so scripts and the CLI do not pile up
    figures. Written atomically: an interrupted save leaves no half-written picture. Returns
    the path."""
    from pathlib import Path

    from .atomic import commit, discard, reserve

    fig = ax if hasattr(ax, "savefig") else np.ravel(ax)[0].figure
    tmp = reserve(Path(path))
    try:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=Path(path).suffix.lstrip(".").lower() or None)
        commit(tmp, Path(path))
    except BaseException:
        discard(tmp)
        raise
    if close:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return os.fspath(path)


# -- helpers --------------------------------------------------------------------------------------

def _view(raster, bbox, bbox_crs) -> View:
    """The :class:`View` of ``raster`` or its ``bbox`` (without reading pixels)."""
    info = read_info(raster)
    window = (0, 0, info.width, info.height)
    if bbox is not None:
        src_crs = info.crs if bbox_crs is None else parse_crs(bbox_crs)
        try:
            window, _ = bbox_to_pixels(bbox, src_crs, info.crs, info.transform, info.width, info.height)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        if window is None:
            raise InputError(f"bbox {tuple(bbox)} ({crs_name(src_crs)}) lies outside {info.path}")
    x0, y0, x1, y1 = window
    xs, ys = zip(*(info.transform @ c for c in ((x0, y0), (x1, y0), (x0, y1), (x1, y1))))
    return View(info.crs, (min(xs), min(ys), max(xs), max(ys)), window, 1.0)


def _figsize(bounds, panels: int = 1) -> tuple[float, float]:
    """A figure size fitting ``panels`` views of ``bounds`` side by side (inches)."""
    w, h = bounds[2] - bounds[0], bounds[3] - bounds[1]
    width = 9.0 if panels == 1 else 6.0 * panels
    return width, min(12.0, max(3.5, (width / panels) * h / max(w, 1e-12) + 1.0))


def _new_axes(bounds, panels: int = 1):
    """New Axes through pyplot (so Jupyter shows the figure), sized for the view."""
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(1, panels, figsize=_figsize(bounds, panels), layout="constrained")
    return ax


def axis_labels(crs: CRS) -> tuple[str, str]:
    """x and y axis labels naming ``crs`` and its units, e.g.
    ``("Easting (m), EPSG:3857 WGS 84 / Pseudo-Mercator", "Northing (m)")``."""
    axes = {a.direction: a for a in crs.axis_info}
    units = {"metre": "m", "degree": "°", "US survey foot": "ftUS", "foot": "ft"}

    def label(names, default):
        a = next((axes[d] for d in names if d in axes), None)
        if a is None:
            return default
        return f"{a.name} ({units.get(a.unit_name, a.unit_name)})"

    x = label(("east", "west"), "x")
    y = label(("north", "south"), "y")
    name = crs_name(crs)
    return (f"{x}, {name}" + (f" {crs.name}" if name != crs.name else ""), y)


def _frame(ax, view: View, title: str | None) -> None:
    from matplotlib.ticker import MaxNLocator, ScalarFormatter

    class FitLocator(MaxNLocator):
        """x ticks spaced for labels as long as the view's coordinates (``4368500``) at draw
        time, when the axes' final width is known, so they never overlap."""

        def __call__(self):
            xmin, xmax = self.axis.get_view_interval()
            chars = len(f"{max(abs(xmin), abs(xmax)):.0f}") + 2
            width = self.axis.axes.bbox.width / self.axis.axes.figure.dpi * 72  # points
            self.set_params(nbins=max(2, min(9, int(width / (chars * 8 * 0.62 + 14)))))
            return super().__call__()

    x, y = axis_labels(view.crs)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.xaxis.set_major_locator(FitLocator(steps=[1, 2, 2.5, 5, 10]))
    for axis in (ax.xaxis, ax.yaxis):
        fmt = ScalarFormatter(useOffset=False)
        fmt.set_scientific(False)
        axis.set_major_formatter(fmt)
    ax.tick_params(labelsize=8)
    ax.set_aspect("equal")
    if title is not None:
        ax.set_title(title)
    _limits(ax, view)


def _limits(ax, view: View) -> None:
    xmin, ymin, xmax, ymax = view.bounds
    ax.set_xlim(xmin, xmax)
    ax.set_ylim(ymin, ymax)


def _geoms(objects, crs: CRS, keep_empty: bool = False) -> np.ndarray:
    """Geometries of ``objects`` (GeoDataFrame, GeoSeries, file or None) in ``crs``, as an
    object array; empty/missing ones removed unless ``keep_empty`` (positions preserved)."""
    if objects is None:
        return np.zeros(0, dtype=object)
    series = _frame_of(objects).geometry
    if len(series) and series.crs is not None and series.crs != crs:
        series = series.to_crs(crs)
    geoms = np.asarray(series.values, dtype=object)
    if keep_empty:
        return geoms
    return geoms[[g is not None and not g.is_empty for g in geoms]] if len(geoms) else geoms


def _frame_of(objects) -> gpd.GeoDataFrame:
    """A GeoDataFrame of ``objects``: a GeoDataFrame, a GeoSeries or a vector file (read as
    :func:`fastsam_geo.evaluate` and the CLI read them)."""
    if isinstance(objects, gpd.GeoDataFrame):
        return objects
    if isinstance(objects, gpd.GeoSeries):
        return gpd.GeoDataFrame(geometry=objects)
    if isinstance(objects, str | os.PathLike):
        from .io import read_vector

        return read_vector(objects)
    return gpd.GeoDataFrame(geometry=gpd.GeoSeries(objects))


def _in_view(geoms: np.ndarray, view: View) -> np.ndarray:
    if not len(geoms):
        return geoms
    return geoms[shapely.intersects(geoms, shapely.box(*view.bounds))]


def _pixel_box(box: tuple[int, int, int, int], t: Affine) -> shapely.Polygon:
    c0, r0, c1, r1 = box
    return shapely.Polygon([t @ (c0, r0), t @ (c1, r0), t @ (c1, r1), t @ (c0, r1)])


def _draw(ax, geoms, *, label: str, **style) -> None:
    """Polygons ``geoms`` as one PatchCollection labelled ``label`` (also when empty, so the
    figure always says what it drew)."""
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path

    patches = []
    for g in np.asarray(geoms, dtype=object):
        if g is None or g.is_empty:
            continue
        for poly in getattr(g, "geoms", [g]):
            if poly.geom_type != "Polygon":
                continue
            rings = [np.asarray(poly.exterior.coords)[:, :2]] + [np.asarray(r.coords)[:, :2] for r in poly.interiors]
            codes = np.concatenate([[Path.MOVETO] + [Path.LINETO] * (len(r) - 2) + [Path.CLOSEPOLY] for r in rings])
            patches.append(PathPatch(Path(np.concatenate(rings), codes)))
    coll = PatchCollection(patches, match_original=False, label=label, zorder=3, **style)
    coll.set_gid(label)
    ax.add_collection(coll, autolim=False)
