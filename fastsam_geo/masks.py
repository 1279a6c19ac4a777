"""Pure operations on instance masks: compaction, validity masking, crop geometry, IoU.

Boxes are ``(x0, y0, x1, y1)`` int with exclusive max, in the pixel frame the caller
names. A *crop* is a bool array covering exactly its box.
"""

from __future__ import annotations

import numpy as np

from .errors import SegmenterError
from .types import Instances, MaskSet, boxes_from_masks

__all__ = ["boxes_from_masks", "crop_window", "featureless", "intersect", "to_instances", "window_iou"]

Box = tuple[int, int, int, int]


def to_instances(result: MaskSet | Instances, shape: tuple[int, int],
                 valid: np.ndarray | None = None, min_area: int = 1) -> Instances:
    """Compact one tile's segmenter output into :class:`Instances`.

    ``shape`` is the tile's ``(H, W)``: the masks must match it (masks at another
    resolution are a segmenter bug and raise :class:`SegmenterError`). Pixels where the
    bool ``valid`` ``(H, W)`` is False (nodata, alpha, internal mask) are removed from every
    mask, so masked pixels never belong to an object. Masks left with fewer than
    ``min_area`` pixels are dropped; boxes are recomputed tight around what remains.
    """
    if isinstance(result, Instances):
        if tuple(result.shape) != tuple(shape):
            raise SegmenterError(f"segmenter returned masks for a {result.shape} image, "
                                 f"expected the tile's native {tuple(shape)}")
        boxes, crops, scores, quality = result.boxes, result.crops, result.scores, result.quality
    elif isinstance(result, MaskSet):
        if len(result) and result.masks.shape[1:] != tuple(shape):
            raise SegmenterError(f"segmenter returned masks of shape {result.masks.shape[1:]}, "
                                 f"expected the tile's native {tuple(shape)}")
        boxes = boxes_from_masks(result.masks)
        crops = [result.masks[i, y0:y1, x0:x1] for i, (x0, y0, x1, y1) in enumerate(boxes)]
        scores, quality = result.scores, None
    else:
        raise SegmenterError(f"segmenter must return MaskSet objects, got {type(result).__name__}")

    out_boxes, out_crops, out_scores, out_quality = [], [], [], []
    qualities = np.full(len(crops), np.nan, np.float32) if quality is None else np.asarray(quality, np.float32)
    if valid is not None and valid.all():
        valid = None
    invalid = None if valid is None else ~valid
    for (x0, y0, x1, y1), crop, score, q in zip(np.asarray(boxes, dtype=np.int64).tolist(), crops, scores,
                                                qualities):
        if valid is not None and x1 > x0 and y1 > y0:
            crop = crop & valid[y0:y1, x0:x1]
        tight = _tighten(crop)
        if tight is None:
            continue
        tx0, ty0, tx1, ty1 = tight
        crop = crop[ty0:ty1, tx0:tx1]
        if np.count_nonzero(crop) < min_area:
            continue
        out_boxes.append((x0 + tx0, y0 + ty0, x0 + tx1, y0 + ty1))
        out_crops.append(np.ascontiguousarray(crop))
        out_scores.append(score)
        out_quality.append(q)
    if not out_crops:
        return Instances.empty(tuple(shape), invalid)
    return Instances(np.asarray(out_boxes, dtype=np.int32).reshape(-1, 4),
                     np.asarray(out_scores, dtype=np.float32), tuple(out_crops), tuple(shape), invalid,
                     None if quality is None else np.asarray(out_quality, np.float32))


def _tighten(crop: np.ndarray) -> Box | None:
    """Tight box of the True pixels of a 2-D bool array, or None if it has none."""
    if crop.size == 0:
        return None
    rows = np.flatnonzero(crop.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(crop.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def intersect(a: Box, b: Box) -> Box | None:
    """Intersection of two boxes, or None when they do not overlap."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    if x1 <= x0 or y1 <= y0:
        return None
    return (x0, y0, x1, y1)


def crop_window(crop: np.ndarray, box: Box, window: Box) -> np.ndarray:
    """The part of ``crop`` (covering ``box``) inside ``window``, as a window-sized bool array.

    Pixels of the window outside the box are False.
    """
    wx0, wy0, wx1, wy1 = window
    out = np.zeros((wy1 - wy0, wx1 - wx0), dtype=bool)
    inter = intersect(box, window)
    if inter is None:
        return out
    ix0, iy0, ix1, iy1 = inter
    out[iy0 - wy0:iy1 - wy0, ix0 - wx0:ix1 - wx0] = \
        crop[iy0 - box[1]:iy1 - box[1], ix0 - box[0]:ix1 - box[0]]
    return out


def window_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two same-shape bool arrays (0 when both are empty)."""
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b)) / union if union else 0.0


