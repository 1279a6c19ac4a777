"""A raster's picture and its layers, ready to draw: no plotting library here.

:func:`read_image` reads the view (the raster, or a ``bbox`` in any CRS) decimated through
rasterio's ``out_shape`` (at most ``max_size`` pixels along its long side; GDAL takes overviews
when the file has them), with the pipeline's bands and stretch, as RGBA with the affine
transform of its pixels. The other helpers turn vector layers (GeoDataFrames, GeoSeries,
files) into geometries in the raster's CRS and say what falls in the view.
:mod:`fastsam_geo.plots` (matplotlib) and :mod:`fastsam_geo.maps` (folium) draw them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from affine import Affine
from pyproj import CRS
from rasterio.enums import Resampling
from rasterio.windows import Window

from .coords import bbox_to_pixels, crs_name, parse_crs
from .errors import InputError
from .raster import choose_bands, compute_stretch, expands_palette, gdal_env, palette_lut, read_info

MAX_SIZE = 1600
"""Default decimation: at most this many image pixels along the long side of the view."""


@dataclass(frozen=True)
class View:
    """What :func:`show_raster` drew: the raster's CRS, the view's bounds in it
    ``(xmin, ymin, xmax, ymax)``, its raster-pixel window ``(x0, y0, x1, y1)``, and the
    decimation factor of the image read (1: full resolution)."""

    crs: CRS
    bounds: tuple[float, float, float, float]
    window: tuple[int, int, int, int]
    scale: float


def read_image(raster: str | os.PathLike, *, bbox=None, bbox_crs=None, bands: Sequence[int] | None = None,
               max_size: int = MAX_SIZE, stretch: str = "auto") -> tuple[np.ndarray, Affine, View]:
    """The view of ``raster`` (all of it, or ``bbox`` in ``bbox_crs``, default the raster's CRS)
    as ``(H, W, 4) uint8`` RGBA (alpha 0 where GDAL's dataset mask says nodata), decimated to at
    most ``max_size`` px on the long side, with the affine transform of that image's pixels and
    the :class:`View`."""
    info = read_info(raster)
    view = view_of(raster, bbox, bbox_crs)
    x0, y0, x1, y1 = view.window
    w, h = x1 - x0, y1 - y0
    scale = max(1.0, max(w, h) / max(1, int(max_size)))
    shape = (max(1, round(h / scale)), max(1, round(w / scale)))
    palette = expands_palette(info, bands)
    bands = choose_bands(info, bands)
    win = Window(x0, y0, w, h)
    with gdal_env(), rasterio.open(info.path) as src:
        if palette:
            idx = src.read(1, window=win, out_shape=shape, resampling=Resampling.nearest)
            rgba = palette_lut(src)[idx]
            data = rgba[..., :3].transpose(2, 0, 1)
        else:
            uniq = sorted(set(bands))
            data = src.read(uniq, window=win, out_shape=(len(uniq), *shape), resampling=Resampling.average)
            data = data[[uniq.index(b) for b in bands]]
        valid = src.dataset_mask(window=win, out_shape=shape, resampling=Resampling.nearest) > 0
        transform = src.window_transform(win) @ Affine.scale(w / shape[1], h / shape[0])
    rgb = compute_stretch(info.path, bands, mode=stretch, palette=palette).apply(data)
    image = np.dstack([rgb.transpose(1, 2, 0), np.where(valid, 255, 0).astype(np.uint8)])
    return image, transform, dataclasses.replace(view, scale=scale)


def view_of(raster, bbox=None, bbox_crs=None) -> View:
    """The :class:`View` of ``raster`` or its ``bbox`` (without reading pixels)."""
    info = read_info(raster)
    window = (0, 0, info.width, info.height)
    if bbox is not None:
        src_crs = info.crs if bbox_crs is None else parse_crs(bbox_crs)
        try:
            window, _ = bbox_to_pixels(bbox, src_crs, info.crs, info.transform, info.width, info.height)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        if window is None:
            raise InputError(f"bbox {tuple(bbox)} ({crs_name(src_crs)}) lies outside {info.path}")
    x0, y0, x1, y1 = window
    xs, ys = zip(*(info.transform @ c for c in ((x0, y0), (x1, y0), (x0, y1), (x1, y1))))
    return View(info.crs, (min(xs), min(ys), max(xs), max(ys)), window, 1.0)


def axis_labels(crs: CRS) -> tuple[str, str]:
    """x and y axis labels naming ``crs`` and its units, e.g.
    ``("Easting (m), EPSG:3857 WGS 84 / Pseudo-Mercator", "Northing (m)")``."""
    axes = {a.direction: a for a in crs.axis_info}
    units = {"metre": "m", "degree": "°", "US survey foot": "ftUS", "foot": "ft"}

    def label(names, default):
        a = next((axes[d] for d in names if d in axes), None)
        if a is None:
            return default
        return f"{a.name} ({units.get(a.unit_name, a.unit_name)})"

    x = label(("east", "west"), "x")
    y = label(("north", "south"), "y")
    name = crs_name(crs)
    return (f"{x}, {name}" + (f" {crs.name}" if name != crs.name else ""), y)


def layer_geoms(objects, crs: CRS, keep_empty: bool = False) -> np.ndarray:
    """Geometries of ``objects`` (GeoDataFrame, GeoSeries, file or None) in ``crs``, as an
    object array; empty/missing ones removed unless ``keep_empty`` (positions preserved)."""
    if objects is None:
        return np.zeros(0, dtype=object)
    series = as_frame(objects).geometry
    if len(series) and series.crs is not None and series.crs != crs:
        series = series.to_crs(crs)
    geoms = np.asarray(series.values, dtype=object)
    if keep_empty:
        return geoms
    return geoms[[g is not None and not g.is_empty for g in geoms]] if len(geoms) else geoms


def as_frame(objects) -> gpd.GeoDataFrame:
    """A GeoDataFrame of ``objects``: a GeoDataFrame, a GeoSeries or a vector file (read as
    :func:`fastsam_geo.evaluate` and the CLI read them)."""
    if isinstance(objects, gpd.GeoDataFrame):
        return objects
    if isinstance(objects, gpd.GeoSeries):
        return gpd.GeoDataFrame(geometry=objects)
    if isinstance(objects, str | os.PathLike):
        from .io import read_vector

        return read_vector(objects)
    return gpd.GeoDataFrame(geometry=gpd.GeoSeries(objects))


def in_view(geoms: np.ndarray, view: View) -> np.ndarray:
    if not len(geoms):
        return geoms
    return geoms[shapely.intersects(geoms, shapely.box(*view.bounds))]


def pixel_box(box: tuple[int, int, int, int], t: Affine) -> shapely.Polygon:
    c0, r0, c1, r1 = box
    return shapely.Polygon([t @ (c0, r0), t @ (c1, r0), t @ (c1, r1), t @ (c0, r1)])
