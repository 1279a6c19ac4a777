"""How views of one object from different tiles relate: the same object, a piece of it, a
partial view covered by a whole one. Pure functions over bool crops and raster-pixel boxes.

A *view* is one instance mask of one tile, held as a bit-packed crop of its raster-pixel box.
Views of one object disagree as real networks do (a pixel wider here, split there), so every
relation tolerates what a jitter of a pixel or two does to boxes (:func:`tolerance`) and to
the pixels two views share (:func:`near`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .masks import Box, crop_window, intersect
from .tiling import TileGrid
from .types import paint


@dataclass
class View:
    """One view held by the merger: instance ``index`` of tile ``tile``, its raster-pixel box and
    crop, whether it is *whole* (clear of its tile's inner edges) and how far from them."""

    tile: int
    index: int  # instance index within its tile
    box: Box  # raster pixels
    bits: np.ndarray  # the crop, bit-packed along rows (np.packbits axis 1): 8x less held memory
    width: int
    score: float
    area: int
    whole: bool
    edge: float  # px from the box to its tile's nearest inner edge (inf: none)
    nodata: np.ndarray | None  # bit-packed masked pixels of the box (None: all valid)
    quality: float = math.nan  # mask quality (Instances.quality), NaN when the segmenter gives none


def overlap(abox: Box, acrop: np.ndarray, bbox: Box, bcrop: np.ndarray) -> int:
    """Pixels two crops (raster-pixel boxes) share."""
    ib = intersect(abox, bbox)
    if ib is None:
        return 0
    return int(np.count_nonzero(crop_window(acrop, abox, ib) & crop_window(bcrop, bbox, ib)))


def near(wbox: Box, wcrop: np.ndarray, pbox: Box, pcrop: np.ndarray) -> int:
    """Pixels of crop ``p`` within 1 px (4-neighbourhood) of crop ``w`` (raster-pixel boxes)."""
    import cv2

    gbox = grow(wbox, 1)
    ib = intersect(gbox, pbox)
    if ib is None:
        return 0
    grown = cv2.dilate(np.pad(wcrop, 1).view(np.uint8), _CROSS).view(bool)
    return int(np.count_nonzero(crop_window(grown, gbox, ib) & crop_window(pcrop, pbox, ib)))


_CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8)


