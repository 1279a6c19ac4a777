"""Raster I/O with rasterio: header, band choice, one global stretch, windowed tile reads.

Nothing here reads a whole raster: tiles come through windowed reads, and the contrast
stretch for non-uint8 imagery is computed once per raster from overviews or a decimated
read (at most ``STRETCH_SAMPLE`` pixels on the long side), so every tile is stretched
identically and no seams appear where per-tile stretches would disagree.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import RasterioError
from rasterio.windows import Window

from .coords import parse_crs
from .errors import CRSError, InputError, RasterError
from .types import RasterInfo, Tile

STRETCH_SAMPLE = 2048
DEFAULT_PERCENTILES = (2.0, 98.0)
BLOCK_CACHE_BYTES = 64 * 1024 * 1024
"""GDAL block cache while reading tiles. GDAL's default (5 % of RAM) keeps every block read,
so memory would grow with the raster's area; tiles are read row by row and only the overlap
rows are read twice, so a small cache costs little (at worst a block decompressed twice on
very wide rasters). An explicit ``GDAL_CACHEMAX`` wins."""


def _open(path: str | os.PathLike) -> rasterio.DatasetReader:
    path = os.fspath(path)
    if "://" not in path and not path.startswith("/vsi") and not os.path.exists(path):
        raise RasterError(f"{path}: no such file")
    try:
        return rasterio.open(path)
    except RasterioError as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RasterError(f"{path}: not a raster GDAL can read ({detail})") from exc


def read_info(path: str | os.PathLike) -> RasterInfo:
    """Read a raster's header. Raises :class:`RasterError` unless it is a georeferenced raster."""
    with _open(path) as src:
        return _info(src, os.fspath(path))


def _info(src: rasterio.DatasetReader, path: str) -> RasterInfo:
    if src.crs is None or (src.transform == Affine.identity() and not src.gcps[0]):
        raise RasterError(f"{path}: raster has no georeference (no CRS or geotransform); "
                          "georeference it first, e.g. with gdal_translate -a_srs -a_ullr")
    if src.transform == Affine.identity():
        raise RasterError(f"{path}: raster is georeferenced by GCPs only; warp it first "
                          "(gdalwarp) so it has a geotransform")
    try:
        crs = parse_crs(src.crs)
    except CRSError as exc:
        raise RasterError(f"{path}: its CRS cannot be read ({exc})") from exc
    flags = src.mask_flag_enums[0] if src.count else []
    return RasterInfo(
        path=path, width=src.width, height=src.height, count=src.count,
        dtype=str(src.dtypes[0]), crs=crs, transform=src.transform,
        nodata=None if src.nodata is None else float(src.nodata),
        colorinterp=tuple(ci.name for ci in src.colorinterp),
        has_mask=MaskFlags.per_dataset in flags or MaskFlags.alpha in flags,
        overviews=len(src.overviews(1)) if src.count else 0,
        block_shape=tuple(src.block_shapes[0]) if src.count else (0, 0),
    )


def choose_bands(info: RasterInfo, bands: Sequence[int] | None = None) -> tuple[int, int, int]:
    """The three 1-based band indexes read as R, G, B.

    Explicit ``bands`` win (one band is replicated to grey RGB). Otherwise the bands whose
    colour interpretation is red, green and blue, else bands 1-3, and a raster with fewer
    than three colour bands gives band 1 three times. Alpha bands are never chosen.
    """
    if bands is not None:
        bands = tuple(int(b) for b in bands)
        if len(bands) == 1:
            bands = bands * 3
        if len(bands) != 3:
            raise InputError(f"bands must be one or three band numbers, got {list(bands)}")
        bad = [b for b in bands if not 1 <= b <= info.count]
        if bad:
            raise InputError(f"band {bad[0]} does not exist: {info.path} has bands 1..{info.count}")
        return bands  # type: ignore[return-value]
    ci = [c.lower() for c in info.colorinterp]
    if all(c in ci for c in ("red", "green", "blue")):
        return (ci.index("red") + 1, ci.index("green") + 1, ci.index("blue") + 1)
    colour = [i + 1 for i, c in enumerate(ci) if c != "alpha"] or [1]
    return tuple(colour[:3]) if len(colour) >= 3 else (colour[0],) * 3  # type: ignore[return-value]


@dataclass(frozen=True)
class Stretch:
    """Per-band linear stretch ``(lo, hi) -> (0, 255)`` applied identically to every tile.

    ``lo``/``hi`` are float ``(3,)``; ``None`` means no stretch (uint8 data passes through).
    """

    lo: tuple[float, float, float] | None = None
    hi: tuple[float, float, float] | None = None

    def apply(self, data: np.ndarray) -> np.ndarray:
        """``(3, H, W)`` data of any dtype -> ``(3, H, W)`` uint8."""
        if self.lo is None:
            if data.dtype == np.uint8:
                return data
            return np.clip(np.nan_to_num(data), 0, 255).astype(np.uint8)
        lo = np.asarray(self.lo, dtype=np.float32)[:, None, None]
        hi = np.asarray(self.hi, dtype=np.float32)[:, None, None]
        scale = 255.0 / np.maximum(hi - lo, 1e-12)
        out = np.nan_to_num((data.astype(np.float32) - lo) * scale)
        return np.clip(out, 0, 255, out=out).astype(np.uint8)


