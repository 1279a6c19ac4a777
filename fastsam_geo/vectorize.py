"""Masks to georeferenced polygons, always through an explicit transform.

Each mask is traced on its own crop (tracing a full tile per mask costs ~30x more), with
the transform of the crop's top-left pixel, so coordinates come out in the raster's CRS;
rasterio's default identity transform would silently give pixel coordinates instead.
"""

from __future__ import annotations

import numpy as np
import shapely
from affine import Affine
from rasterio import features
from shapely.geometry import MultiPolygon, Polygon

from .types import MergedObject


def clean_mask(mask: np.ndarray, min_component: int = 16, min_hole: int = 9) -> np.ndarray:
    """Drop speckle from a bool mask ``(H, W)`` before tracing it.

    Keeps the largest 4-connected part and every part of at least ``min_component`` pixels
    and 5 % of the largest; fills holes smaller than ``min_hole`` pixels or 1 % of the mask
    (courtyards stay). Noisy masks (an untrained network's, or a confused one's) would
    otherwise trace into thousands of tiny polygons.
    """
    import cv2

    m = mask.view(np.uint8) if mask.dtype == bool else mask.astype(np.uint8)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=4)
    if n > 2:
        areas = stats[1:, cv2.CC_STAT_AREA]
        keep = areas >= max(min_component, 0.05 * areas.max())
        keep[int(np.argmax(areas))] = True
        if not keep.all():
            mask = np.concatenate([[False], keep])[lab]
    if min_hole > 0:
        inv = (~mask).view(np.uint8)
        n, lab, stats, _ = cv2.connectedComponentsWithStats(inv, connectivity=8)
        if n > 1:
            h, w = mask.shape
            x, y, bw, bh, area = (stats[1:, k] for k in range(5))
            inner = (x > 0) & (y > 0) & (x + bw < w) & (y + bh < h)  # holes do not touch the crop edge
            small = inner & (area < max(min_hole, 0.01 * np.count_nonzero(mask)))
            if small.any():
                mask = mask | np.concatenate([[False], small])[lab]
    return mask


def mask_to_geometry(mask: np.ndarray, transform: Affine, *, min_component: int = 16, min_hole: int = 9,
                     simplify: float = 0.0) -> Polygon | MultiPolygon | None:
    """Trace a bool mask ``(H, W)`` whose pixel (0, 0) maps through ``transform``.

    Returns a Polygon (or a MultiPolygon when several parts of at least ``min_component``
    pixels remain), or None for an empty mask. The largest part is always kept; holes
    smaller than ``min_hole`` pixels (speckle) are filled, larger ones (courtyards) kept.
    ``simplify`` is a Douglas-Peucker tolerance in pixels (0: exact pixel outlines).
    Geometries are valid (``make_valid`` applied if the tracing produced a bowtie).
    """
    if not mask.any():
        return None
    # pad by one pixel so holes touching the crop edge are not mistaken for courtyards
    mask = clean_mask(np.pad(mask, 1), min_component, min_hole)
    t = transform @ Affine.translation(-1, -1)
    parts = []
    for geom, _ in features.shapes(mask.view(np.uint8), mask=mask, connectivity=4, transform=t):
        rings = [np.asarray(r) for r in geom["coordinates"]]
        parts.append(Polygon(rings[0], rings[1:]) if len(rings) > 1 else shapely.polygons(rings[0]))
    geom: Polygon | MultiPolygon = parts[0] if len(parts) == 1 else \
        MultiPolygon(sorted(parts, key=lambda p: -p.area))
    if simplify > 0:
        geom = geom.simplify(simplify * np.sqrt(abs(transform.determinant)), preserve_topology=True)
    if not geom.is_valid:
        geom = _largest_polygonal(shapely.make_valid(geom))
    return geom


def _largest_polygonal(geom: shapely.Geometry) -> Polygon | MultiPolygon:
    if isinstance(geom, Polygon | MultiPolygon):
        return geom
    polys = [g for g in getattr(geom, "geoms", []) if isinstance(g, Polygon | MultiPolygon)]
    return max(polys, key=lambda g: g.area) if polys else Polygon()


def objects_to_records(objects: list[MergedObject], transform: Affine, *, min_component: int = 16,
                       min_hole: int = 9, simplify: float = 0.0) -> tuple[list, list[float]]:
    """Vectorise merged objects (raster pixels) with the raster ``transform``.

    Returns ``(geometries, scores)`` for the objects that traced to a non-empty geometry.
    """
    geoms, scores = [], []
    for obj in objects:
        t = transform @ Affine.translation(obj.box[0], obj.box[1])
        g = mask_to_geometry(obj.mask, t, min_component=min_component, min_hole=min_hole,
                             simplify=simplify)
        if g is not None and not g.is_empty:
            geoms.append(g)
            scores.append(obj.score)
    return geoms, scores
