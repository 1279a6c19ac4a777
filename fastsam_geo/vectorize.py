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
from shapely.geometry import MultiPolygon, Polygon, shape

from .types import MergedObject


def mask_to_geometry(mask: np.ndarray, transform: Affine, *, min_component: int = 16,
                     min_hole: int = 9, simplify: float = 0.0) -> Polygon | MultiPolygon | None:
    """Trace a bool mask ``(H, W)`` whose pixel (0, 0) maps through ``transform``.

    Returns a Polygon (or a MultiPolygon when several parts of at least ``min_component``
    pixels remain), or None for an empty mask. The largest part is always kept; holes
    smaller than ``min_hole`` pixels (speckle) are filled, larger ones (courtyards) kept.
    ``simplify`` is a Douglas-Peucker tolerance in pixels (0: exact pixel outlines).
    Geometries are valid (``make_valid`` applied if the tracing produced a bowtie).
    """
    if not mask.any():
        return None
    px_area = abs(transform.determinant)
    parts: list[tuple[float, Polygon]] = []
    for geom, _ in features.shapes(mask.view(np.uint8), mask=mask, connectivity=4,
                                   transform=transform):
        poly = shape(geom)
        if min_hole > 0 and poly.interiors:
            poly = Polygon(poly.exterior, [r for r in poly.interiors
                                           if Polygon(r).area >= min_hole * px_area])
        parts.append((poly.area, poly))
    parts.sort(key=lambda p: p[0], reverse=True)
    kept = [parts[0][1]] + [p for a, p in parts[1:] if a >= min_component * px_area]
    geom: Polygon | MultiPolygon = kept[0] if len(kept) == 1 else MultiPolygon(kept)
    if simplify > 0:
        geom = geom.simplify(simplify * np.sqrt(px_area), preserve_topology=True)
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
