"""Raster I/O with rasterio: header, band choice, one global stretch, windowed tile reads.

Nothing here reads a whole raster: tiles come through windowed reads, and the contrast
stretch for non-uint8 imagery is computed once per raster from overviews or a decimated
read (at most ``STRETCH_SAMPLE`` pixels on the long side), so every tile is stretched
identically and no seams appear where per-tile stretches would disagree. Both reads run
under the same capped GDAL block cache.

Paths go to GDAL as given: URLs (``https://...``) and GDAL virtual file systems
(``/vsicurl/...``, ``/vsis3/...``, ``/vsizip/...``) are never checked against the local disk.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import RasterioError
from rasterio.windows import Window

from .coords import parse_crs
from .errors import CRSError, InputError, RasterError
from .tiling import MAX_PIXELS
from .types import RasterInfo, Tile

try:  # GDAL errors rasterio does not wrap (e.g. from some reads); private but stable since 1.0
    from rasterio._err import CPLE_BaseError
except ImportError:  # pragma: no cover
    CPLE_BaseError = RasterioError

GDAL_ERRORS = (RasterioError, CPLE_BaseError)
STRETCH_SAMPLE = 2048
DEFAULT_PERCENTILES = (2.0, 98.0)
BLOCK_CACHE_BYTES = 64 * 1024 * 1024
"""GDAL block cache while reading tiles and the stretch sample. GDAL's default (5 % of RAM)
keeps every block read, so memory would grow with the raster's area (a decimated read of a
large uint16 raster without overviews touched 1.35 GB); tiles are read row by row and only
the overlap rows are read twice, so a small cache costs little (at worst a block decompressed
twice on very wide rasters). An explicit ``GDAL_CACHEMAX`` wins."""

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_COLLAPSED_URL = re.compile(r"^(https?|s3|gs|ftp):/[^/]")


def is_local(path: str) -> bool:
    """Whether GDAL reads ``path`` from the local file system (not a URL, not ``/vsi...``)."""
    return not (_URL.match(path) or path.startswith("/vsi"))


def gdal_env() -> rasterio.Env:
    """A rasterio environment with the block cache capped (unless ``GDAL_CACHEMAX`` is set)."""
    if "GDAL_CACHEMAX" in os.environ:
        return rasterio.Env()
    return rasterio.Env(GDAL_CACHEMAX=BLOCK_CACHE_BYTES)


def _detail(exc: BaseException) -> str:
    """First line of a GDAL error, or of its cause when rasterio's says "see previous"."""
    cause = exc.__cause__ or exc.__context__
    text = str(exc)
    if cause is not None and (not text or "previous exception" in text):
        text = str(cause)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def _open(path: str | os.PathLike) -> rasterio.DatasetReader:
    path = os.fspath(path)
    if is_local(path) and not os.path.exists(path):
        hint = " (a URL whose '//' was collapsed to '/'?)" if _COLLAPSED_URL.match(path) else ""
        raise RasterError(f"{path}: no such file{hint}")
    try:
        return rasterio.open(path)
    except GDAL_ERRORS as exc:
        raise RasterError(f"{path}: not a raster GDAL can read ({_detail(exc)})") from exc


def read_info(path: str | os.PathLike) -> RasterInfo:
    """Read a raster's header. Raises :class:`RasterError` unless it is a georeferenced raster
    of at most :data:`~fastsam_geo.tiling.MAX_PIXELS` pixels."""
    with _open(path) as src:
        try:
            return _info(src, os.fspath(path))
        except GDAL_ERRORS as exc:
            raise RasterError(f"{os.fspath(path)}: header cannot be read ({_detail(exc)})") from exc


def _info(src: rasterio.DatasetReader, path: str) -> RasterInfo:
    _check_georeference(src, path)
    if src.width * src.height > MAX_PIXELS:
        raise RasterError(f"{path}: {src.width} x {src.height} pixels ({src.width * src.height:.3g}) is more "
                          f"than fastsam-geo can segment ({MAX_PIXELS:.0e} at most); cut it into parts "
                          "(gdal_translate -srcwin) or use an overview")
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