def tight(mask: np.ndarray) -> Box | None:
    """Tight ``(x0, y0, x1, y1)`` box of a bool array's True pixels, or None."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def tolerance(a: Box, b: Box) -> float:
    """How far the sides of two views' boxes may differ and still show one object: views jitter
    by a pixel or two, more on large objects (2 px, or 15 % of the boxes' size)."""
    return max(2.0, 0.15 * max(a[2] - a[0], a[3] - a[1], b[2] - b[0], b[3] - b[1]))


def within(inner: Box, outer: Box, tol: float) -> bool:
    """Whether box ``inner`` lies inside ``outer`` give or take ``tol`` px on every side."""
    return (inner[0] >= outer[0] - tol and inner[1] >= outer[1] - tol and inner[2] <= outer[2] + tol
            and inner[3] <= outer[3] + tol)


def boxes_close(a: Box, b: Box) -> bool:
    """Boxes whose sides differ by at most :func:`tolerance`: one object, jittered."""
    tol = tolerance(a, b)
    return within(a, b, tol) and within(b, a, tol)


def covers(warea: int, wbox: Box, inter: int, n: int, pbox: Box) -> bool:
    """Whether a whole view (``warea`` pixels, box ``wbox``) shows the object a partial view of
    another tile shows, given the pixels they share give or take 1 px (``inter``) and the partial view's ``n``
    pixels (tight box ``pbox``) inside the whole view's tile: they overlap, and the partial view
    does not reach past the whole one there (a big object's partial view is not covered by a
    piece or a small object inside it)."""
    return inter >= 0.25 * min(warea, n) and within(pbox, wbox, tolerance(wbox, pbox))


class Relations:
    """Relations between the views of one component, judged where both tiles see."""

    def __init__(self, grid: TileGrid, views: dict[int, View], crops: dict[int, np.ndarray]):
        self.grid, self.views, self.crops = grid, views, crops
        self._in: dict[tuple[int, int], tuple[int, Box | None]] = {}
        self.ids = np.array(list(views))
        self.pos = {v: i for i, v in enumerate(self.ids.tolist())}
        self.boxes = np.array([v.box for v in views.values()], dtype=np.int64).reshape(-1, 4)
        self.tiles = np.array([v.tile for v in views.values()])

    def near_boxes(self, v: int, among: np.ndarray | None = None, pad: int = 0) -> list[int]:
        """Views of other tiles whose box meets ``v``'s grown by ``pad`` px (``among``: a bool
        mask over the component's views to choose from)."""
        x0, y0, x1, y1 = self.views[v].box
        b = self.boxes
        hit = ((b[:, 0] < x1 + pad) & (b[:, 2] > x0 - pad) & (b[:, 1] < y1 + pad) & (b[:, 3] > y0 - pad)
               & (self.tiles != self.views[v].tile))
        if among is not None:
            hit &= among
        return self.ids[hit].tolist()

    def containing(self, v: int) -> list[int]:
        """Views of other tiles whose box contains ``v``'s, give or take the pair's jitter
        tolerance: the only candidates :meth:`piece_of` can accept."""
        x0, y0, x1, y1 = self.views[v].box
        b = self.boxes
        size = np.maximum(max(x1 - x0, y1 - y0), (b[:, 2:] - b[:, :2]).max(1))
        tol = np.maximum(2.0, 0.15 * size)
        hit = ((x0 >= b[:, 0] - tol) & (y0 >= b[:, 1] - tol) & (x1 <= b[:, 2] + tol) & (y1 <= b[:, 3] + tol)
               & (self.tiles != self.views[v].tile))
        return self.ids[hit].tolist()

    def inside_tile(self, v: int, t: int) -> tuple[int, Box | None]:
        """Pixels of view ``v`` inside tile ``t``'s window and their tight box (raster px)."""
        if (v, t) not in self._in:
            view = self.views[v]
            ib = intersect(view.box, self.grid.tiles[t].box)
            n, box = 0, None
            if ib is not None:
                part = crop_window(self.crops[v], view.box, ib)
                tb = tight(part)
                if tb is not None:
                    n, box = int(np.count_nonzero(part)), (ib[0] + tb[0], ib[1] + tb[1], ib[0] + tb[2], ib[1] + tb[3])
            self._in[(v, t)] = (n, box)
        return self._in[(v, t)]

    def overlap(self, a: int, b: int) -> int:
        va, vb = self.views[a], self.views[b]
        return overlap(va.box, self.crops[a], vb.box, self.crops[b])

    def same_object(self, a: int, b: int) -> bool:
        """Two whole views of one object: half of the smaller inside the other, and IoU >= 0.6
        or boxes within the jitter tolerance (a small object grown in one view, shrunk in the
        other). A half, a part, or one object of a fused pair is not the whole it lies in."""
        va, vb = self.views[a], self.views[b]
        close = boxes_close(va.box, vb.box)
        if not close and min(va.area, vb.area) < 0.6 * max(va.area, vb.area):
            return False  # IoU >= 0.6 needs areas within 0.6 of each other
        inter = self.overlap(a, b)
        if inter < 0.5 * min(va.area, vb.area):
            return False
        return close or inter >= 0.6 * (va.area + vb.area - inter)

    def piece_of(self, v: int, c: int, nested: bool) -> bool:
        """Whether whole view ``v`` is a piece of the object view ``c`` (another tile) shows: a
        quarter of ``v`` or more inside ``c``, ``v``'s box inside ``c``'s give or take the jitter
        tolerance, and ``c`` reaching clearly past ``v`` within ``v``'s
        tile (a split, a half whose other half was missed, or one of two objects the other tile
        fused). With ``nested`` (objects may nest, FastSAM's everything mode), only a view of at
        least a quarter of ``c``'s pixels there is a piece: a small object inside a large one stays."""
        vv = self.views[v]
        n, cbox = self.inside_tile(c, vv.tile)
        if cbox is None or not within(vv.box, cbox, tolerance(vv.box, cbox)) or boxes_close(vv.box, cbox):
            return False
        if nested and vv.area < 0.25 * n:
            return False  # a small object in a large one (never linked to such a view: SeamMerger._link)
        return self.overlap(v, c) >= 0.25 * vv.area

    def covered(self, p: int, kept: np.ndarray) -> bool:
        """Whether partial view ``p`` is covered (:func:`covers`) by the kept whole views (``kept``:
        a bool mask over the component's views) of another tile, several together when that
        tile split the object."""
        pv = self.views[p]
        by_tile: dict[int, list[int]] = {}
        for k in self.near_boxes(p, kept, pad=1):
            by_tile.setdefault(self.views[k].tile, []).append(k)
        for t, ks in by_tile.items():
            n, pbox = self.inside_tile(p, t)
            if pbox is None:
                continue
            box = self.views[ks[0]].box
            for k in ks[1:]:
                box = union_box(box, self.views[k].box)
            union = paint([(self.views[k].box, self.crops[k]) for k in ks], box)
            if covers(int(np.count_nonzero(union)), box, near(box, union, pv.box, self.crops[p]), n, pbox):
                return True
        return False


def groups(ids: list[int], links: dict[int, set[int]]) -> list[list[int]]:
    """Connected groups of ``ids`` under ``links`` (restricted to ``ids``), in first-seen order."""
    left = set(ids)
    out = []
    for v in ids:
        if v not in left:
            continue
        left.discard(v)
        group, stack = [v], [v]
        while stack:
            for u in links[stack.pop()]:
                if u in left:
                    left.discard(u)
                    group.append(u)
                    stack.append(u)
        out.append(group)
    return out


def grow(box: Box, n: int) -> Box:
    return (box[0] - n, box[1] - n, box[2] + n, box[3] + n)


def union_box(a: Box, b: Box) -> Box:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
