"""Tile planning: pure geometry over raster sizes, no pixels, no files.

A raster of ``width x height`` pixels is covered by a grid of square windows of
``tile_size`` (smaller only where the raster itself is smaller) placed every
``stride = tile_size - overlap`` pixels. The last row/column is snapped flush to the raster
edge, never past it, so the model never sees padding unless the raster is smaller than a
tile. Each tile also gets a *core*: the cores partition the raster (boundaries at the middle
of each overlap), which is what seam merging uses to decide who owns which pixel.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise

from affine import Affine

from .errors import InputError
from .types import Tile


def axis_starts(length: int, tile_size: int, overlap: int) -> list[int]:
    """Start offsets of the windows along one axis of ``length`` pixels.

    The first start is 0, consecutive starts are ``tile_size - overlap`` apart, and the last
    window ends exactly at ``length`` (snapped back if the stride would overshoot). A length
    no larger than ``tile_size`` gives the single start ``[0]``.
    """
    validate(tile_size, overlap)
    if length <= 0:
        raise InputError(f"raster axis length must be positive, got {length}")
    if length <= tile_size:
        return [0]
    stride = tile_size - overlap
    starts = list(range(0, length - tile_size, stride))
    starts.append(length - tile_size)
    return starts


def validate(tile_size: int, overlap: int) -> None:
    """Raise :class:`InputError` unless ``0 <= overlap < tile_size`` and ``tile_size >= 32``."""
    if int(tile_size) != tile_size or tile_size < 32:
        raise InputError(f"tile size must be an integer >= 32 pixels, got {tile_size}")
    if int(overlap) != overlap or overlap < 0:
        raise InputError(f"overlap must be a non-negative integer, got {overlap}")
    if overlap >= tile_size:
        raise InputError(f"overlap ({overlap}) must be smaller than the tile size ({tile_size})")


def _core_bounds(starts: list[int], size: int, length: int) -> list[tuple[int, int]]:
    """Ownership interval of each window along one axis: midpoints of consecutive overlaps."""
    bounds = [0]
    for a, b in pairwise(starts):
        end_a = min(a + size, length)
        bounds.append((b + end_a) // 2)
    bounds.append(length)
    return list(pairwise(bounds))


@dataclass(frozen=True)
class TileGrid:
    """The tiles covering one raster, in row-major order.

    ``xs``/``ys`` are the window starts along each axis; ``tiles[r * n_cols + c]`` is the
    tile in grid row ``r``, column ``c``.
    """

    width: int
    height: int
    tile_size: int
    overlap: int
    xs: tuple[int, ...]
    ys: tuple[int, ...]
    tiles: tuple[Tile, ...]

    @property
    def n_rows(self) -> int:
        return len(self.ys)

    @property
    def n_cols(self) -> int:
        return len(self.xs)

    def __len__(self) -> int:
        return len(self.tiles)

    def __iter__(self) -> Iterator[Tile]:
        return iter(self.tiles)

    def index(self, tile: Tile) -> int:
        """Row-major index of ``tile`` in this grid."""
        return tile.row * self.n_cols + tile.col

    def at(self, row: int, col: int) -> Tile:
        return self.tiles[row * self.n_cols + col]

    def neighbours(self, tile: Tile) -> Iterator[Tile]:
        """The up to 8 tiles around ``tile`` (edge and corner neighbours)."""
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                r, c = tile.row + dr, tile.col + dc
                if (dr or dc) and 0 <= r < self.n_rows and 0 <= c < self.n_cols:
                    yield self.at(r, c)

    def intersecting(self, box: tuple[int, int, int, int]) -> Iterator[Tile]:
        """Tiles whose window intersects the raster-pixel box ``(x0, y0, x1, y1)``."""
        x0, y0, x1, y1 = box
        cols = _span(self.xs, self._w, x0, x1)
        rows = _span(self.ys, self._h, y0, y1)
        for r in rows:
            for c in cols:
                yield self.at(r, c)

    def owning(self, box: tuple[int, int, int, int]) -> Iterator[Tile]:
        """Tiles whose *core* intersects the raster-pixel box: the owners of those pixels.

        A single pixel has exactly one owner, where :meth:`intersecting` may give up to four.
        """
        x0, y0, x1, y1 = box
        xs0 = [self.at(0, c).core[0] for c in range(self.n_cols)]
        ys0 = [self.at(r, 0).core[1] for r in range(self.n_rows)]
        cols = range(max(0, bisect.bisect_right(xs0, x0) - 1), bisect.bisect_left(xs0, x1))
        rows = range(max(0, bisect.bisect_right(ys0, y0) - 1), bisect.bisect_left(ys0, y1))
        for r in rows:
            for c in cols:
                yield self.at(r, c)

    @property
    def _w(self) -> int:
        return min(self.tile_size, self.width)

    @property
    def _h(self) -> int:
        return min(self.tile_size, self.height)


def _span(starts: tuple[int, ...], size: int, lo: int, hi: int) -> range:
    """Indices of windows ``[s, s + size)`` that intersect ``[lo, hi)`` (starts sorted)."""
    first = bisect.bisect_right(starts, lo - size)  # first window whose end > lo
    last = bisect.bisect_left(starts, hi)  # windows starting before hi
    return range(first, last)


def plan_tiles(width: int, height: int, tile_size: int = 1024, overlap: int = 128,
               transform: Affine | None = None) -> TileGrid:
    """Plan the tile grid of a ``width x height`` raster whose pixels map through ``transform``.

    Every raster pixel is inside at least one tile, every tile is inside the raster, and
    the tile cores partition the raster. Each tile carries its own transform (``transform``
    translated to the window's corner).
    """
    validate(tile_size, overlap)
    transform = Affine.identity() if transform is None else transform
    xs = axis_starts(width, tile_size, overlap)
    ys = axis_starts(height, tile_size, overlap)
    w, h = min(tile_size, width), min(tile_size, height)
    xcore = _core_bounds(xs, w, width)
    ycore = _core_bounds(ys, h, height)
    tiles = tuple(
        Tile(row=r, col=c, x=x, y=y, width=w, height=h,
             core=(xcore[c][0], ycore[r][0], xcore[c][1], ycore[r][1]),
             transform=transform @ Affine.translation(x, y))
        for r, y in enumerate(ys) for c, x in enumerate(xs)
    )
    return TileGrid(width, height, tile_size, overlap, tuple(xs), tuple(ys), tiles)