def _check_georeference(src: rasterio.DatasetReader, path: str) -> None:
    """GCPs first: a GCP-only raster has no CRS of its own in rasterio (the CRS sits with the
    GCPs), so the generic message would wrongly tell its owner to georeference it."""
    if src.transform == Affine.identity() and src.gcps[0]:
        raise RasterError(f"{path}: raster is georeferenced by GCPs only; warp it first "
                          "(gdalwarp) so it has a geotransform")
    if src.crs is None or src.transform == Affine.identity():
        raise RasterError(f"{path}: raster has no georeference (no CRS or geotransform); "
                          "georeference it first, e.g. with gdal_translate -a_srs -a_ullr")


def choose_bands(info: RasterInfo, bands: Sequence[int] | None = None) -> tuple[int, int, int]:
    """The three 1-based band indexes read as R, G, B.

    Explicit ``bands`` win (one band is replicated to grey RGB). Otherwise the bands whose
    colour interpretation is red, green and blue, else bands 1-3, and a raster with fewer
    than three colour bands gives band 1 three times (a palette band is then expanded
    through its colour table, see :func:`expands_palette`). Alpha bands are never chosen.
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


def expands_palette(info: RasterInfo, bands: Sequence[int] | None = None) -> bool:
    """Whether band 1's colour table is expanded to RGB: by default (``bands`` None) when band 1
    is a palette band. Its values are indexes, not intensities: read as grey they would
    give the model arbitrary shades. Explicit ``bands`` read the raw indexes."""
    return bands is None and info.dtype in ("uint8", "uint16") and info.colorinterp[:1] == ("palette",)


def palette_lut(src: rasterio.DatasetReader) -> np.ndarray:
    """Band 1's colour table as a ``(256 or 65536, 4) uint8`` RGBA lookup table.

    Indexes the table does not define map to ``(0, 0, 0, 0)``, as ``gdal_translate -expand
    rgba`` gives them; alpha is whatever GDAL reports (GeoTIFF stores none: 255).
    """
    lut = np.zeros((256 if src.dtypes[0] == "uint8" else 65536, 4), np.uint8)
    for i, rgba in src.colormap(1).items():
        if 0 <= i < len(lut):
            lut[i] = rgba
    return lut


@dataclass(frozen=True)
class Levels:
    """Where a model expects the ``percentiles`` of its 8-bit input to lie: ``values`` ``(lo, hi)``
    in 0-255. A stretch of non-uint8 imagery maps the raster's own percentiles to these values,
    so a model trained on 8-bit imagery whose 2nd/98th percentiles lie at ~35/229 is not fed
    imagery stretched to 0/255 (bright roofs clipped, contrast it never saw).

    ``joint``: one map for all bands, from percentiles of the bands pooled, so the imagery keeps
    its colour balance (a model's levels: a green roof stays as green as its training roofs);
    else each band is stretched on its own (every band spans the same range: grey-world colours).
    """

    percentiles: tuple[float, float] = DEFAULT_PERCENTILES
    values: tuple[float, float] = (0.0, 255.0)
    joint: bool = False


FULL_RANGE = Levels()
"""The raster's 2nd/98th percentiles to 0/255: the stretch for models whose card records no levels."""


def model_levels(card: Mapping | None) -> Levels | None:
    """The input levels a model card records (``input_levels``: ``{"percentiles": [2, 98],
    "values": [lo, hi]}``), or ``None`` (no card, no levels, or malformed ones: a card is the
    user's file too, so a bad entry is no entry, not a traceback)."""
    entry = (card or {}).get("input_levels")
    if not isinstance(entry, Mapping):
        return None
    try:
        p_lo, p_hi = (float(v) for v in entry["percentiles"])
        v_lo, v_hi = (float(v) for v in entry["values"])
    except (KeyError, TypeError, ValueError):
        return None
    if not (0 <= p_lo < p_hi <= 100 and 0 <= v_lo < v_hi <= 255):
        return None
    return Levels((p_lo, p_hi), (v_lo, v_hi), joint=True)


@dataclass(frozen=True)
class Stretch:
    """Linear stretch of each band ``(lo, hi) -> levels`` (by default ``(0, 255)``) applied
    identically to every tile (a joint stretch has the same ``lo``/``hi`` for every band).

    ``lo``/``hi`` are float ``(3,)`` (the raster's ``percentiles``); ``None`` means no stretch
    (uint8 data passes through).
    """

    lo: tuple[float, float, float] | None = None
    hi: tuple[float, float, float] | None = None
    levels: tuple[float, float] = (0.0, 255.0)

    def apply(self, data: np.ndarray) -> np.ndarray:
        """``(3, H, W)`` data of any dtype -> ``(3, H, W)`` uint8."""
        if self.lo is None:
            if data.dtype == np.uint8:
                return data
            return np.clip(np.nan_to_num(data), 0, 255).astype(np.uint8)
        lo = np.asarray(self.lo, dtype=np.float32)[:, None, None]
        hi = np.asarray(self.hi, dtype=np.float32)[:, None, None]
        v_lo, v_hi = self.levels
        scale = (v_hi - v_lo) / np.maximum(hi - lo, 1e-12)
        out = np.nan_to_num((data.astype(np.float32) - lo) * scale + np.float32(v_lo))
        return np.clip(out, 0, 255, out=out).astype(np.uint8)


def compute_stretch(path: str | os.PathLike, bands: Sequence[int], *, mode: str = "auto",
                    levels: Levels | None = None, palette: bool = False) -> Stretch:
    """One stretch for the whole raster, from overviews or a decimated read.

    ``mode``: ``"auto"`` (percentile stretch unless the data are uint8), ``"percentile"``
    (always), or ``"none"``. ``levels`` (default :data:`FULL_RANGE`: 2nd/98th percentile to
    0/255): which percentiles go to which 8-bit values, e.g. a model card's
    (:func:`model_levels`). Percentiles ignore nodata/masked pixels. ``palette``: band 1
    is expanded through its colour table (uint8 RGB: no stretch in ``"auto"``). The read runs
    under the capped block cache; a GDAL failure is a :class:`RasterError` naming the file.
    """
    if mode not in ("auto", "percentile", "none"):
        raise InputError(f"stretch must be 'auto', 'percentile' or 'none', got {mode!r}")
    path = os.fspath(path)
    try:
        with gdal_env(), _open(path) as src:
            if mode == "none" or (mode == "auto" and not _needs_stretch(src.dtypes[0], palette)):
                return Stretch()
            data = _sample(src, bands, palette)
    except GDAL_ERRORS as exc:
        raise RasterError(f"{path}: failed to read pixels for the contrast stretch ({_detail(exc)}); "
                          "the file may be truncated or corrupt") from exc
    return _percentile_stretch(data, levels or FULL_RANGE)


def measure_levels(paths: Sequence[str | os.PathLike], bands: Sequence[int] | None = None,
                   percentiles: tuple[float, float] = DEFAULT_PERCENTILES, levels: Levels | None = None) -> Levels:
    """The input :class:`Levels` of a model trained on ``paths``: where ``percentiles`` of the
    8-bit images a :class:`TileReader` (``bands``, non-uint8 stretched to ``levels``) makes of
    them lie (each raster's bands pooled, from the same decimated read as the stretch, nodata
    ignored), the median over the rasters. A model card records it (``input_levels``) so
    non-uint8 imagery is stretched to what the network saw."""
    lows, highs = [], []
    for path in paths:
        reader = TileReader(path, bands, stretch="none")  # header, bands, palette: no pixels read yet
        try:
            with gdal_env(), _open(reader.path) as src:
                data = _sample(src, reader.bands, reader.palette is not None)
        except GDAL_ERRORS as exc:
            raise RasterError(f"{reader.path}: failed to read pixels for its levels ({_detail(exc)})") from exc
        palette = reader.palette is not None
        # the stretch a TileReader would apply ("auto"), from this same read
        stretch = _percentile_stretch(data, levels or FULL_RANGE) if _needs_stretch(reader.info.dtype, palette) \
            else Stretch()
        raw = np.ma.getdata(data)
        invalid = np.ma.getmaskarray(data) | ~np.isfinite(raw)  # NaN is no pixel, as TileReader reads it
        image = np.ma.MaskedArray(stretch.apply(raw), invalid)
        vals = image.compressed()  # the bands pooled: a model's levels are one map for all of them
        if vals.size:
            p_lo, p_hi = np.percentile(vals, percentiles)
            lows.append(float(p_lo))
            highs.append(float(p_hi))
    if not lows:
        raise InputError("no valid pixels to measure input levels on")
    lo, hi = float(np.median(lows)), float(np.median(highs))
    return Levels(tuple(percentiles), (round(lo, 1), round(max(hi, lo + 1.0), 1)), joint=True)


def _needs_stretch(dtype: str, palette: bool) -> bool:
    """Whether ``"auto"`` stretches a raster: not uint8 data, nor a palette (its colours are 8-bit)."""
    return not (palette or dtype == "uint8")


def _sample(src: rasterio.DatasetReader, bands: Sequence[int], palette: bool) -> np.ma.MaskedArray:
    """The ``bands`` (palette: band 1 expanded to RGB) at most ``STRETCH_SAMPLE`` px on the
    long side, masked where nodata: ``(3, h, w)``."""
    scale = max(1.0, max(src.width, src.height) / STRETCH_SAMPLE)
    shape = (max(1, round(src.height / scale)), max(1, round(src.width / scale)))
    if palette:
        idx = src.read(1, out_shape=shape, masked=True)
        rgba = palette_lut(src)[idx.filled(0)]
        mask = np.ma.getmaskarray(idx) | (rgba[..., 3] == 0)
        return np.ma.MaskedArray(rgba[..., :3].transpose(2, 0, 1), np.broadcast_to(mask, (3, *shape)))
    uniq = sorted(set(bands))
    data = src.read(uniq, out_shape=(len(uniq), *shape), masked=True)
    return data[[uniq.index(b) for b in bands]]


def _percentile_stretch(data: np.ma.MaskedArray, levels: Levels) -> Stretch:
    def bounds(vals: np.ndarray) -> tuple[float, float]:
        vals = vals[np.isfinite(vals)]
        if vals.size == 0:
            return 0.0, 1.0
        p_lo, p_hi = (float(v) for v in np.percentile(vals, levels.percentiles))
        return p_lo, p_hi if p_hi > p_lo else p_lo + 1.0  # a flat band: any positive span

    bands = [band.compressed() if np.ma.isMaskedArray(band) else band.ravel() for band in data]
    if levels.joint:
        lo, hi = bounds(np.concatenate(bands))
        return Stretch((lo,) * len(bands), (hi,) * len(bands), levels.values)  # type: ignore[arg-type]
    lo_hi = [bounds(vals) for vals in bands]
    return Stretch(tuple(v[0] for v in lo_hi), tuple(v[1] for v in lo_hi), levels.values)  # type: ignore[arg-type]


class TileReader:
    """Reads tiles of one raster as model-ready images. Use as a context manager.

    ``read(tile)`` returns ``(image, valid)``: ``image`` ``(H, W, 3) uint8`` RGB with
    invalid pixels set to 0, and ``valid`` ``(H, W) bool``: GDAL's dataset mask (False where
    *every* band is nodata, where alpha is 0, or where the internal mask band says so; a dark
    pixel with one channel at the nodata value is data), False where a chosen band is not
    finite (NaN cannot be stretched), and, for palette rasters, False where the colour
    table's alpha is 0. A palette band (by default) is read as its colours, ``palette``
    holding the ``(n, 4)`` RGBA table (else ``None``). ``stretch``: a mode or a
    :class:`Stretch`; ``levels``: the model's input :class:`Levels` for a computed stretch.
    """

    def __init__(self, path: str | os.PathLike, bands: Sequence[int] | None = None, *,
                 stretch: str | Stretch = "auto", levels: Levels | None = None):
        self.path = os.fspath(path)
        self.info = read_info(self.path)
        self.bands = choose_bands(self.info, bands)
        self.palette = self._palette() if expands_palette(self.info, bands) else None
        self.stretch = stretch if isinstance(stretch, Stretch) else \
            compute_stretch(self.path, self.bands, mode=stretch, levels=levels, palette=self.palette is not None)
        self._src: rasterio.DatasetReader | None = None
        self._env: rasterio.Env | None = None
        self._uniq = sorted(set(self.bands))
        self._order = [self._uniq.index(b) for b in self.bands]
        self._masked = self.info.nodata is not None or self.info.has_mask \
            or any(c == ColorInterp.alpha.name for c in self.info.colorinterp)
        self._palette_alpha = self.palette is not None and bool((self.palette[:, 3] == 0).any())

    def _palette(self) -> np.ndarray:
        try:
            with _open(self.path) as src:
                return palette_lut(src)
        except (*GDAL_ERRORS, ValueError) as exc:
            raise RasterError(f"{self.path}: its colour table cannot be read ({_detail(exc)}); "
                              "choose bands explicitly (--bands 1) to read the raw indexes") from exc

    def __enter__(self) -> TileReader:
        self._env = gdal_env()
        self._env.__enter__()
        try:
            self._src = _open(self.path)
        except BaseException:
            self._env.__exit__(None, None, None)
            self._env = None
            raise
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
            data = src.read(1 if self.palette is not None else self._uniq, window=window)
            if self._masked:  # GDAL's dataset mask: nodata only where *every* band is (or alpha 0, or masked)
                valid = src.dataset_mask(window=window) > 0
            else:
                valid = np.ones(data.shape[-2:], dtype=bool)
        except GDAL_ERRORS as exc:
            raise RasterError(f"{self.path}: failed to read pixels {tile.box} ({_detail(exc)})") from exc
        if self.palette is not None:
            data, valid = self._expand(data, valid)
        else:
            data = data[self._order]
        if data.dtype.kind == "f":
            valid &= np.isfinite(data).all(axis=0)
        image = self.stretch.apply(data)
        image = np.ascontiguousarray(image.transpose(1, 2, 0))
        if not valid.all():
            image[~valid] = 0
        return image, valid

    def _expand(self, index: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Palette indexes ``(H, W)`` -> colours ``(3, H, W) uint8``; alpha 0 is invalid."""
        rgba = self.palette[index]
        if self._palette_alpha:
            valid = valid & (rgba[..., 3] > 0)
        return rgba[..., :3].transpose(2, 0, 1), valid


FOOTPRINT_SIZE = 2048


def valid_footprint(path: str | os.PathLike, *, max_size: int = FOOTPRINT_SIZE):
    """The raster's valid-data area as a shapely (Multi)Polygon in its own CRS: the exact
    bounds when no pixel can be nodata, else GDAL's dataset mask read decimated to at most
    ``max_size`` pixels on the long side and traced (edges accurate to that resolution)."""
    import shapely
    from rasterio import features

    with _open(path) as src:
        info = _info(src, os.fspath(path))
        left, bottom, right, top = src.bounds
        flags = src.mask_flag_enums[0] if src.count else []
        if not info.has_mask and src.nodata is None and MaskFlags.all_valid in flags:
            return shapely.box(left, bottom, right, top)
        k = max(1, int(np.ceil(max(src.width, src.height) / max_size)))
        shape = (max(1, src.height // k), max(1, src.width // k))
        try:
            mask = src.dataset_mask(out_shape=shape) > 0
        except GDAL_ERRORS as exc:
            raise RasterError(f"{os.fspath(path)}: mask cannot be read ({_detail(exc)})") from exc
    if mask.all():
        return shapely.box(left, bottom, right, top)
    transform = src.transform @ Affine.scale(src.width / shape[1], src.height / shape[0])
    polys = [shapely.geometry.shape(g) for g, v in features.shapes(mask.astype(np.uint8), mask=mask,
                                                                   transform=transform) if v]
    return shapely.union_all(polys) if polys else shapely.Polygon()
