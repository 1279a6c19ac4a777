"""Footprint clean-up after merging: right angles, simplification, area limits, small holes.

Pure functions over arrays of shapely polygons in one CRS (``crs``: a :class:`pyproj.CRS`).
Every length is in metres and every area in square metres on the ground, whatever the CRS:
each polygon's scale (metres per CRS unit) is taken at its centroid from the ratio of its
geodesic to its planar area (:func:`metres_per_unit`), so Web Mercator and geographic CRSs
get the same tolerances as UTM. :func:`clean` applies the steps in a fixed order: fill holes,
regularise, simplify, then the area limits on the result.

Regularisation uses the ``buildingregulariser`` package (the ``[regularize]`` extra), run in
the polygons' local UTM zone so its thresholds are metres.
"""

from __future__ import annotations

import numpy as np
import shapely
from pyproj import CRS

from .coords import geodesic_areas, local_metres_per_unit
from .errors import InputError

#: buildingregulariser settings, in metres (its defaults, 1.0 and 0.5, measured F1 0.604 vs 0.624
#: on the shared mosaics: benchmarks/cleanup.py)
PARALLEL_THRESHOLD_M = 0.3
SIMPLIFY_TOLERANCE_M = 0.15


def metres_per_unit(geoms: np.ndarray, crs: CRS) -> np.ndarray:
    """Ground metres per CRS unit at each polygon, float ``(N,)``: sqrt(geodesic / planar area);
    1 where a polygon has no area (or the CRS has no ellipsoid)."""
    geoms = np.asarray(geoms, dtype=object)
    planar = shapely.area(geoms) if len(geoms) else np.zeros(0)
    if crs is None or crs.get_geod() is None:  # a local grid: its unit; no CRS: 1
        return np.full(len(geoms), local_metres_per_unit(crs) or 1.0)
    true = geodesic_areas(geoms, crs)
    ok = planar > 0
    out = np.ones(len(geoms))
    out[ok] = np.sqrt(true[ok] / planar[ok])
    return out


def fill_holes(geoms: np.ndarray, below_m2: float, scale: np.ndarray) -> np.ndarray:
    """Polygons with every hole smaller than ``below_m2`` (ground m²) filled; ``scale`` (N,)
    metres per CRS unit."""
    out = np.asarray(geoms, dtype=object).copy()
    for i, g in enumerate(out):
        if g is None or g.is_empty:
            continue
        limit = below_m2 / scale[i] ** 2
        parts = [g] if g.geom_type == "Polygon" else list(g.geoms)
        new = [shapely.Polygon(p.exterior, [h for h in p.interiors if shapely.Polygon(h).area >= limit])
               for p in parts]
        if any(len(n.interiors) != len(p.interiors) for n, p in zip(new, parts)):
            out[i] = new[0] if g.geom_type == "Polygon" else shapely.MultiPolygon(new)
    return out


def simplify(geoms: np.ndarray, tolerance_m: float, scale: np.ndarray) -> np.ndarray:
    """Douglas-Peucker with a ground tolerance ``tolerance_m`` metres (topology kept)."""
    geoms = np.asarray(geoms, dtype=object)
    return shapely.simplify(geoms, tolerance_m / scale, preserve_topology=True)


def regularize(geoms: np.ndarray, crs: CRS) -> np.ndarray:
    """Right-angle footprints (edges snapped parallel / perpendicular to each building's main
    direction, 45° allowed) with ``buildingregulariser``, in the local UTM zone. A polygon the
    package cannot regularise (or empties) is kept as it was. Needs the ``[regularize]`` extra."""
    try:
        from buildingregulariser import regularize_geodataframe
    except ImportError as exc:
        raise InputError("regularize needs the buildingregulariser package: "
                         "pip install 'fastsam-geo[regularize]'") from exc
    import geopandas as gpd

    geoms = np.asarray(geoms, dtype=object)
    if not len(geoms):
        return geoms
    if crs is None:
        raise InputError("regularize needs polygons with a CRS")
    src = gpd.GeoDataFrame({"i": np.arange(len(geoms))}, geometry=list(geoms), crs=crs)
    local = src.estimate_utm_crs() if crs.is_geographic or not _metric(crs) else crs
    work = src.to_crs(local)
    out = regularize_geodataframe(work, parallel_threshold=PARALLEL_THRESHOLD_M,
                                  simplify_tolerance=SIMPLIFY_TOLERANCE_M, num_cores=1)
    out = out.to_crs(crs)
    result = geoms.copy()
    done = out.dissolve(by="i") if out["i"].duplicated().any() else out.set_index("i")
    for i, g in zip(done.index, done.geometry):
        if g is not None and not g.is_empty and g.is_valid and g.area > 0:
            result[int(i)] = g
    return result


def _metric(crs: CRS) -> bool:
    units = {a.unit_name for a in crs.axis_info}
    return units <= {"metre", "meter"} and crs.to_epsg() != 3857


def clean(geoms: np.ndarray, crs: CRS, *, regularize_: bool = False, simplify_m: float = 0.0,
          min_area_m2: float = 0.0, max_area_m2: float | None = None,
          fill_holes_below_m2: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Apply the clean-up steps to polygons ``geoms`` (N,) in ``crs``.

    Returns ``(cleaned, keep)``: the cleaned polygons of the kept objects and the indexes
    (into ``geoms``) of the objects kept, so per-object values (scores) can follow.
    """
    geoms = np.asarray(geoms, dtype=object)
    keep = np.arange(len(geoms))
    if not len(geoms):
        return geoms, keep
    scale = metres_per_unit(geoms, crs)
    if fill_holes_below_m2 > 0:
        geoms = fill_holes(geoms, fill_holes_below_m2, scale)
    if regularize_:
        geoms = regularize(geoms, crs)
    if simplify_m > 0:
        geoms = simplify(geoms, simplify_m, scale)
    if min_area_m2 > 0 or max_area_m2 is not None:
        area = geodesic_areas(geoms, crs) if crs is not None else shapely.area(geoms)
        ok = area >= min_area_m2
        if max_area_m2 is not None:
            ok &= area <= max_area_m2
        geoms, keep = geoms[ok], keep[ok]
    ok = ~shapely.is_empty(geoms)
    return geoms[ok], keep[ok]
