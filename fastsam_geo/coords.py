"""Coordinates: CRS parsing, map <-> pixel mapping, reprojection and true areas.

Pure functions over pyproj, affine and shapely. Every pyproj transformer is built with
``always_xy=True`` so coordinates are always (x, y) = (easting, northing) or (lon, lat),
whatever axis order the CRS's authority declares.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import shapely
from affine import Affine
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError as _PyprojCRSError

from .errors import CRSError


def parse_crs(value: object) -> CRS:
    """A :class:`pyproj.CRS` from anything pyproj reads ("EPSG:4326", 32616, WKT, PROJ, a CRS).

    Raises :class:`~fastsam_geo.errors.CRSError` with the offending value on failure.
    """
    if isinstance(value, CRS):
        return value
    if hasattr(value, "to_wkt"):  # rasterio.crs.CRS and friends
        value = value.to_wkt()
    try:
        return CRS.from_user_input(value)
    except (_PyprojCRSError, TypeError, ValueError) as exc:
        raise CRSError(f"unknown CRS {value!r}: not an EPSG code, WKT or PROJ string pyproj "
                       f"can read") from exc


@lru_cache(maxsize=64)
def _transformer(src_wkt: str, dst_wkt: str) -> Transformer:
    return Transformer.from_crs(CRS.from_wkt(src_wkt), CRS.from_wkt(dst_wkt), always_xy=True)


def transformer(src: CRS, dst: CRS) -> Transformer:
    """A cached, always-xy transformer from ``src`` to ``dst``."""
    return _transformer(src.to_wkt(), dst.to_wkt())


def transform_xy(x: np.ndarray, y: np.ndarray, src: CRS, dst: CRS) -> tuple[np.ndarray, np.ndarray]:
    """Reproject coordinate arrays from ``src`` to ``dst``; identity when the CRSs are equal.

    Raises :class:`CRSError` when a coordinate cannot be transformed (it becomes inf).
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if src == dst:
        return x, y
    tx, ty = transformer(src, dst).transform(x, y, errcheck=False)
    tx, ty = np.asarray(tx, dtype=float), np.asarray(ty, dtype=float)
    if not (np.isfinite(tx).all() and np.isfinite(ty).all()):
        raise CRSError(f"coordinates cannot be transformed from {crs_name(src)} to {crs_name(dst)} "
                       f"(outside the area where the transformation is defined)")
    return tx, ty


def transform_geometries(geoms: np.ndarray, src: CRS, dst: CRS) -> np.ndarray:
    """Reproject an array of shapely geometries (vectorised; identity when CRSs are equal)."""
    geoms = np.asarray(geoms, dtype=object)
    if src == dst or len(geoms) == 0:
        return geoms

    def fn(coords: np.ndarray) -> np.ndarray:
        x, y = transform_xy(coords[:, 0], coords[:, 1], src, dst)
        return np.column_stack([x, y])

    return shapely.transform(geoms, fn)


def map_to_pixel(x: np.ndarray, y: np.ndarray, transform: Affine) -> tuple[np.ndarray, np.ndarray]:
    """Map coordinates to fractional pixel (col, row) through the inverse of ``transform``."""
    inv = ~transform
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    col = inv.a * x + inv.b * y + inv.c
    row = inv.d * x + inv.e * y + inv.f
    return col, row


def pixel_to_map(col: np.ndarray, row: np.ndarray, transform: Affine) -> tuple[np.ndarray, np.ndarray]:
    """Fractional pixel (col, row) to map coordinates through ``transform``."""
    col = np.asarray(col, dtype=float)
    row = np.asarray(row, dtype=float)
    return (transform.a * col + transform.b * row + transform.c,
            transform.d * col + transform.e * row + transform.f)


def geodesic_areas(geoms: np.ndarray, crs: CRS) -> np.ndarray:
    """True areas in square metres of polygons given in ``crs``, float ``(N,)``.

    Computed on the CRS's own ellipsoid (geodesic, not planar), so it is right for
    geographic CRSs and for projections that distort area such as Web Mercator.
    """
    geoms = np.asarray(geoms, dtype=object)
    out = np.zeros(len(geoms), dtype=float)
    if len(geoms) == 0:
        return out
    geod = crs.get_geod()
    if geod is None:
        raise CRSError(f"{crs_name(crs)} has no ellipsoid; cannot compute areas in square metres")
    lonlat = transform_geometries(geoms, crs, crs.geodetic_crs)
    for i, g in enumerate(lonlat):
        if g is not None and not g.is_empty:
            out[i] = abs(geod.geometry_area_perimeter(g)[0])
    return out


def crs_name(crs: CRS) -> str:
    """Short human name of a CRS: ``EPSG:32616`` when it has a code, else its name."""
    auth = crs.to_authority(min_confidence=90)
    return f"{auth[0]}:{auth[1]}" if auth else crs.name


def bbox_to_pixels(bbox: tuple[float, float, float, float], bbox_crs: CRS, crs: CRS, transform: Affine,
                   width: int, height: int) -> tuple[tuple[int, int, int, int] | None, shapely.Geometry]:
    """A map box in ``bbox_crs`` -> the raster-pixel box ``(x0, y0, x1, y1)`` covering it, clipped
    to the raster (None when it misses the raster), and the box as a polygon in ``crs``.

    The box's edges are densified before reprojection, so curved edges in the raster CRS are
    covered.
    """
    xmin, ymin, xmax, ymax = map(float, bbox)
    if not (xmin < xmax and ymin < ymax):
        raise ValueError(f"bbox must be (xmin, ymin, xmax, ymax) with min < max, got {bbox}")
    poly = shapely.segmentize(shapely.box(xmin, ymin, xmax, ymax), max(xmax - xmin, ymax - ymin) / 32)
    poly = transform_geometries(np.array([poly]), bbox_crs, crs)[0]
    ring = np.asarray(poly.exterior.coords)
    cols, rows = map_to_pixel(ring[:, 0], ring[:, 1], transform)
    x0, x1 = max(0, int(np.floor(cols.min()))), min(width, int(np.ceil(cols.max())))
    y0, y1 = max(0, int(np.floor(rows.min()))), min(height, int(np.ceil(rows.max())))
    return ((x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None), poly
