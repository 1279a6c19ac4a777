"""Tile planning: pure geometry over raster sizes, no pixels, no files.

A raster of ``width x height`` pixels is covered by a grid of square windows of
``tile_size`` (smaller only where the raster itself is smaller) placed every
``stride = tile_size - overlap`` pixels. The last row/column is snapped flush to the raster
edge, never past it, so the model never sees padding unless the raster is smaller than a
tile. Each tile also gets a *core*: the cores partition the raster (boundaries at the middle
of each overlap), which is what seam merging uses to decide who owns which pixel.

Nothing is built up front: a :class:`TileGrid` computes any tile, start or core from its row
and column by arithmetic, so planning costs the same for a 300-px image and for a declared
2**31-px VRT (building every tile of a 580,000 km² mosaic at 0.3 m would take gigabytes).
"""

from __future__ import annotations

import bisect
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from affine import Affine

from .errors import InputError
from .types import Tile

MAX_PIXELS = 10**14
"""Largest raster (width x height) a run is planned for. 1e14 px is ~1.2e8 tiles of 1024 px
(overlap 128): at the measured 0.033 s per tile *outside* the model that is ~48 days before
any network time, so no run above it could finish. A country-wide mosaic (580,000 km² at
0.3 m, ~6.4e12 px, ~8e6 tiles) is 15x below it; a declared 2147483647² VRT (4.6e18 px) is
refused at once instead of looping or allocating for hours."""


def check_size(width: int, height: int) -> None:
    """Raise :class:`InputError` unless a ``width x height`` raster can be planned and run."""
    if width <= 0 or height <= 0:
        raise InputError(f"raster size must be positive, got {width} x {height} pixels")
    if width * height > MAX_PIXELS:
        raise InputError(f"raster of {width} x {height} pixels ({width * height:.3g}) is larger than "
                         f"fastsam-geo can segment ({MAX_PIXELS:.0e} pixels at most); cut it into parts "
                         "(gdal_translate -srcwin) or use an overview")


def validate(tile_size: int, overlap: int) -> None:
    """Raise :class:`InputError` unless ``0 <= overlap < tile_size`` and ``tile_size >= 32``."""
    if int(tile_size) != tile_size or tile_size < 32:
        raise InputError(f"tile size must be an integer >= 32 pixels, got {tile_size}")
    if int(overlap) != overlap or overlap < 0:
        raise InputError(f"overlap must be a non-negative integer, got {overlap}")
    if overlap >= tile_size:
        raise InputError(f"overlap ({overlap}) must be smaller than the tile size ({tile_size})")


class _Lazy(Sequence):
    """A read-only sequence of ``n`` values computed by ``fn(i)``: what lets a grid of
    millions of tiles answer ``len``, indexing, ``bisect`` and iteration in O(1) memory."""

    __slots__ = ("_fn", "_n")

    def __init__(self, n: int, fn: Callable[[int], object]):
        self._n, self._fn = n, fn

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._fn(j) for j in range(*i.indices(self._n))]
        i = int(i)
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(f"index {i} out of range for {self._n} items")
        return self._fn(i)

    def __iter__(self) -> Iterator:
        return map(self._fn, range(self._n))

    def __repr__(self) -> str:
        head = ", ".join(repr(self._fn(i)) for i in range(min(self._n, 3)))
        return f"<{self._n} lazy items: {head}{', ...' if self._n > 3 else ''}>"


