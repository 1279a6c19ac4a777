"""Ground sample distance (GSD): how many ground metres a pixel spans, and what it means for tiling.

A model sees objects at the scale it was trained on. Its card records that GSD (metres per
pixel *on the ground*, not CRS units: an EPSG:3857 unit spans ``cos(latitude)`` ground metres)
and the range of its training imagery. Resolution-aware inference keeps the network input
size and picks the *native* tile size so the network sees the model's GSD::

    native_tile = tile_size * model_gsd / raster_gsd

``tile_size`` (and ``overlap``) are read as pixels at the model's GSD, so with the model's own
``tile_size == imgsz`` one input pixel spans ``model_gsd`` metres; the tile is letterboxed up
or down to the input size and masks come back at native pixels (the engine does both), so
tiles stay aligned to the raster and seams, prompts and the cache work unchanged.

Pure functions over numbers, an affine transform and a CRS: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import InputError

if TYPE_CHECKING:
    from affine import Affine

GSD_MODES = ("auto", "native")
FAR_OFF = 2.0
"""Imagery more than this factor coarser than the model's coarsest training GSD (or finer than
its finest) gets a :class:`~fastsam_geo.errors.GsdWarning`."""
MIN_TILE = 32
SNAP = 0.1
"""Rasters within 10 % of the model's GSD keep their tiles (the factor is taken as 1)."""
COARSE = 2.5
"""Rasters this many times coarser than the model's GSD (or more) are enlarged enough to look
blurred to the network: :func:`coarse_settings` applies (0.5 m imagery for a 0.15 m model, not
0.3 m)."""
SHARPEN = 0.6
"""Unsharp-mask amount for enlarged coarse tiles (:func:`coarse_settings`)."""


@dataclass(frozen=True)
class ModelGsd:
    """A model's training GSD (m/px, ground) and the range ``[lo, hi]`` its imagery spanned."""

    gsd: float
    lo: float
    hi: float


@dataclass(frozen=True)
class GsdPlan:
    """What ``--gsd`` decided for one raster: the ground GSDs (m/px), the factor
    ``model_gsd / raster_gsd`` and the native tile size and overlap (pixels) it gives."""

    raster_gsd: float
    model_gsd: float
    factor: float
    tile_size: int
    overlap: int


