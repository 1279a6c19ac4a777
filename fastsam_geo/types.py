"""Frozen value types shared by every layer, and the segmenter Protocol.

Conventions used throughout the package:

* pixel boxes are ``(x0, y0, x1, y1)`` with ``x1``/``y1`` *exclusive* (slice bounds), in
  pixels of whatever frame the docstring names (tile pixels or raster pixels);
* ``transform`` is an :class:`affine.Affine` mapping (col, row) pixel corners to map
  coordinates in the raster's CRS; nothing in the package assumes north-up;
* images are ``(H, W, 3) uint8`` RGB; masks are ``bool``.
"""

from __future__ import annotations

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
    """

    boxes: np.ndarray
    scores: np.ndarray
    crops: tuple[np.ndarray, ...]
    shape: tuple[int, int]

    def __len__(self) -> int:
        return len(self.crops)

    @property
    def areas(self) -> np.ndarray:
        """Pixel count of each mask, int64 ``(N,)``."""
        return np.array([int(c.sum()) for c in self.crops], dtype=np.int64)

    def take(self, idx: Sequence[int] | np.ndarray) -> Instances:
        """The instances at ``idx`` (indices or a bool mask), in that order."""
        idx = np.arange(len(self))[np.asarray(idx)] if len(self) else np.zeros(0, dtype=int)
        return Instances(self.boxes[idx].reshape(-1, 4), self.scores[idx],
                         tuple(self.crops[i] for i in idx), self.shape)

    def dense(self) -> MaskSet:
        """The same instances as a full-tile :class:`MaskSet`."""
        h, w = self.shape
        masks = np.zeros((len(self), h, w), dtype=bool)
        for i, (x0, y0, x1, y1) in enumerate(self.boxes):
            masks[i, y0:y1, x0:x1] = self.crops[i]
        return MaskSet(masks, self.scores, self.boxes.astype(np.float32))

    @staticmethod
    def empty(shape: tuple[int, int]) -> Instances:
        return Instances(np.zeros((0, 4), np.int32), np.zeros(0, np.float32), (), shape)


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


@dataclass(frozen=True)
class MergedObject:
    """One object after seam merging, in raster pixels.

    ``box`` is ``(x0, y0, x1, y1)`` (exclusive max) in raster pixels, ``mask`` the bool
    ``(y1 - y0, x1 - x0)`` crop, ``score`` the piece-area-weighted mean of the member
    scores, ``tiles`` how many tiles contributed. ``sources`` names the tile instances it
    was made of, as ``(tile index, instance index, pixels contributed)``.
    """

    box: tuple[int, int, int, int]
    mask: np.ndarray = field(repr=False)
    score: float
    tiles: int = 1
    sources: tuple[tuple[int, int, int], ...] = ()