def merge_overlapping(inst: Instances, iou: float, *, contain: float = 0.8) -> Instances:
    """Fuse instances of one tile that cover the same object, highest score first.

    An instance whose mask has IoU >= ``iou`` with an already kept one, or lies at least
    ``contain`` inside it, is OR-ed into it (FastSAM often returns a large object as two
    or three part masks, or the same object twice). For object classes that do not nest
    (buildings); FastSAM's everything mode keeps nested parts and should not use this.
    """
    if len(inst) < 2:
        return inst
    order = np.argsort(-inst.scores, kind="stable")
    kept: list[list] = []  # [box, crop, score, area, quality]
    for i in order:
        box = tuple(int(v) for v in inst.boxes[i])
        crop = inst.crops[i]
        area = int(np.count_nonzero(crop))
        for k in kept:
            ib = intersect(box, k[0])
            if ib is None:
                continue
            a = crop_window(crop, box, ib)
            b = crop_window(k[1], k[0], ib)
            inter = int(np.count_nonzero(a & b))
            if inter == 0:
                continue
            union = area + k[3] - inter
            if inter / union >= iou or inter / max(area, 1) >= contain:
                ub = (min(box[0], k[0][0]), min(box[1], k[0][1]), max(box[2], k[0][2]), max(box[3], k[0][3]))
                k[1] = crop_window(k[1], k[0], ub) | crop_window(crop, box, ub)
                k[0], k[3] = ub, int(np.count_nonzero(k[1]))
                break
        else:
            kept.append([box, crop, float(inst.scores[i]), area, float(inst.qualities[i])])
    return Instances(np.asarray([k[0] for k in kept], np.int32).reshape(-1, 4),
                     np.asarray([k[2] for k in kept], np.float32), tuple(k[1] for k in kept), inst.shape,
                     quality=None if inst.quality is None else np.asarray([k[4] for k in kept], np.float32))


DEDUP_IOU = 0.5
DEDUP_CONTAIN = 0.2
"""Duplicate suppression: masks with IoU >= DEDUP_IOU, or sharing DEDUP_CONTAIN of the smaller,
show one object (buildings do not overlap: a fifth of a roof covered by another mask is a
duplicate or a nested part). Measured with the bundled model on the eight shared OpenAerialMap
mosaics (benchmarks/seams_oam.py, within tiles and across them): F1@0.5 0.618 / 0.620 / 0.622 /
0.622 for 0.8 / 0.5 / 0.3 / 0.2, output pairs overlapping by more than 20 % of the smaller
19 / 13 / 7 / 0."""


def suppress_duplicates(inst: Instances, iou: float = DEDUP_IOU, contain: float = DEDUP_CONTAIN) -> Instances:
    """One mask per object of one tile: mask-level NMS, by masks, not boxes.

    Highest score first, a mask is dropped when its IoU with a kept mask is at least ``iou``,
    or when at least ``contain`` of the smaller of the two lies in the other (a building and a
    part of it, the same roof twice: a box NMS keeps both when their boxes differ). Kept masks
    stay in their original order.
    """
    n = len(inst)
    if n < 2:
        return inst
    b = inst.boxes.astype(np.int64)
    ix0 = np.maximum(b[:, None, 0], b[None, :, 0])
    iy0 = np.maximum(b[:, None, 1], b[None, :, 1])
    ix1 = np.minimum(b[:, None, 2], b[None, :, 2])
    iy1 = np.minimum(b[:, None, 3], b[None, :, 3])
    touching = (ix1 > ix0) & (iy1 > iy0)
    np.fill_diagonal(touching, False)
    if not touching.any():
        return inst
    areas = inst.areas
    order = np.argsort(-inst.scores, kind="stable")
    kept: list[int] = []
    for i in order:
        dup = False
        for k in kept:
            if not touching[i, k]:
                continue
            win = (int(ix0[i, k]), int(iy0[i, k]), int(ix1[i, k]), int(iy1[i, k]))
            inter = int(np.count_nonzero(crop_window(inst.crops[i], tuple(b[i]), win)
                                         & crop_window(inst.crops[k], tuple(b[k]), win)))
            if inter >= iou * (areas[i] + areas[k] - inter) or inter >= contain * min(areas[i], areas[k]):
                dup = True
                break
        if not dup:
            kept.append(int(i))
    return inst if len(kept) == n else inst.take(sorted(kept))


