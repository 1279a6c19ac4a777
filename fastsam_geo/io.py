"""Vector output and input: formats chosen by extension, written atomically.

A result is written to a hidden temporary file next to the destination and renamed over
it only when complete, so a run that fails or is interrupted never leaves a half-written
GeoPackage behind (and never clobbers a previous good result).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

import geopandas as gpd
import pyogrio
from pyproj import CRS

from .errors import InputError, OutputError

FORMATS = {
    ".gpkg": "GPKG",
    ".parquet": "Parquet",
    ".geoparquet": "Parquet",
    ".geojson": "GeoJSON",
    ".json": "GeoJSON",
    ".fgb": "FlatGeobuf",
}


def output_format(path: str | os.PathLike) -> str:
    """The driver for an output path, from its extension; :class:`OutputError` if unknown."""
    ext = Path(path).suffix.lower()
    if ext not in FORMATS:
        known = ", ".join(sorted({e for e in FORMATS if e != ".json"}))
        raise OutputError(f"{path}: unsupported output format {ext or '(no extension)'!r}; "
                          f"use one of {known}")
    return FORMATS[ext]


def check_output(path: str | os.PathLike, *, overwrite: bool = True) -> str:
    """Validate an output path before any work is done; return its driver.

    Raises :class:`OutputError` if the extension is unknown, the folder does not exist or
    is not writable, or the file exists and ``overwrite`` is False.
    """
    driver = output_format(path)
    folder = Path(path).resolve().parent
    if not folder.is_dir():
        raise OutputError(f"{path}: output folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"{path}: output folder {folder} is not writable")
    if Path(path).is_dir():
        raise OutputError(f"{path}: is a folder, not a file name")
    if Path(path).exists() and not overwrite:
        raise OutputError(f"{path}: exists (pass overwrite to replace it)")
    return driver


def write(gdf: gpd.GeoDataFrame, path: str | os.PathLike, *, layer: str | None = None) -> Path:
    """Write ``gdf`` to ``path`` in the format its extension names, atomically.

    Mixed Polygon/MultiPolygon layers are promoted to MultiPolygon for formats with a
    single geometry type; an empty frame still writes a valid layer with its schema.
    """
    driver = check_output(path)
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.partial{path.suffix}")
    try:
        if driver == "Parquet":
            gdf.to_parquet(tmp, index=False, geometry_encoding="WKB", write_covering_bbox=True)
        else:
            kwargs: dict = {"driver": driver}
            if driver == "GPKG":
                kwargs["layer"] = layer or path.stem
            types = set(gdf.geom_type.dropna()) if len(gdf) else set()
            if len(gdf) == 0:
                kwargs["geometry_type"] = "Polygon"
            elif len(types) > 1 and driver in ("GPKG", "FlatGeobuf"):
                kwargs["promote_to_multi"] = True
            if driver == "FlatGeobuf":
                kwargs["SPATIAL_INDEX"] = "YES"
            pyogrio.write_dataframe(gdf, tmp, **kwargs)
        os.replace(tmp, path)
    except Exception as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OutputError):
            raise
        raise OutputError(f"{path}: could not write {driver} ({exc})") from exc
    finally:
        for side in (tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
            with contextlib.suppress(OSError):
                side.unlink()
    return path


def read_vector(path: str | os.PathLike, *, layer: str | None = None) -> gpd.GeoDataFrame:
    """Read any vector file GDAL (or GeoParquet) can; :class:`InputError` with the reason if not."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    try:
        if path.suffix.lower() in (".parquet", ".geoparquet"):
            gdf = gpd.read_parquet(path)
        else:
            gdf = gpd.read_file(path, layer=layer, engine="pyogrio")
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: not a vector file that can be read ({first})") from exc
    if gdf.crs is None and len(gdf):
        raise InputError(f"{path}: vector file has no CRS; set one (e.g. ogr2ogr -a_srs)")
    return gdf


def empty_frame(crs: CRS, columns: dict[str, str]) -> gpd.GeoDataFrame:
    """An empty GeoDataFrame with the given ``{column: dtype}`` schema and CRS."""
    import pandas as pd

    data = {name: pd.Series(dtype=dtype) for name, dtype in columns.items()}
    return gpd.GeoDataFrame(data, geometry=gpd.GeoSeries([], crs=crs), crs=crs)


def read_prompts(path: str | os.PathLike, *, layer: str | None = None) -> list:
    """Prompts from a vector file, in its own CRS: points -> point prompts, polygons -> box
    prompts (their bounding boxes). ``label`` (1/0) and ``group`` columns are honoured.
    Raises :class:`PromptError` for a file without features or with other geometry types.
    """
    from .errors import PromptError
    from .prompts import BoxPrompt, PointPrompt

    gdf = read_vector(path, layer=layer)
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
    if len(gdf) == 0:
        raise PromptError(f"{path}: the prompts file has no features")
    crs = gdf.crs.to_wkt()
    out = []
    for i, row in enumerate(gdf.itertuples(index=False)):
        g = row.geometry
        label = int(getattr(row, "label", 1)) if getattr(row, "label", None) is not None else 1
        group = getattr(row, "group", None)
        group = None if group is None or (isinstance(group, float) and group != group) else group
        if g.geom_type in ("Point", "MultiPoint"):
            for p in getattr(g, "geoms", [g]):
                out.append(PointPrompt(p.x, p.y, crs=crs, label=label, group=group))
        elif g.geom_type in ("Polygon", "MultiPolygon"):
            out.append(BoxPrompt(*g.bounds, crs=crs))
        else:
            raise PromptError(f"{path}: feature {i} is a {g.geom_type}; prompts must be points "
                              "(clicks) or polygons (boxes)")
    return out
