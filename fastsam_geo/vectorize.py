"""Masks to georeferenced polygons, always through an explicit transform.

Each mask is traced on its own crop (tracing a full tile per mask costs ~30x more), with
the transform of the crop's top-left pixel, so coordinates come out in the raster's CRS;
rasterio's default identity transform would silently give pixel coordinates instead.
"""

from __future__ import annotations

import numpy as np
import shapely
from affine import Affine
from shapely.geometry import MultiPolygon, Polygon

from .coords import pixel_to_map
from .types import DENSE_LIMIT, MergedObject, Part, paint


def mask_to_geometry(mask: np.ndarray, transform: Affine, *, min_component: int = 16, min_hole: int = 9,
                     simplify: float = 0.0, invalid: np.ndarray | None = None,
                     min_fraction: float = 0.05) -> Polygon | MultiPolygon | None:
    """Trace a bool mask ``(H, W)`` whose pixel (0, 0) maps through ``transform``.

    Returns a Polygon (or a MultiPolygon when several 4-connected parts remain), or None for
    an empty mask. Speckle is dropped: the largest part is always kept, the others only with
    at least ``min_component`` pixels and ``min_fraction`` of the largest; holes (interior rings)
    smaller than ``min_hole`` pixels or 1 % of the mask are filled, larger ones (courtyards)
    kept, and so is any hole over a pixel that is True in ``invalid`` (bool ``(H, W)``:
    nodata never ends up inside a polygon). ``simplify`` is a Douglas-Peucker tolerance in
    pixels (0: exact pixel outlines, the polygons ``rasterio.features.shapes`` traces with
    4-connectivity). Geometries are valid: parts are traced one 4-connected part at a time, so
    rings can touch only at corners.
    """
    import cv2

    if not mask.any():
        return None
    padded = np.pad(mask.astype(bool, copy=False), 1).view(np.uint8)  # no outline touches the edge
    n, lab, stats, _ = cv2.connectedComponentsWithStats(padded, connectivity=4)
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = areas >= max(min_component, min_fraction * areas.max())
    keep[int(np.argmax(areas))] = True
    if n == 2:
        crops = [(padded, 0, 0)]
    else:
        crops = []
        for k in np.flatnonzero(keep) + 1:
            x, y, w, h = (int(v) - 1 for v in stats[k, :4])
            crops.append(((lab[y:y + h + 2, x:x + w + 2] == k).view(np.uint8), x, y))
    coords, ring, ring_part, hole, area = trace_rings(crops)
    drop = hole & (area < max(min_hole, 0.01 * float(areas[keep].sum()))) if min_hole > 0 else np.zeros_like(hole)
    if invalid is not None and drop.any():
        drop &= ~_over_invalid(coords, ring, drop, np.pad(invalid, 1))
    if drop.any() and len(crops) > 1:  # parts on islands in a filled hole are covered now
        drop |= _islands_in(coords, ring, ring_part, hole, drop)[ring_part]
    if drop.any():
        coords, ring = coords[~drop[ring]], (np.cumsum(~drop) - 1)[ring[~drop[ring]]]
        ring_part = np.unique(ring_part[~drop], return_inverse=True)[1]
    x, y = pixel_to_map(coords[:, 0] - 1, coords[:, 1] - 1, transform)  # -1: the padding
    parts = shapely.polygons(shapely.linearrings(x, y, indices=ring), indices=ring_part)
    geom: Polygon | MultiPolygon = parts[0] if len(parts) == 1 else \
        MultiPolygon(sorted(parts, key=lambda p: -p.area))
    if simplify > 0:  # traced outlines are valid by construction (property-tested); simplified ones are checked
        geom = geom.simplify(simplify * np.sqrt(abs(transform.determinant)), preserve_topology=True)
        if not geom.is_valid:
            geom = _largest_polygonal(shapely.make_valid(geom))
    return geom


