"""Prompts in map coordinates, and how they select among already segmented objects.

FastSAM's prompts do not run the network: everything is segmented once, and a prompt only
*selects* (Zhao et al. 2023, section 3.2):

* a **point** picks the objects containing it. Several objects can contain one point (a roof
  section inside a building): the result is their union. Background points (``label=0``)
  remove every object containing them: ungrouped background points apply to all point
  prompts of the call, grouped ones to their group only. Points sharing a ``group`` select
  one object together (the union of what their foreground points pick, minus what their
  background points pick).
* a **box** picks the object with the highest IoU with the box, both in raster pixels.
* a **text** picks the object whose CLIP image embedding is most similar to the text's.

Each ungrouped foreground point, each group, each box and each text is one *prompt object*
and gives one result row, identified by ``prompt_id``: the index in the caller's list of
the prompt that starts it (so rows come in prompt order and map back to the input).
A prompt object that selects nothing still gives its row, with an empty geometry and
``found=False``, so results always align with prompts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from affine import Affine
from pyproj import CRS

from .coords import crs_name, longitude_turn, map_to_pixel, parse_crs, transform_xy
from .errors import CRSError, PromptError
from .masks import Box
from .types import MergedObject


@dataclass(frozen=True)
class PointPrompt:
    """A point ``(x, y)`` in ``crs`` (any pyproj-readable CRS; None: the raster's).

    ``label`` 1 selects (foreground), 0 removes (background); points with the same
    ``group`` select one object together.
    """

    x: float
    y: float
    crs: object = None
    label: int = 1
    group: object = None

    def __post_init__(self) -> None:
        if self.label not in (0, 1):
            raise PromptError(f"point label must be 1 (foreground) or 0 (background), got {self.label!r}")
        if not (np.isfinite(self.x) and np.isfinite(self.y)):
            raise PromptError(f"point coordinates must be finite numbers, got ({self.x}, {self.y})")


@dataclass(frozen=True)
class BoxPrompt:
    """A box ``(xmin, ymin, xmax, ymax)`` in ``crs`` (None: the raster's)."""

    xmin: float
    ymin: float
    xmax: float
    ymax: float
    crs: object = None

    def __post_init__(self) -> None:
        vals = (self.xmin, self.ymin, self.xmax, self.ymax)
        if not all(np.isfinite(v) for v in vals):
            raise PromptError(f"box coordinates must be finite numbers, got {vals}")
        if not (self.xmin < self.xmax and self.ymin < self.ymax):
            raise PromptError(f"box must be xmin,ymin,xmax,ymax with min < max, got {vals}")


@dataclass(frozen=True)
class TextPrompt:
    """A text query, e.g. ``"a building with a red roof"`` (needs the ``[text]`` extra)."""

    text: str
    top_k: int = 1

    def __post_init__(self) -> None:
        if not str(self.text).strip():
            raise PromptError("text prompt is empty")
        if self.top_k < 1:
            raise PromptError(f"top_k must be >= 1, got {self.top_k}")


Prompt = PointPrompt | BoxPrompt | TextPrompt


@dataclass
class PromptObject:
    """One result row to produce: the prompts that define it, in raster pixels.

    ``points``: ``(N, 3)`` float ``(col, row, label)``; ``box``: float ``(x0, y0, x1, y1)``.
    """

    prompt_id: int
    kind: str  # "point", "box" or "text"
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    box: tuple[float, float, float, float] | None = None
    text: str | None = None
    top_k: int = 1

    def pixel_box(self) -> Box | None:
        """Integer raster-pixel box around the prompt's geometry (None for text)."""
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            return (int(np.floor(x0)), int(np.floor(y0)), int(np.ceil(x1)), int(np.ceil(y1)))
        if len(self.points) == 1:  # one click: no array reductions (100,000 of them add up)
            c, r = int(np.floor(self.points[0, 0])), int(np.floor(self.points[0, 1]))
            return (c, r, c + 1, r + 1)
        if len(self.points):
            fg = self.points[self.points[:, 2] == 1]
            pts = fg if len(fg) else self.points
            return (int(np.floor(pts[:, 0].min())), int(np.floor(pts[:, 1].min())),
                    int(np.floor(pts[:, 0].max())) + 1, int(np.floor(pts[:, 1].max())) + 1)
        return None


def describe(p: Prompt) -> str:
    if isinstance(p, PointPrompt):
        return f"point ({p.x:.10g}, {p.y:.10g}" + (f", label {p.label}" if p.label != 1 else "") + ")"
    if isinstance(p, BoxPrompt):  # 10 digits: centimetres in metre CRSs, 1e-8 degrees (a click apart)
        return f"box ({p.xmin:.10g}, {p.ymin:.10g}, {p.xmax:.10g}, {p.ymax:.10g})"
    return f"text {p.text!r}"


def to_pixel_objects(prompts: Sequence[Prompt], raster_crs: CRS, transform: Affine, width: int,
                     height: int) -> tuple[list[PromptObject], np.ndarray]:
    """Map prompts to raster pixels and gather them into prompt objects.

    Returns the prompt objects (in prompt order) and the ungrouped background points
    ``(M, 2)`` (col, row), which apply to every point prompt object. Raises
    :class:`PromptError` for a prompt outside the raster (naming it and the raster's bounds)
    and :class:`~fastsam_geo.errors.CRSError` for an unknown CRS. Points are reprojected in
    one call per CRS, so 100,000 clicks cost milliseconds, not one PROJ call each.
    """
    if not prompts:
        raise PromptError("no prompts given")
    for i, p in enumerate(prompts):
        if not isinstance(p, PointPrompt | BoxPrompt | TextPrompt):
            raise PromptError(f"prompt {i}: not a PointPrompt, BoxPrompt or TextPrompt: {p!r}")
    frame = _Frame(raster_crs, transform, width, height)
    pix = _points_to_pixels(prompts, frame)
    objects: list[PromptObject] = []
    groups: dict[object, PromptObject] = {}
    background: list[tuple[float, float]] = []
    for i, p in enumerate(prompts):
        if isinstance(p, TextPrompt):
            objects.append(PromptObject(i, "text", text=str(p.text), top_k=p.top_k))
        elif isinstance(p, PointPrompt):
            col, row = pix[i]
            pt = np.array([[col, row, p.label]], dtype=float)
            if p.group is not None:
                if p.group not in groups:
                    groups[p.group] = PromptObject(i, "point")
                    objects.append(groups[p.group])
                g = groups[p.group]
                g.points = np.vstack([g.points, pt])
            elif p.label == 0:
                background.append((col, row))
            else:
                objects.append(PromptObject(i, "point", points=pt))
        else:
            # densify the box edges so a box in another CRS covers its curved outline
            t = np.linspace(0.0, 1.0, 9)
            xs = np.concatenate([p.xmin + (p.xmax - p.xmin) * t, np.full(9, p.xmax),
                                 p.xmax - (p.xmax - p.xmin) * t, np.full(9, p.xmin)])
            ys = np.concatenate([np.full(9, p.ymin), p.ymin + (p.ymax - p.ymin) * t, np.full(9, p.ymax),
                                 p.ymax - (p.ymax - p.ymin) * t])
            col, row = frame.to_pixel(i, p, xs, ys, box=True)
            x0, x1 = max(0.0, col.min()), min(float(width), col.max())
            y0, y1 = max(0.0, row.min()), min(float(height), row.max())
            if x1 <= x0 or y1 <= y0:
                frame.outside(i, p)
            objects.append(PromptObject(i, "box", box=(x0, y0, x1, y1)))
    for g in groups.values():
        if not (g.points[:, 2] == 1).any():
            raise PromptError(f"prompt {g.prompt_id}: point group has only background points; "
                              "add a foreground point (label 1)")
    if not objects:
        raise PromptError("only background points given; add a foreground point or a box")
    return objects, np.asarray(background, dtype=float).reshape(-1, 2)


class _Frame:
    """The raster's pixel frame, for prompts in any CRS."""

    def __init__(self, crs: CRS, transform: Affine, width: int, height: int):
        self.crs, self.transform, self.width, self.height = crs, transform, width, height
        corners = [transform @ c for c in ((0, 0), (width, 0), (0, height), (width, height))]
        xs, ys = zip(*corners)
        self.bounds = (min(xs), min(ys), max(xs), max(ys))

    def to_pixel(self, i: int, p: Prompt, xs, ys, box: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Raster pixel (col, row) arrays of the prompt's coordinates (in its own CRS)."""
        src = self.crs if p.crs is None else parse_crs(p.crs)
        try:
            x, y = transform_xy(np.asarray(xs, float), np.asarray(ys, float), src, self.crs)
        except CRSError as exc:
            raise PromptError(f"prompt {i} ({describe(p)}): {exc}") from None
        return map_to_pixel(self.wrap(x), y, self.transform)

    def wrap(self, x: np.ndarray) -> np.ndarray:
        """Longitudes moved by a turn (360°, 400 grads) where that brings them onto a geographic
        raster that crosses the antimeridian (a click at -179.99° on a raster spanning 179.5°-180.5°)."""
        if not self.crs.is_geographic:
            return x
        x0, _, x1, _ = self.bounds
        turn = longitude_turn(self.crs)
        x = np.where((x < x0) & (x + turn <= x1), x + turn, x)
        return np.where((x > x1) & (x - turn >= x0), x - turn, x)

    def outside(self, i: int, p: Prompt) -> None:
        _raise_outside(i, p, self.crs, self.transform, self.width, self.height)


def _points_to_pixels(prompts: Sequence[Prompt], frame: _Frame) -> dict[int, tuple[float, float]]:
    """(col, row) of every point prompt, reprojected per CRS in one call; the first point
    outside the raster (in prompt order) raises :class:`PromptError`."""
    by_crs: dict[object, list[int]] = {}
    for i, p in enumerate(prompts):
        if isinstance(p, PointPrompt):
            by_crs.setdefault(None if p.crs is None else parse_crs(p.crs).to_wkt(), []).append(i)
    out: dict[int, tuple[float, float]] = {}
    bad: list[int] = []
    for idx in by_crs.values():
        first = prompts[idx[0]]
        try:
            col, row = frame.to_pixel(idx[0], first, [prompts[i].x for i in idx], [prompts[i].y for i in idx])
        except PromptError:  # some point cannot be transformed: find which, one by one
            for i in idx:
                frame.to_pixel(i, prompts[i], [prompts[i].x], [prompts[i].y])
            raise
        inside = (col >= 0) & (col < frame.width) & (row >= 0) & (row < frame.height)
        bad += [i for i, ok in zip(idx, inside) if not ok]
        out.update((i, (float(c), float(r))) for i, c, r in zip(idx, col, row))
    if bad:
        i = min(bad)
        frame.outside(i, prompts[i])
    return out


def _raise_outside(i, p, raster_crs, transform, width, height):
    """:class:`PromptError` naming prompt ``i`` and the raster's bounds in the raster's CRS and,
    when the prompt has another CRS, in the prompt's (what the user can compare their numbers with)."""
    corners = [transform @ c for c in ((0, 0), (width, 0), (0, height), (width, height))]
    xs, ys = zip(*corners)
    bounds = (min(xs), min(ys), max(xs), max(ys))
    src = parse_crs(p.crs) if getattr(p, "crs", None) is not None else None
    where, also = "", ""
    if src is not None:
        where = f" in {crs_name(src)}"
        if src != raster_crs:
            theirs = _bounds_in(bounds, raster_crs, src)
            also = f" = {_fmt(theirs)} in {crs_name(src)}" if theirs is not None else ""
    raise PromptError(f"prompt {i} ({describe(p)}{where}) lies outside the raster, whose bounds are "
                      f"{_fmt(bounds)} in {crs_name(raster_crs)}{also}")


def _fmt(bounds) -> str:
    return "(" + ", ".join(f"{v:.10g}" for v in bounds) + ")"  # lon/lat to ~1 cm


def _bounds_in(bounds, crs: CRS, dst: CRS) -> tuple[float, ...] | None:
    """The ``(xmin, ymin, xmax, ymax)`` of ``bounds`` (in ``crs``) in ``dst``, edges densified;
    None where they cannot be transformed."""
    x0, y0, x1, y1 = bounds
    t = np.linspace(0.0, 1.0, 33)
    xs = np.concatenate([x0 + (x1 - x0) * t, np.full(33, x1), x1 - (x1 - x0) * t, np.full(33, x0)])
    ys = np.concatenate([np.full(33, y0), y0 + (y1 - y0) * t, np.full(33, y1), y1 - (y1 - y0) * t])
    try:
        tx, ty = transform_xy(xs, ys, crs, dst)
    except Exception:  # outside the area of use, or no transformation: the raster's bounds suffice
        return None
    return float(tx.min()), float(ty.min()), float(tx.max()), float(ty.max())


# -- selection (pure, raster pixels) -----------------------------------------------------------

def select_points(objects: Sequence[MergedObject], points: np.ndarray,
                  background: np.ndarray | None = None) -> list[int]:
    """Indexes of ``objects`` picked by ``points`` ``(N, 3)`` (col, row, label) and the global
    ``background`` points ``(M, 2)``: those containing a foreground point and no background one.
    """
    bg = [tuple(p[:2]) for p in points if p[2] == 0]
    if background is not None:
        bg += [tuple(p) for p in background]
    fg = [tuple(p[:2]) for p in points if p[2] == 1]
    return [k for k, o in enumerate(objects)
            if any(o.contains(c, r) for c, r in fg) and not any(o.contains(c, r) for c, r in bg)]


def box_ious(objects: Sequence[MergedObject], box: tuple[float, float, float, float]) -> np.ndarray:
    """IoU of each object's mask with the (pixel-rounded) box, float ``(N,)``."""
    pbox = (round(box[0]), round(box[1]), round(box[2]), round(box[3]))
    barea = max(0, pbox[2] - pbox[0]) * max(0, pbox[3] - pbox[1])
    out = np.zeros(len(objects))
    for k, o in enumerate(objects):
        inter = o.count_in(pbox)
        union = barea + o.area - inter
        out[k] = inter / union if union else 0.0
    return out


def union(objects: Sequence[MergedObject]) -> MergedObject:
    """One object covering several (their parts together); score: the highest; quality: the
    pixel-weighted mean of those that have one (as seam merging weighs views)."""
    if len(objects) == 1:
        return objects[0]
    box = (min(o.box[0] for o in objects), min(o.box[1] for o in objects),
           max(o.box[2] for o in objects), max(o.box[3] for o in objects))
    rated = [(o.quality, o.area) for o in objects if not math.isnan(o.quality)]
    weight = sum(a for _, a in rated)
    quality = sum(q * a for q, a in rated) / weight if weight else (rated[0][0] if rated else math.nan)
    return MergedObject(box, tuple(p for o in objects for p in o.parts), max(o.score for o in objects),
                        sum(o.tiles for o in objects), tuple(s for o in objects for s in o.sources),
                        tuple(p for o in objects for p in o.nodata), float(quality))


def parse_point(text: str, crs: object = None) -> PointPrompt:
    """``"X,Y"`` or ``"X,Y,LABEL"`` (as on the command line) -> :class:`PointPrompt`."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        x, y = float(parts[0]), float(parts[1])
        label = int(parts[2]) if len(parts) == 3 else 1
    except ValueError:
        raise PromptError(f"malformed point {text!r}: expected X,Y or X,Y,LABEL (label 1 or 0)") from None
    return PointPrompt(x, y, crs=crs, label=label)


def parse_box(text: str, crs: object = None) -> BoxPrompt:
    """``"XMIN,YMIN,XMAX,YMAX"`` -> :class:`BoxPrompt`."""
    try:
        vals = [float(v) for v in str(text).split(",")]
        if len(vals) != 4:
            raise ValueError
    except ValueError:
        raise PromptError(f"malformed box {text!r}: expected XMIN,YMIN,XMAX,YMAX") from None
    return BoxPrompt(*vals, crs=crs)
