"""Figures of a raster and its objects, georeferenced: for notebooks, reports and PNG files.

Every function draws into ``ax`` (a new figure when ``None``) and returns the Axes; save
with :func:`save` (or ``ax.figure.savefig``). Coordinates are the raster's own CRS, whose
name and units label the axes; vector layers in another CRS are reprojected to it.

The image is never read whole: :func:`show_raster` reads the view (the raster, or ``bbox``)
through rasterio's ``out_shape``, at most ``max_size`` pixels along its long side (GDAL
takes overviews when the file has them), so a 16384² mosaic costs what a 1600² one does.
Bands and stretch are the pipeline's (:func:`~fastsam_geo.raster.choose_bands`, one
percentile stretch per raster for non-uint8 data): the picture is what the model saw.

matplotlib (and folium, for :func:`explore`, which lives in :mod:`fastsam_geo.maps`) are
imported inside the functions only, so importing this module, like ``import fastsam_geo``, loads
neither. Reading the picture and the layers is :mod:`fastsam_geo.display`'s.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import geopandas as gpd
import numpy as np
import shapely
from affine import Affine
from pyproj import CRS

from .coords import parse_crs, transform_xy
from .display import MAX_SIZE, View, as_frame, axis_labels, in_view, layer_geoms, pixel_box, read_image, view_of
from .errors import InputError
from .maps import explore, is_online
from .prompts import BoxPrompt, PointPrompt
from .raster import read_info
from .tiling import plan_tiles

__all__ = ["EVAL_COLORS", "MAX_SIZE", "OUTLINE", "PROMPT_COLORS", "View", "axis_labels", "explore", "is_online",
           "read_image", "save", "show_evaluation", "show_objects", "show_prompts", "show_raster", "show_tiles"]

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
_MAX_TILE_LABELS = 100


def show_raster(raster: str | os.PathLike, ax=None, *, bbox=None, bbox_crs=None, bands: Sequence[int] | None = None,
                max_size: int = MAX_SIZE, stretch: str = "auto", title: str | None = None, image: bool = True):
    """Draw ``raster`` (or its ``bbox``) decimated (see :func:`read_image`) in its own CRS, with
    axes labelled by the CRS, and return the Axes. ``image=False`` draws nothing but sets the
    view and labels (to overlay on an axes that already shows the image)."""
    view = view_of(raster, bbox, bbox_crs)
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
    view = view_of(raster, bbox, bbox_crs)
    geoms = in_view(layer_geoms(objects, view.crs), view)
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
    from .api import _polygons, evaluate

    colors = EVAL_COLORS | (colors or {})
    threshold = result.iou_threshold if result is not None else (0.5 if iou is None else iou)
    if result is not None and iou is not None and not math.isclose(iou, threshold):
        raise InputError(f"iou={iou} but the result was computed at IoU {threshold}")
    pred_df, ref_df = _polygons(as_frame(pred))[0], _polygons(as_frame(ref))[0]  # as evaluate counts them
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
    view = view_of(raster, bbox, bbox_crs)
    pred_geoms = layer_geoms(pred_df, view.crs, keep_empty=True)  # positions are evaluate()'s indexes
    ref_geoms = layer_geoms(ref_df, view.crs, keep_empty=True)
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
    from .api import _partial_flags, evaluate

    full = evaluate(pred_df, ref_df, iou=iou)
    partial = np.zeros(len(ref_df), bool)
    if ignore_partial and partial_column in getattr(ref_df, "columns", ()):
        partial = _partial_flags(ref_df[partial_column].tolist(), partial_column)
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
    view = view_of(raster, bbox, bbox_crs)
    tiles = list(grid.intersecting(view.window))
    t = info.transform
    windows = gpd.GeoSeries([pixel_box(tile.box, t) for tile in tiles], crs=info.crs)
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
        geoms = in_view(layer_geoms(objects, info.crs), view)
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
    found = layer_geoms(result, info.crs) if result is not None else np.zeros(0, dtype=object)
    if bbox is None:
        bbox = _fit([g for _, _, g in pts] + [g for _, g in boxes] + list(found), info, pad, min_size)
        bbox_crs = None
    pair = (ax is None and result is not None) or isinstance(ax, Sequence | np.ndarray)
    if ax is None:
        ax = _new_axes(view_of(raster, bbox, bbox_crs).bounds, panels=2 if pair else 1)
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
        _limits(a, view_of(raster, bbox, bbox_crs))
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


# -- drawing helpers ------------------------------------------------------------------------------

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