@dataclass(frozen=True)
class Axis:
    """Windows of ``size`` px every ``stride`` px along ``length`` px, the last one flush.

    Start ``i`` is ``i * stride`` except the last, ``length - size``; core ``i`` runs from
    the middle of the overlap with window ``i - 1`` to the middle of the one with ``i + 1``.
    """

    length: int
    size: int
    stride: int

    @property
    def n(self) -> int:
        if self.length <= self.size:
            return 1
        return -(-(self.length - self.size) // self.stride) + 1

    def start(self, i: int) -> int:
        return i * self.stride if i < self.n - 1 else self.length - self.size

    def core_start(self, i: int) -> int:
        """Where window ``i``'s core begins: the middle of its overlap with window ``i - 1``."""
        if i == 0:
            return 0
        return (self.start(i) + self.start(i - 1) + self.size) // 2

    def core(self, i: int) -> tuple[int, int]:
        return self.core_start(i), self.core_start(i + 1) if i + 1 < self.n else self.length

    def starts(self) -> Sequence[int]:
        return _Lazy(self.n, self.start)

    def span(self, lo: int, hi: int) -> range:
        """Indices of windows ``[s, s + size)`` that intersect ``[lo, hi)``."""
        starts = self.starts()
        return range(bisect.bisect_right(starts, lo - self.size), bisect.bisect_left(starts, hi))

    def owners(self, lo: int, hi: int) -> range:
        """Indices of windows whose core intersects ``[lo, hi)``."""
        cores = _Lazy(self.n, self.core_start)
        return range(max(0, bisect.bisect_right(cores, lo) - 1), bisect.bisect_left(cores, hi))


def axis_starts(length: int, tile_size: int, overlap: int) -> list[int]:
    """Start offsets of the windows along one axis of ``length`` pixels.

    The first start is 0, consecutive starts are ``tile_size - overlap`` apart, and the last
    window ends exactly at ``length`` (snapped back if the stride would overshoot). A length
    no larger than ``tile_size`` gives the single start ``[0]``. A list: for small axes only
    (:attr:`TileGrid.xs` is the lazy form).
    """
    validate(tile_size, overlap)
    if length <= 0:
        raise InputError(f"raster axis length must be positive, got {length}")
    return list(_axis(length, tile_size, overlap).starts())


def _axis(length: int, tile_size: int, overlap: int) -> Axis:
    return Axis(length, min(tile_size, length), tile_size - overlap)


@dataclass(frozen=True)
class TileGrid:
    """The tiles covering one raster, in row-major order, computed on demand.

    ``xs``/``ys`` are the window starts along each axis and ``tiles[r * n_cols + c]`` is the
    tile in grid row ``r``, column ``c``: lazy sequences (``len``, indexing, iteration) whose
    items are computed when asked, so a grid costs O(1) memory whatever the raster's size.
    While anyone holds a tile, the grid hands out that same object for its row and column
    (weakly interned), so ``t is tile`` keeps meaning "the same tile" as when tiles were built
    up front; memory stays proportional to the tiles alive, not to the grid.
    """

    width: int
    height: int
    tile_size: int
    overlap: int
    transform: Affine = field(default_factory=Affine.identity)
    _x: Axis = field(init=False, repr=False, compare=False)
    _y: Axis = field(init=False, repr=False, compare=False)
    _alive: weakref.WeakValueDictionary = field(init=False, repr=False, compare=False)
    _lock: threading.Lock = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_x", _axis(self.width, self.tile_size, self.overlap))
        object.__setattr__(self, "_y", _axis(self.height, self.tile_size, self.overlap))
        object.__setattr__(self, "_alive", weakref.WeakValueDictionary())
        object.__setattr__(self, "_lock", threading.Lock())

    def __reduce__(self):  # picklable (process pools, dask): only the parameters travel
        return (TileGrid, (self.width, self.height, self.tile_size, self.overlap, self.transform))

    @property
    def xs(self) -> Sequence[int]:
        return self._x.starts()

    @property
    def ys(self) -> Sequence[int]:
        return self._y.starts()

    @property
    def tiles(self) -> Sequence[Tile]:
        return _Lazy(len(self), self._tile)

    @property
    def n_rows(self) -> int:
        return self._y.n

    @property
    def n_cols(self) -> int:
        return self._x.n

    def __len__(self) -> int:
        return self.n_rows * self.n_cols

    def __iter__(self) -> Iterator[Tile]:
        return iter(self.tiles)

    def index(self, tile: Tile) -> int:
        """Row-major index of ``tile`` in this grid."""
        return tile.row * self.n_cols + tile.col

    def at(self, row: int, col: int) -> Tile:
        if not (0 <= row < self.n_rows and 0 <= col < self.n_cols):
            raise IndexError(f"tile ({row}, {col}) is outside the {self.n_rows} x {self.n_cols} grid")
        with self._lock:
            tile = self._alive.get((row, col))
            if tile is None:
                tile = self._alive[row, col] = self._make(row, col)
        return tile

    def _make(self, row: int, col: int) -> Tile:
        x, y = self._x.start(col), self._y.start(row)
        (cx0, cx1), (cy0, cy1) = self._x.core(col), self._y.core(row)
        return Tile(row=row, col=col, x=x, y=y, width=self._x.size, height=self._y.size,
                    core=(cx0, cy0, cx1, cy1), transform=self.transform @ Affine.translation(x, y))

    def _tile(self, i: int) -> Tile:
        return self.at(*divmod(i, self.n_cols))

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
        cols = self._x.span(x0, x1)
        for r in self._y.span(y0, y1):
            for c in cols:
                yield self.at(r, c)

    def owning(self, box: tuple[int, int, int, int]) -> Iterator[Tile]:
        """Tiles whose *core* intersects the raster-pixel box: the owners of those pixels.

        A single pixel has exactly one owner, where :meth:`intersecting` may give up to four.
        """
        x0, y0, x1, y1 = box
        cols = self._x.owners(x0, x1)
        for r in self._y.owners(y0, y1):
            for c in cols:
                yield self.at(r, c)


def plan_tiles(width: int, height: int, tile_size: int = 1024, overlap: int = 128,
               transform: Affine | None = None) -> TileGrid:
    """Plan the tile grid of a ``width x height`` raster whose pixels map through ``transform``.

    Every raster pixel is inside at least one tile, every tile is inside the raster, and
    the tile cores partition the raster. Each tile carries its own transform (``transform``
    translated to the window's corner). O(1) time and memory; rasters above
    :data:`MAX_PIXELS` raise :class:`InputError`.
    """
    validate(tile_size, overlap)
    check_size(width, height)
    return TileGrid(width, height, tile_size, overlap, Affine.identity() if transform is None else transform)