class Regions:
    """Raster-pixel boxes of interest (prompts, a bbox), asked whether a box touches any of them.

    One vectorised comparison per question, so 100,000 prompt boxes cost a few hundred
    microseconds per object instead of a Python loop over all of them.
    """

    def __init__(self, boxes) -> None:
        self.boxes = np.asarray(list(boxes), dtype=np.int64).reshape(-1, 4)
        b = self.boxes
        self.hull = (int(b[:, 0].min()), int(b[:, 1].min()), int(b[:, 2].max()), int(b[:, 3].max())) if len(b) else None

    def __len__(self) -> int:
        return len(self.boxes)

    def touches(self, box: Box) -> bool:
        """Whether ``box`` (exclusive max) overlaps any region."""
        if self.hull is None or intersect(box, self.hull) is None:
            return False
        b = self.boxes
        return bool(((b[:, 0] < box[2]) & (b[:, 2] > box[0]) & (b[:, 1] < box[3]) & (b[:, 3] > box[1])).any())


FLAT_STD = 4.0
"""Default of :func:`featureless`: grey levels (standard deviation, 8-bit). Measured with the
bundled model: every mask matching a reference building on the eight OAM training mosaics has
>= 15.5 over its box and ring (Nairobi's soft imagery included), every mask it draws on flat
fills, blown-out white and noisy flat colour (sigma 4 per band) <= 1.6."""
FLAT_RING = 5


def featureless(boxes: np.ndarray, grey: np.ndarray, min_std: float = FLAT_STD, ring: int = FLAT_RING) -> np.ndarray:
    """bool ``(N,)``: the ``boxes`` (``(N, 4)`` int ``x0, y0, x1, y1``, exclusive max, tile pixels)
    with nothing in the image to mark an object: the pixels of ``grey`` (``(H, W)``, the tile as
    the network saw it, 0-255) in the box grown by ``ring`` px vary less than ``min_std``
    (standard deviation). A network that draws roofs on flat white (a mosaic's fill without
    nodata, blown-out areas, cloud) draws them where the box and its surroundings are one flat
    tone; a real object differs from its surroundings somewhere in that window. Integral images:
    O(1) per box. ``min_std <= 0``: none.
    """
    b = np.asarray(boxes, np.int64).reshape(-1, 4)
    if len(b) == 0 or min_std <= 0:
        return np.zeros(len(b), bool)
    g = np.asarray(grey, np.float64)
    h, w = g.shape
    s1 = np.zeros((h + 1, w + 1))
    s2 = np.zeros((h + 1, w + 1))
    s1[1:, 1:] = g.cumsum(0).cumsum(1)
    s2[1:, 1:] = (g * g).cumsum(0).cumsum(1)
    x0, x1 = np.clip(b[:, 0] - ring, 0, w), np.clip(b[:, 2] + ring, 0, w)
    y0, y1 = np.clip(b[:, 1] - ring, 0, h), np.clip(b[:, 3] + ring, 0, h)
    area = np.maximum((x1 - x0) * (y1 - y0), 1)

    def total(s: np.ndarray) -> np.ndarray:
        return s[y1, x1] - s[y0, x1] - s[y1, x0] + s[y0, x0]

    mean = total(s1) / area
    var = np.maximum(total(s2) / area - mean * mean, 0.0)
    return np.sqrt(var) < min_std
