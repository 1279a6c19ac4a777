"""Frozen value types shared by every layer, and the segmenter Protocol.

Conventions used throughout the package:

* pixel boxes are ``(x0, y0, x1, y1)`` with ``x1``/``y1`` *exclusive* (slice bounds), in
  pixels of whatever frame the docstring names (tile pixels or raster pixels);
* ``transform`` is an :class:`affine.Affine` mapping (col, row) pixel corners to map
  coordinates in the raster's CRS; nothing in the package assumes north-up;
* images are ``(H, W, 3) uint8`` RGB; masks are ``bool``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
from affine import Affine
from pyproj import CRS

from .errors import SegmenterError


@dataclass(frozen=True)
class RasterInfo:
    """What fastsam-geo needs to know about a raster, read once from its header.

    ``crs`` is a :class:`pyproj.CRS`; ``transform`` maps pixel (col, row) to map (x, y);
    ``nodata`` is the per-band nodata value or ``None``; ``colorinterp`` names each band
    (``"red"``, ``"gray"``, ``"alpha"``, ...); ``overviews`` counts band 1's overview levels.
    """

    path: str
    width: int
    height: int
    count: int
    dtype: str
    crs: CRS
    transform: Affine
    nodata: float | None = None
    colorinterp: tuple[str, ...] = ()
    has_mask: bool = False
    overviews: int = 0
    block_shape: tuple[int, int] = (0, 0)

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size (x, y) in CRS units, always positive."""
        t = self.transform
        return (float(np.hypot(t.a, t.d)), float(np.hypot(t.b, t.e)))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of the raster in its CRS."""
        xs, ys = zip(*(self.transform @ (c, r) for c, r in
                       ((0, 0), (self.width, 0), (0, self.height), (self.width, self.height))))
        return (min(xs), min(ys), max(xs), max(ys))


@dataclass(frozen=True)
class Tile:
    """One read window of a raster: geometry only, no pixels; hashable.

    ``x, y, width, height`` are the window in raster pixels. ``core`` is the part of the
    raster this tile *owns* when merging seams, ``(x0, y0, x1, y1)`` in raster pixels: the
    cores of a grid partition the raster exactly (boundaries at the middle of each overlap,
    raster edges belong to the edge tiles). ``row``/``col`` index the tile in its grid.
    """

    row: int
    col: int
    x: int
    y: int
    width: int
    height: int
    core: tuple[int, int, int, int]
    transform: Affine  # of the tile's own pixel (0, 0), i.e. raster transform * translation(x, y)

    @property
    def box(self) -> tuple[int, int, int, int]:
        """The window as an ``(x0, y0, x1, y1)`` raster-pixel box."""
        return (self.x, self.y, self.x + self.width, self.y + self.height)


@dataclass(frozen=True, eq=False)
class MaskSet:
    """All instance masks a segmenter found in one tile image.

    masks:  bool ``(N, H, W)`` in tile pixels, at the image's native resolution.
    scores: float ``(N,)`` confidence of each mask (higher is better).
    boxes:  float ``(N, 4)`` XYXY tile pixels; derived from the masks (tight, exclusive
            max) when ``None``.
    """

    masks: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray | None = None

    def __post_init__(self) -> None:
        masks = np.asarray(self.masks)
        if masks.ndim == 2 and masks.shape[0] == 0:
            masks = masks.reshape(0, 0, 0)
        if masks.ndim != 3:
            raise SegmenterError(f"MaskSet.masks must be (N, H, W), got shape {masks.shape}")
        masks = masks.astype(bool, copy=False)
        scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if scores.shape[0] != masks.shape[0]:
            raise SegmenterError(
                f"MaskSet has {masks.shape[0]} masks but {scores.shape[0]} scores")
        boxes = self.boxes
        if boxes is None:
            boxes = boxes_from_masks(masks).astype(np.float32)
        else:
            boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
            if boxes.shape[0] != masks.shape[0]:
                raise SegmenterError(
                    f"MaskSet has {masks.shape[0]} masks but {boxes.shape[0]} boxes")
        object.__setattr__(self, "masks", masks)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "boxes", boxes)

    def __len__(self) -> int:
        return int(self.masks.shape[0])


def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
    """Tight ``(N, 4)`` int XYXY boxes (exclusive max) of bool masks ``(N, H, W)``.

    Empty masks get the box ``(0, 0, 0, 0)``.
    """
    n = masks.shape[0]
    out = np.zeros((n, 4), dtype=np.int64)
    if n == 0:
        return out
    rows = masks.any(axis=2)  # (N, H)
    cols = masks.any(axis=1)  # (N, W)
    has = rows.any(axis=1)
    h, w = masks.shape[1:]
    out[:, 0] = np.argmax(cols, axis=1)
    out[:, 1] = np.argmax(rows, axis=1)
    out[:, 2] = w - np.argmax(cols[:, ::-1], axis=1)
    out[:, 3] = h - np.argmax(rows[:, ::-1], axis=1)
    out[~has] = 0
    return out


@dataclass(frozen=True, eq=False)
class Instances:
    """Compact instance masks of one tile: each mask cropped to its own tight box.

    The pipeline's working form of a :class:`MaskSet` (300 full-tile masks are 300 MB;
    their crops a few MB), and the per-tile record that caches and merging use.

    boxes:  int32 ``(N, 4)`` XYXY (exclusive max) in tile pixels.
    scores: float32 ``(N,)``.
    crops:  N bool arrays, crop ``i`` of shape ``(y1 - y0, x1 - x0)`` of box ``i``.
    shape:  ``(H, W)`` of the tile.
    invalid: bool ``(H, W)``, True where the tile's pixels are nodata or masked; ``None`` when
            every pixel is valid. Masks never cover invalid pixels; tracing uses this to never
            fill a hole over them.
    quality: float32 ``(N,)`` mask quality in [0, 1] from the mask probabilities (the FastSAM
            engine's stability score), or ``None`` when the segmenter gives none
            (:attr:`qualities` is then NaN).
    """

    boxes: np.ndarray
    scores: np.ndarray
    crops: tuple[np.ndarray, ...]
    shape: tuple[int, int]
    invalid: np.ndarray | None = field(default=None, repr=False)
    quality: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.crops)

    @property
    def qualities(self) -> np.ndarray:
        """float32 ``(N,)``: :attr:`quality`, or NaN for each instance when there is none."""
        if self.quality is None:
            return np.full(len(self), np.nan, np.float32)
        return np.asarray(self.quality, np.float32).reshape(-1)

    @property
    def areas(self) -> np.ndarray:
        """Pixel count of each mask, int64 ``(N,)``."""
        return np.array([int(c.sum()) for c in self.crops], dtype=np.int64)

    def take(self, idx: Sequence[int] | np.ndarray) -> Instances:
        """The instances at ``idx`` (indices or a bool mask), in that order."""
        idx = np.arange(len(self))[np.asarray(idx)] if len(self) else np.zeros(0, dtype=int)
        return Instances(self.boxes[idx].reshape(-1, 4), self.scores[idx],
                         tuple(self.crops[i] for i in idx), self.shape, self.invalid,
                         None if self.quality is None else self.qualities[idx])

    def dense(self) -> MaskSet:
        """The same instances as a full-tile :class:`MaskSet`."""
        h, w = self.shape
        masks = np.zeros((len(self), h, w), dtype=bool)
        for i, (x0, y0, x1, y1) in enumerate(self.boxes):
            masks[i, y0:y1, x0:x1] = self.crops[i]
        return MaskSet(masks, self.scores, self.boxes.astype(np.float32))

    @staticmethod
    def empty(shape: tuple[int, int], invalid: np.ndarray | None = None) -> Instances:
        return Instances(np.zeros((0, 4), np.int32), np.zeros(0, np.float32), (), shape, invalid)


@runtime_checkable
class Segmenter(Protocol):
    """Anything that segments every object in a batch of tile images.

    ``images`` are ``(H, W, 3) uint8`` RGB at the tile's native resolution (sizes may differ
    within a batch at raster edges). Return one :class:`MaskSet` (or :class:`Instances`)
    per image, in order. Optional attributes the pipeline honours: ``batch_size`` (int)
    and ``cache_key`` (str identifying model + parameters, for result caches).
    """

    def __call__(self, images: list[np.ndarray]) -> Sequence[MaskSet | Instances]: ...


@dataclass(frozen=True)
class Progress:
    """A progress report: ``done`` of ``total`` tiles, plus objects found so far."""

    done: int
    total: int
    objects: int = 0
    message: str = ""


ProgressCallback = Callable[[Progress], "bool | None"]
"""Called after each batch; returning ``False`` cancels the run (QgsTask-style)."""


Part = tuple[tuple[int, int, int, int], np.ndarray]
"""A raster-pixel box ``(x0, y0, x1, y1)`` and the bool crop covering exactly that box."""

DENSE_LIMIT = 1 << 24
"""Most pixels (16 MP, 16 MB of bool) an object's mask is materialised over in one array; larger
boxes (objects hundreds of tiles long) are handled part by part or band by band."""


def paint(parts: Sequence[Part], window: tuple[int, int, int, int]) -> np.ndarray:
    """The union of ``parts`` inside the raster-pixel ``window``, as a window-sized bool array."""
    wx0, wy0, wx1, wy1 = window
    out = np.zeros((wy1 - wy0, wx1 - wx0), dtype=bool)
    for (x0, y0, x1, y1), crop in parts:
        ix0, iy0, ix1, iy1 = max(x0, wx0), max(y0, wy0), min(x1, wx1), min(y1, wy1)
        if ix1 > ix0 and iy1 > iy0:
            out[iy0 - wy0:iy1 - wy0, ix0 - wx0:ix1 - wx0] |= crop[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0]
    return out


@dataclass(frozen=True, eq=False)
class MergedObject:
    """One object after seam merging, in raster pixels.

    ``parts`` are the tile views the object is made of, each a :data:`Part` (raster-pixel box and
    its bool crop): one part for an object some tile saw whole, several (which may overlap) for
    an object joined across tiles. The object's mask is their union. ``box`` is the union of the
    part boxes ``(x0, y0, x1, y1)`` (exclusive max). ``score`` is the model's confidence (for a
    joined object, the pixel-weighted mean of its views'), ``tiles`` how many tiles contributed,
    ``sources`` names the tile instances used as ``(tile index, instance index, pixels)``.
    ``quality`` is the mask quality (:attr:`Instances.quality`; for a joined object the
    pixel-weighted mean of its views'), NaN when the segmenter gives none.
    ``nodata`` are :data:`Part` s marking masked (nodata) pixels inside the parts' boxes; a hole
    over such pixels is never filled when the object is traced.

    The union is materialised only on demand (:attr:`mask`); :attr:`area`, :meth:`contains` and
    :meth:`count_in` work on the parts, so an object hundreds of tiles long costs no
    bounding-box-sized array.
    """

    box: tuple[int, int, int, int]
    parts: tuple[Part, ...] = field(repr=False)
    score: float
    tiles: int = 1
    sources: tuple[tuple[int, int, int], ...] = ()
    nodata: tuple[Part, ...] = field(default=(), repr=False)
    quality: float = float("nan")

    @classmethod
    def from_mask(cls, box: tuple[int, int, int, int], mask: np.ndarray, score: float, tiles: int = 1,
                  sources: tuple[tuple[int, int, int], ...] = ()) -> MergedObject:
        """An object from one bool ``mask`` covering ``box``."""
        return cls(tuple(int(v) for v in box), ((tuple(int(v) for v in box), mask),), float(score), tiles,
                   sources)

    @functools.cached_property
    def mask(self) -> np.ndarray:
        """The union of the parts as one bool ``(y1 - y0, x1 - x0)`` array over :attr:`box`."""
        if len(self.parts) == 1:
            return self.parts[0][1]
        return self.window_mask(self.box)

    def window_mask(self, window: tuple[int, int, int, int]) -> np.ndarray:
        """The object's pixels inside the raster-pixel ``window``, as a window-sized bool array."""
        return paint(self.parts, window)

    def count_in(self, window: tuple[int, int, int, int]) -> int:
        """Pixels of the object inside ``window``, counted band by band (bounded memory)."""
        wx0, wy0 = max(window[0], self.box[0]), max(window[1], self.box[1])
        wx1, wy1 = min(window[2], self.box[2]), min(window[3], self.box[3])
        if wx1 <= wx0 or wy1 <= wy0:
            return 0
        if len(self.parts) == 1:
            (x0, y0, _, _), crop = self.parts[0]
            return int(np.count_nonzero(crop[wy0 - y0:wy1 - y0, wx0 - x0:wx1 - x0]))
        rows = max(1, DENSE_LIMIT // (wx1 - wx0))
        return sum(int(np.count_nonzero(self.window_mask((wx0, y, wx1, min(wy1, y + rows)))))
                   for y in range(wy0, wy1, rows))

    @functools.cached_property
    def area(self) -> int:
        """Pixels in the object (its parts' union)."""
        return self.count_in(self.box)

    def contains(self, col: float, row: float) -> bool:
        """Whether raster pixel ``(col, row)`` (fractional coordinates allowed) is in the object."""
        c, r = int(np.floor(col)), int(np.floor(row))
        return any(x0 <= c < x1 and y0 <= r < y1 and bool(crop[r - y0, c - x0])
                   for (x0, y0, x1, y1), crop in self.parts)
