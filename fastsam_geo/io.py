"""Vector output and input: formats chosen by extension, written atomically.

A result is written to a hidden temporary file next to the destination and renamed over
it only when complete, so a run that fails or is interrupted never leaves a half-written
GeoPackage behind (and never clobbers a previous good result).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import shapely
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

    Same rules as :func:`write_stream` (it is one batch of it): GeoPackage and FlatGeobuf
    layers are MultiPolygon; an empty frame still writes a valid layer with its schema.
    """
    columns = {c: str(gdf[c].dtype) for c in gdf.columns if c != gdf.geometry.name}
    batch = (list(gdf.geometry.values), {c: gdf[c].to_numpy() for c in columns})
    write_stream(iter([batch]), path, gdf.crs, columns, layer=layer)
    return Path(path)


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


def write_stream(batches: Iterator[tuple[list, dict[str, np.ndarray]]], path: str | os.PathLike, crs: CRS,
                 columns: dict[str, str], *, layer: str | None = None) -> int:
    """Write ``(geometries, {column: values})`` batches to ``path`` as they arrive; return the count.

    Nothing is held beyond one batch, so output size does not limit memory. GeoPackage and
    FlatGeobuf layers are MultiPolygon (Polygons promoted, one schema for the whole stream);
    GeoParquet and GeoJSON keep each geometry's own type. Written to a temporary file and
    renamed when complete: a failure (re-raised as it was) leaves no partial file.
    """
    import pyarrow as pa

    driver = check_output(path)
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.partial{path.suffix}")
    types = {name: pa.string() if dtype in ("object", "str", "string") else pa.from_numpy_dtype(np.dtype(dtype))
             for name, dtype in columns.items()}
    fields = [pa.field(name, t) for name, t in types.items()]
    wkb_meta = {b"ARROW:extension:name": b"geoarrow.wkb"}
    schema = pa.schema([*fields, pa.field("geometry", pa.binary(), metadata=wkb_meta)])
    multi = driver in ("GPKG", "FlatGeobuf")
    count = [0]
    failure: list[BaseException] = []

    def record_batches():
        try:
            for geoms, values in batches:
                if not geoms:
                    continue
                arr = np.asarray(geoms, dtype=object)
                arr[shapely.is_missing(arr) | shapely.is_empty(arr)] = None  # empty -> null geometry
                if multi:
                    single = shapely.get_type_id(arr) == 3  # Polygon
                    arr[single] = [shapely.MultiPolygon([g]) for g in arr[single]]
                count[0] += len(arr)
                cols = [pa.array(list(values[name]) if types[name] == pa.string() else np.asarray(values[name]),
                                 type=types[name]) for name in columns]
                yield pa.record_batch([*cols, pa.array(shapely.to_wkb(arr))], schema=schema)
        except BaseException as exc:
            failure.append(exc)
            raise

    try:
        if driver == "Parquet":
            _write_geoparquet_stream(record_batches(), schema, tmp, crs)
        else:
            reader = pa.RecordBatchReader.from_batches(schema, record_batches())
            kwargs = {"layer": layer or path.stem} if driver == "GPKG" else {}
            if driver == "FlatGeobuf":
                kwargs["layer_options"] = {"SPATIAL_INDEX": "YES"}
            pyogrio.write_arrow(reader, tmp, driver=driver, geometry_name="geometry",
                                geometry_type="MultiPolygon" if multi else "Unknown", crs=crs.to_wkt(), **kwargs)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if failure:
            raise failure[0] from None
        if isinstance(exc, OutputError | KeyboardInterrupt):
            raise
        raise OutputError(f"{path}: could not write {driver} ({exc})") from exc
    return count[0]


def _write_geoparquet_stream(batches, schema, path: Path, crs: CRS) -> None:
    """GeoParquet 1.1 (WKB) written one row group per batch, with its ``geo`` metadata."""
    import json

    import pyarrow.parquet as pq

    geo = {"version": "1.1.0", "primary_column": "geometry",
           "columns": {"geometry": {"encoding": "WKB", "geometry_types": [], "crs": crs.to_json_dict()}}}
    schema = schema.with_metadata({b"geo": json.dumps(geo).encode()})
    with pq.ParquetWriter(path, schema) as writer:
        for batch in batches:
            writer.write_batch(batch.replace_schema_metadata(schema.metadata))
