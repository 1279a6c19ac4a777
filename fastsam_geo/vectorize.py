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
from .types import MergedObject


def mask_to_geometry(mask: np.ndarray, transform: Affine, *, min_component: int = 16, min_hole: int = 9,
                     simplify: float = 0.0) -> Polygon | MultiPolygon | None:
    """Trace a bool mask ``(H, W)`` whose pixel (0, 0) maps through ``transform``.

    Returns a Polygon (or a MultiPolygon when several 4-connected parts remain), or None for
    an empty mask. Speckle is dropped: the largest part is always kept, the others only with
    at least ``min_component`` pixels and 5 % of the largest; holes (interior rings) smaller
    than ``min_hole`` pixels or 1 % of the mask are filled, larger ones (courtyards) kept.
    ``simplify`` is a Douglas-Peucker tolerance in pixels (0: exact pixel outlines, the
    polygons ``rasterio.features.shapes`` traces with 4-connectivity). Geometries are valid:
    parts are traced one 4-connected part at a time, so rings can touch only at corners.
    """
    import cv2

    if not mask.any():
        return None
    padded = np.pad(mask.astype(bool, copy=False), 1).view(np.uint8)  # no outline touches the edge
    n, lab, stats, _ = cv2.connectedComponentsWithStats(padded, connectivity=4)
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = areas >= max(min_component, 0.05 * areas.max())
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