def compute_stretch(path: str | os.PathLike, bands: Sequence[int], *, mode: str = "auto",
                    percentiles: tuple[float, float] = DEFAULT_PERCENTILES) -> Stretch:
    """One stretch for the whole raster, from overviews or a decimated read.

    ``mode``: ``"auto"`` (percentile stretch unless the data are uint8), ``"percentile"``
    (always), or ``"none"``. Percentiles ignore nodata/masked pixels.
    """
    if mode not in ("auto", "percentile", "none"):
        raise InputError(f"stretch must be 'auto', 'percentile' or 'none', got {mode!r}")
    with _open(path) as src:
        if mode == "none" or (mode == "auto" and src.dtypes[0] == "uint8"):
            return Stretch()
        scale = max(1.0, max(src.width, src.height) / STRETCH_SAMPLE)
        shape = (max(1, round(src.height / scale)), max(1, round(src.width / scale)))
        uniq = sorted(set(bands))
        data = src.read(uniq, out_shape=(len(uniq), *shape), masked=True)
    lo, hi = [], []
    for b in bands:
        band = data[uniq.index(b)]
        vals = band.compressed() if np.ma.isMaskedArray(band) else band.ravel()
        vals = vals[np.isfinite(vals)]
        if vals.size == 0:
            lo.append(0.0)
            hi.append(1.0)
            continue
        p_lo, p_hi = np.percentile(vals, percentiles)
        if p_hi <= p_lo:
            p_hi = p_lo + 1.0
        lo.append(float(p_lo))
        hi.append(float(p_hi))
    return Stretch(tuple(lo), tuple(hi))  # type: ignore[arg-type]


class TileReader:
    """Reads tiles of one raster as model-ready images. Use as a context manager.

    ``read(tile)`` returns ``(image, valid)``: ``image`` ``(H, W, 3) uint8`` RGB with
    invalid pixels set to 0, and ``valid`` ``(H, W) bool``: GDAL's dataset mask (False where
    *every* band is nodata, where alpha is 0, or where the internal mask band says so; a dark
    pixel with one channel at the nodata value is data), and False where a chosen band is not
    finite (NaN cannot be stretched).
    """

    def __init__(self, path: str | os.PathLike, bands: Sequence[int] | None = None, *,
                 stretch: str | Stretch = "auto"):
        self.path = os.fspath(path)
        self.info = read_info(self.path)
        self.bands = choose_bands(self.info, bands)
        self.stretch = stretch if isinstance(stretch, Stretch) else \
            compute_stretch(self.path, self.bands, mode=stretch)
        self._src: rasterio.DatasetReader | None = None
        self._env: rasterio.Env | None = None
        self._uniq = sorted(set(self.bands))
        self._order = [self._uniq.index(b) for b in self.bands]
        self._masked = self.info.nodata is not None or self.info.has_mask \
            or any(c == ColorInterp.alpha.name for c in self.info.colorinterp)

    def __enter__(self) -> TileReader:
        self._env = rasterio.Env() if "GDAL_CACHEMAX" in os.environ else \
            rasterio.Env(GDAL_CACHEMAX=BLOCK_CACHE_BYTES)
        self._env.__enter__()
        self._src = _open(self.path)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._src is not None:
            self._src.close()
            self._src = None
        if self._env is not None:
            self._env.__exit__(*exc)
            self._env = None

    def __getstate__(self) -> dict:  # picklable for process pools / dask: reopen on the worker
        state = self.__dict__.copy()
        state["_src"] = state["_env"] = None
        return state

    def read(self, tile: Tile) -> tuple[np.ndarray, np.ndarray]:
        src = self._src
        if src is None:
            raise RuntimeError("TileReader must be used inside a 'with' block")
        window = Window(tile.x, tile.y, tile.width, tile.height)
        try:
            data = src.read(self._uniq, window=window)
            if self._masked:  # GDAL's dataset mask: nodata only where *every* band is (or alpha 0, or masked)
                valid = src.dataset_mask(window=window) > 0
            else:
                valid = np.ones(data.shape[1:], dtype=bool)
        except RasterioError as exc:
            raise RasterError(f"{self.path}: failed to read pixels {tile.box} ({exc})") from exc
        data = data[self._order]
        if data.dtype.kind == "f":
            valid &= np.isfinite(data).all(axis=0)
        image = self.stretch.apply(data)
        image = np.ascontiguousarray(image.transpose(1, 2, 0))
        if not valid.all():
            image[~valid] = 0
        return image, valid