def trace_rings(crops: list[tuple[np.ndarray, int, int]]) -> tuple[np.ndarray, ...]:
    """Exact pixel-edge outlines of 4-connected parts, one part per crop.

    ``crops``: ``(part, x, y)`` with ``part`` a ``(h, w)`` uint8 array holding one 4-connected
    part whose border pixels are 0, and ``(x, y)`` its offset. Returns ``(coords, ring,
    ring_part, hole, area)``: ``coords`` ``(M, 2)`` float, one vertex per corner of each
    outline in pixel-corner coordinates (pixel ``(r, c)`` spans ``x`` ``c..c+1`` and ``y``
    ``r..r+1``), ``ring`` ``(M,)`` the ring of each vertex; per ring: ``ring_part`` the
    crop's index, ``hole`` False for the outline (each part's first ring) and True for its
    holes, ``area`` in pixels (for a hole: the pixels it encloses, islands included).

    OpenCV traces pixel *centres*, 8-connected; to trace pixel *edges* each part is traced
    on its cell complex: a ``(2h+1, 2w+1)`` grid whose odd cells are the pixels and whose
    even cells are the edges and corners between them, on where a pixel they bound is on
    (the pixels spread to odd cells, dilated 3x3). Its boundary runs along the pixel edges;
    the corners OpenCV cuts diagonally are put back, then only corner cells are kept.
    Parts are traced one at a time so two that touch at a corner stay two polygons.
    """
    import cv2

    chains, ring_part, hole, offsets = [], [], [], []
    kernel = np.ones((3, 3), np.uint8)
    for part, (crop, x, y) in enumerate(crops):
        h, w = crop.shape
        cells = np.zeros((2 * h + 1, 2 * w + 1), np.uint8)
        cells[1::2, 1::2] = crop
        contours, hierarchy = cv2.findContours(cv2.dilate(cells, kernel), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
        for i in np.argsort(hierarchy[0][:, 3], kind="stable"):  # the outline (parent -1) first, then holes
            chains.append(contours[i].reshape(-1, 2))
            ring_part.append(part)
            hole.append(hierarchy[0][i, 3] >= 0)
            offsets.append((x, y))
    pts, ring = _corners(chains)
    coords = pts / 2.0 + np.asarray(offsets, float)[ring]
    after = _cyclic_next(np.bincount(ring, minlength=len(chains)))
    cross = coords[:, 0] * coords[after, 1] - coords[after, 0] * coords[:, 1]
    area = np.abs(np.bincount(ring, weights=cross, minlength=len(chains))) / 2
    return coords, ring, np.asarray(ring_part), np.asarray(hole, bool), area


def _over_invalid(coords: np.ndarray, ring: np.ndarray, which: np.ndarray, invalid: np.ndarray) -> np.ndarray:
    """For each ring flagged in ``which`` (pixel-corner ``coords`` in the frame of the bool
    ``invalid`` array), whether it encloses the centre of an invalid pixel (bool per ring)."""
    out = np.zeros(len(which), bool)
    for r in np.flatnonzero(which):
        pts = coords[ring == r]
        x0, y0 = np.floor(pts.min(axis=0)).astype(int)
        x1, y1 = np.ceil(pts.max(axis=0)).astype(int)
        rows, cols = np.nonzero(invalid[y0:y1, x0:x1])
        if len(rows):
            poly = shapely.Polygon(pts)
            out[r] = bool(shapely.contains_xy(poly, cols + x0 + 0.5, rows + y0 + 0.5).any())
    return out


def _islands_in(coords: np.ndarray, ring: np.ndarray, ring_part: np.ndarray, hole: np.ndarray,
                filled: np.ndarray) -> np.ndarray:
    """Which parts lie inside one of the ``filled`` holes (bool per part)."""
    first = np.searchsorted(ring, np.arange(len(hole)))  # each ring's first vertex
    outline = np.flatnonzero(~hole)  # one per part, in part order
    # an outline starts at the top-left corner of its top-left pixel: that pixel's centre is inside
    x, y = (coords[first[outline]] + 0.5).T
    in_filled = filled[ring]
    holes = shapely.polygons(shapely.linearrings(coords[in_filled], indices=np.unique(ring[in_filled],
                                                                                    return_inverse=True)[1]))
    return shapely.contains_xy(holes[:, None], x[None, :], y[None, :]).any(axis=0)


def _corners(chains: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Closed 8-connected chains of cell-complex cells ``(N_i, 2)`` -> their corner cells
    ``(M, 2)`` and each corner's chain index ``(M,)``, in order along each chain."""
    lengths = np.array([len(c) for c in chains])
    chain = np.concatenate(chains)
    ring = np.repeat(np.arange(len(chains)), lengths)
    nxt = chain[_cyclic_next(lengths)]
    diagonal = (nxt != chain).all(axis=1)
    # a diagonal step joins the middles of two pixel edges: the corner they share (the cell
    # with the even coordinate of each) was cut; put it back after the step's first cell
    cut = np.where(chain % 2 == 0, chain, nxt)
    take = np.column_stack([np.ones(len(chain), bool), diagonal])
    pts = np.stack([chain, cut], axis=1)[take]
    ring = np.column_stack([ring, ring])[take]
    corner = (pts % 2 == 0).all(axis=1)
    pts, ring = pts[corner], ring[corner]
    # keep the corners where the outline turns
    lengths = np.bincount(ring, minlength=len(chains))
    after = _cyclic_next(lengths)
    before = np.empty_like(after)
    before[after] = np.arange(len(after))
    d_in, d_out = pts - pts[before], pts[after] - pts
    turns = d_in[:, 0] * d_out[:, 1] != d_in[:, 1] * d_out[:, 0]
    return pts[turns], ring[turns]


def _cyclic_next(lengths: np.ndarray) -> np.ndarray:
    """Index of the next element within each of consecutive cycles of ``lengths``."""
    idx = np.arange(int(lengths.sum())) + 1
    ends = np.cumsum(lengths)
    idx[ends[lengths > 0] - 1] = (ends - lengths)[lengths > 0]
    return idx


def _largest_polygonal(geom: shapely.Geometry) -> Polygon | MultiPolygon:
    if isinstance(geom, Polygon | MultiPolygon):
        return geom
    polys = [g for g in getattr(geom, "geoms", []) if isinstance(g, Polygon | MultiPolygon)]
    return max(polys, key=lambda g: g.area) if polys else Polygon()


def object_geometry(obj: MergedObject, transform: Affine, *, min_component: int = 16, min_hole: int = 9,
                    simplify: float = 0.0, dense_limit: int = DENSE_LIMIT) -> Polygon | MultiPolygon | None:
    """Trace a merged object (raster pixels) with the raster ``transform``; rules as
    :func:`mask_to_geometry`.

    Objects whose box holds at most ``dense_limit`` pixels are traced from their mask; longer
    ones (a road or river hundreds of tiles long) part by part, the exact pixel outlines united
    with shapely, so no array the size of their bounding box is ever made.
    """
    x0, y0, x1, y1 = obj.box
    if len(obj.parts) == 1 or (x1 - x0) * (y1 - y0) <= dense_limit:
        invalid = paint(obj.nodata, obj.box) if obj.nodata else None
        return mask_to_geometry(obj.mask, transform @ Affine.translation(x0, y0), min_component=min_component,
                                min_hole=min_hole, simplify=simplify, invalid=invalid)
    # exact pixel outlines of each part, in raster pixel coordinates, united
    traced = [mask_to_geometry(crop, Affine.translation(bx0, by0), min_component=0, min_hole=0, min_fraction=0)
              for (bx0, by0, _, _), crop in obj.parts]
    geom = shapely.union_all([g for g in traced if g is not None])
    geom = _clean(geom, min_component, min_hole, obj.nodata)
    if geom is None:
        return None
    geom = shapely.transform(geom, lambda xy: np.column_stack(pixel_to_map(xy[:, 0], xy[:, 1], transform)))
    if simplify > 0:
        geom = geom.simplify(simplify * np.sqrt(abs(transform.determinant)), preserve_topology=True)
        if not geom.is_valid:
            geom = _largest_polygonal(shapely.make_valid(geom))
    return geom


def _clean(geom, min_component: int, min_hole: int, nodata) -> Polygon | MultiPolygon | None:
    """:func:`mask_to_geometry`'s speckle and hole rules on a pixel-coordinate (Multi)Polygon."""
    polys = [p for p in getattr(geom, "geoms", [geom]) if isinstance(p, Polygon) and not p.is_empty]
    if not polys:
        return None
    areas = np.array([p.area for p in polys])
    keep = areas >= max(min_component, 0.05 * areas.max())
    keep[int(np.argmax(areas))] = True
    polys = [p for p, k in zip(polys, keep) if k]
    limit = max(min_hole, 0.01 * float(areas[keep].sum())) if min_hole > 0 else 0
    out = []
    for p in polys:
        holes = []
        for ring in p.interiors:
            h = Polygon(ring)
            if h.area >= limit or (nodata and _hole_over(h, nodata)):
                holes.append(ring)
        out.append(Polygon(p.exterior, holes))
    geom = shapely.union_all(out)  # islands in filled holes are covered now
    return geom if isinstance(geom, Polygon) else MultiPolygon(sorted(geom.geoms, key=lambda g: -g.area))


def _hole_over(hole: Polygon, nodata: tuple[Part, ...]) -> bool:
    """Whether a pixel-coordinate hole encloses the centre of a pixel of the ``nodata`` parts."""
    minx, miny, maxx, maxy = hole.bounds
    x0, y0 = int(np.floor(minx)), int(np.floor(miny))
    rows, cols = np.nonzero(paint(nodata, (x0, y0, int(np.ceil(maxx)), int(np.ceil(maxy)))))
    return bool(len(rows)) and bool(shapely.contains_xy(hole, cols + x0 + 0.5, rows + y0 + 0.5).any())


def objects_to_records(objects: list[MergedObject], transform: Affine, *, min_component: int = 16,
                       min_hole: int = 9, simplify: float = 0.0) -> tuple[list, list[float]]:
    """Vectorise merged objects (raster pixels) with the raster ``transform``.

    Returns ``(geometries, scores)`` for the objects that traced to a non-empty geometry; every
    geometry is a MultiPolygon (see :func:`as_multipolygons`).
    """
    geoms, kept = objects_to_rows(objects, transform, min_component=min_component, min_hole=min_hole,
                                  simplify=simplify)
    return geoms, [o.score for o in kept]


def objects_to_rows(objects: list[MergedObject], transform: Affine, *, min_component: int = 16,
                    min_hole: int = 9, simplify: float = 0.0) -> tuple[list, list[MergedObject]]:
    """Like :func:`objects_to_records`, but returns ``(geometries, objects)``: the objects that
    traced to a non-empty geometry, aligned with their geometries (for any per-object column)."""
    geoms, kept = [], []
    for obj in objects:
        g = object_geometry(obj, transform, min_component=min_component, min_hole=min_hole, simplify=simplify)
        if g is not None and not g.is_empty:
            geoms.append(g)
            kept.append(obj)
    return list(as_multipolygons(geoms)), kept


def as_multipolygons(geoms) -> np.ndarray:
    """Object ``(N,)`` array of the geometries with every Polygon made a one-part MultiPolygon.

    One geometry type per layer, in memory and in every format: GeoPackage and FlatGeobuf
    declare a layer's type, and a Polygon can become a MultiPolygon without loss while the
    reverse cannot (an object split by nodata, or joined across tiles, has 2-3 parts). Empty
    geometries become None (a missing geometry: NULL in every format); anything else is kept.
    """
    arr = np.empty(len(geoms), dtype=object)
    arr[:] = list(geoms)
    arr[shapely.is_missing(arr) | shapely.is_empty(arr)] = None
    single = shapely.get_type_id(arr) == 3  # Polygon
    arr[single] = [MultiPolygon([g]) for g in arr[single]]
    return arr