def validate(value: object) -> str | float:
    """``"auto"``, ``"native"`` or a positive number of metres per pixel (a numeric string is
    read as one, for CLIs); anything else is an :class:`InputError`."""
    if isinstance(value, str):
        v = value.strip().lower()
        if v in GSD_MODES:
            return v
        try:
            value = float(v)
        except ValueError:
            raise InputError(f"gsd must be auto, native or a positive number of metres per pixel, "
                             f"got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not 0 < value <= 1e5:
        raise InputError(f"gsd must be auto, native or a positive number of metres per pixel, got {value!r}")
    return float(value)


def ground_gsd(transform: Affine, crs: object, width: int, height: int) -> float | None:
    """Ground metres per pixel at the centre of a ``width`` x ``height`` raster: the geodesic
    (WGS84 ellipsoid) lengths of one pixel step along columns and along rows, their geometric
    mean. ``None`` without a CRS. An EPSG:3857 raster at latitude 60 gives half its CRS pixel
    size; a UTM raster near its central meridian gives its pixel size."""
    if crs is None:
        return None
    import numpy as np
    from pyproj import Geod
    from pyproj.exceptions import ProjError

    from .coords import parse_crs, transform_xy  # pyproj: not at import (Options imports this module)
    from .errors import CRSError

    cx, cy = width / 2, height / 2
    cols = [cx, cx + 1, cx]
    rows = [cy, cy, cy + 1]
    xs = [transform.c + transform.a * c + transform.b * r for c, r in zip(cols, rows, strict=True)]
    ys = [transform.f + transform.d * c + transform.e * r for c, r in zip(cols, rows, strict=True)]
    try:  # a local/engineering CRS has no way to the ellipsoid: its own linear unit, if it has one
        lon, lat = transform_xy(np.asarray(xs, float), np.asarray(ys, float), parse_crs(crs), parse_crs("EPSG:4326"))
    except (CRSError, ProjError, ValueError):
        from .coords import local_metres_per_unit

        local = local_metres_per_unit(parse_crs(crs))
        if local is None:
            return None
        return local * math.sqrt(math.hypot(transform.a, transform.d) * math.hypot(transform.b, transform.e))
    geod = Geod(ellps="WGS84")
    _, _, dx = geod.inv(lon[0], lat[0], lon[1], lat[1])
    _, _, dy = geod.inv(lon[0], lat[0], lon[2], lat[2])
    if not (math.isfinite(dx) and math.isfinite(dy)) or dx <= 0 or dy <= 0:
        return None
    return math.sqrt(dx * dy)


def model_gsd(card: Mapping | None) -> ModelGsd | None:
    """The GSD a model card records (``gsd`` in m/px, ``gsd_range`` ``[lo, hi]``), or ``None``."""
    if not card or not card.get("gsd"):
        return None
    try:  # a card is the user's file too: a malformed GSD is no GSD, not a traceback
        g = float(card["gsd"])
        lo, hi = (float(v) for v in (card.get("gsd_range") or (g, g))[:2])
    except (TypeError, ValueError):
        return None
    ok = all(math.isfinite(v) and v > 0 for v in (g, lo, hi))
    return ModelGsd(g, min(lo, hi), max(lo, hi)) if ok else None


def plan(tile_size: int, overlap: int, raster_gsd: float, model: float) -> GsdPlan:
    """Native tile size and overlap that show the network ``model`` m/px imagery when the raster
    is ``raster_gsd`` m/px: both scaled by ``model / raster_gsd`` (tile at least
    :data:`MIN_TILE` px, overlap at most half the tile; within :data:`SNAP` of 1 the factor is 1)."""
    f = model / raster_gsd
    if abs(math.log(f)) < math.log(1 + SNAP):
        f = 1.0  # about the model's own scale: today's tiles exactly, not a 1014-px near miss
    tile = max(MIN_TILE, round(tile_size * f))
    ov = min(max(0, round(overlap * f)), tile // 2)
    return GsdPlan(raster_gsd, model, f, tile, ov)


def coarse_settings(p: GsdPlan, trained_on: float | None = None) -> dict:
    """What changes when ``p`` enlarges a coarse raster (``1 / p.factor >= COARSE``): the
    enlarged tiles are sharpened (unsharp mask :data:`SHARPEN`), since bicubic enlargement
    leaves roof edges softer than any the model was trained on. Empty otherwise, and empty
    when ``trained_on`` (the coarsest native ground GSD of the model's training rasters, m/px:
    a model fine-tuned on 0.5 m imagery enlarged the same way) is within :data:`SNAP` of the
    raster's or coarser: that model learned unsharpened enlargements.

    Measured at 0.5 m (``benchmarks/gsd.py``; tuning mosaics chosen apart from those it
    reports): the bundled model's pooled F1 0.678 -> 0.709 on the tuning mosaics and
    0.635 -> 0.691 on the reported ones; four fold models on the towns they never saw: 0.401 ->
    0.405 pooled. A threshold lowered for coarse imagery, tried with it, added more false
    positives than matches on the unseen towns, so the model's threshold stays."""
    if trained_on is not None and p.raster_gsd <= trained_on * (1 + SNAP):
        return {}
    return {"sharpen": SHARPEN} if 1.0 / p.factor >= COARSE else {}


def trained_native_gsd(card: Mapping | None) -> float | None:
    """The coarsest native ground GSD (m/px) among the rasters a model card lists in ``data``
    (as ``fastsam-geo train`` writes them), or ``None``."""
    data = (card or {}).get("data")
    gsds = []
    for d in data if isinstance(data, list) else []:
        try:  # a card is the user's file too: an odd entry is skipped, not a traceback
            g = float(d["ground_gsd"])
        except (TypeError, ValueError, KeyError):
            continue
        if math.isfinite(g) and g > 0:
            gsds.append(g)
    return max(gsds) if gsds else None


def far_off(raster_gsd: float, model: ModelGsd, factor: float = FAR_OFF) -> str | None:
    """One line when ``raster_gsd`` lies more than ``factor`` x outside the model's training range."""
    if raster_gsd > model.hi * factor:
        how = f"{raster_gsd / model.hi:.2f}x coarser than"
    elif raster_gsd < model.lo / factor:
        how = f"{model.lo / raster_gsd:.2f}x finer than"
    else:
        return None
    span = f"{model.gsd:.3g} m" if model.lo == model.hi else f"{model.lo:.3g}-{model.hi:.3g} m"
    return (f"imagery at {raster_gsd:.3g} m/px is {how} the model's training imagery ({span}/px); "
            "expect fewer and rougher objects")
