"""Vector output and input: formats chosen by extension, written atomically, losing no file.

A result is written to a temporary file next to the destination and renamed over it only
when complete, so a run that fails or is interrupted never leaves a half-written file
behind and never clobbers a previous good result. The rules that keep every other file safe:

* Temporary names are ours alone, ``.fastsam-geo-<scope>-<pid>-<uuid>.partial<ext>``: safe
  characters only, created exclusively (never an existing file), removed on any failure.
  They are never built from the destination's name: pyogrio runs every path through
  ``urllib.parse.urlparse``, which cuts the last path segment at ``;`` (RFC 2396 "params"),
  so ``.profile_test;v1.ab12cd34.partial.gpkg`` was written to ``.profile_test``. The layer
  inside is named after the destination (its stem, or ``layer``), not the temporary file.
* An output that is one of the run's inputs (the raster, the prompts file) is refused.
* A GeoPackage holds many layers: writing into an existing one replaces only the named layer.
  The file is copied (SQLite's backup API: a consistent snapshot) to the temporary name, the
  layer written into the copy, and the copy renamed over: a failed run leaves it untouched.
  The other formats hold one layer: the file is replaced.
* Temporary files a killed run (SIGKILL, power loss) left behind are removed by the next write
  into that folder once their process is gone, and named in a :class:`LeftoverFilesWarning`.
"""

from __future__ import annotations

import os
import string
from collections.abc import Iterable, Iterator
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import shapely
from pyproj import CRS

from .atomic import (  # noqa: F401 - re-exported: TEMP_NAME, temp_name, scope checks
    LEGACY_TEMP_NAME,
    TEMP_NAME,
    _scope,
    check_geopackage,
    commit,
    copy_geopackage,
    discard,
    gdal_path,
    remove_leftovers,
    reserve,
    temp_name,
)
from .errors import EmptyResultError, InputError, LeftoverFilesWarning, OutputError  # noqa: F401
from .vectorize import as_multipolygons

WGS84 = CRS.from_user_input("OGC:CRS84")
"""GeoJSON's CRS (RFC 7946): WGS 84, longitude then latitude."""

_GPKG_BAD_FIRST = frozenset(string.punctuation) - {"_"}  # GDAL refuses GeoPackage layer names starting so

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


def check_output(path: str | os.PathLike, *, overwrite: bool = True, inputs: Iterable = (),
                 layer: str | None = None) -> str:
    """Validate an output path before any work is done; return its driver.

    Raises :class:`OutputError` if the extension is unknown, the folder does not exist or
    is not writable, the file exists and ``overwrite`` is False, the output is one of
    ``inputs`` (paths; ``None`` entries are skipped), ``layer`` cannot be a layer of this
    format, or an existing GeoPackage is not one or is open in another program.
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
    check_not_input(path, inputs)
    layer_name(path, layer)
    if driver == "GPKG":
        check_geopackage(Path(path))
    return driver


def check_not_input(path: str | os.PathLike, inputs: Iterable) -> None:
    """Refuse an output that is one of the run's inputs: renaming the result over it would
    destroy the input (same path, symlink or hard link; compared before either exists too)."""
    for src in inputs:
        if src is not None and _same_file(path, src):
            raise OutputError(f"{path}: is the input {src}; write the output to another file")


def _same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): the paths differ, so the files will
        return False


def layer_name(path: str | os.PathLike, layer: str | None = None) -> str | None:
    """The layer an output gets: ``layer``, else the file's stem (None for GeoParquet, which
    has no layer names). :class:`OutputError` for a name the format cannot hold."""
    driver = output_format(path)
    if driver == "Parquet":
        if layer is not None:
            raise OutputError(f"{path}: GeoParquet files have no layer names; drop the layer "
                              f"({layer!r}) or write a .gpkg")
        return None
    if layer is None:
        stem = Path(path).stem
        return _gpkg_layer(stem) if driver == "GPKG" else stem
    if not layer:
        raise OutputError(f"{path}: the layer name is empty; give a name or leave it out")
    if driver == "GPKG" and _gpkg_layer(layer) != layer:
        raise OutputError(f"{path}: {layer!r} cannot be a GeoPackage layer name (no leading punctuation, "
                          "no 'gpkg' or 'sqlite_' prefix); choose another layer name")
    return layer


def _gpkg_layer(stem: str) -> str:
    """``stem`` made a GeoPackage layer name GDAL accepts (``.hidden`` -> ``hidden``)."""
    name = stem.lstrip("".join(_GPKG_BAD_FIRST)) or "layer"
    if name.startswith("gpkg") or name.lower().startswith("sqlite_"):
        name = f"layer_{name}"
    return name


def write(gdf: gpd.GeoDataFrame, path: str | os.PathLike, *, layer: str | None = None,
          dst_crs: object = None) -> Path:
    """Write ``gdf`` to ``path`` in the format its extension names, atomically.

    Same rules as :func:`write_stream` (it is one batch of it): every layer is MultiPolygon,
    in ``dst_crs`` (see :func:`output_crs`); an empty frame still writes a valid layer with its schema.
    """
    columns = {c: str(gdf[c].dtype) for c in gdf.columns if c != gdf.geometry.name}
    geoms = gdf.geometry.values
    batch = (list(geoms), {c: gdf[c].to_numpy() for c in columns})
    write_stream(iter([batch]), path, gdf.crs, columns, layer=layer, dst_crs=dst_crs,
                 spatial_index=not bool((geoms.isna() | geoms.is_empty).any()))
    return Path(path)


def output_crs(path: str | os.PathLike, crs: CRS, dst_crs: object = None) -> CRS:
    """The CRS a layer is written in: ``dst_crs`` if given (anything pyproj reads; a bad one is
    a :class:`~fastsam_geo.errors.CRSError`), else WGS 84 lon/lat for GeoJSON (RFC 7946), else
    ``crs`` (the raster's)."""
    from .coords import parse_crs

    if dst_crs is not None:
        return parse_crs(dst_crs)
    return WGS84 if output_format(path) == "GeoJSON" else crs


def is_wgs84(crs: CRS) -> bool:
    """Whether ``crs`` is WGS 84 longitude/latitude (EPSG:4326 or OGC:CRS84, any axis order)."""
    return crs.equals(WGS84, ignore_axis_order=True)


def read_vector(path: str | os.PathLike, *, layer: str | None = None,
                layer_option: str = "layer=") -> gpd.GeoDataFrame:
    """Read one layer of any vector file GDAL (or GeoParquet) can; :class:`InputError` with the
    reason if not. A file with several spatial layers (a GeoPackage that ``segment --layer``
    wrote into) needs ``layer``: reading its first one would silently score or train on the
    wrong features. ``layer_option`` names the argument that chooses it, for that message. A
    table without geometry (a CSV) is refused too."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    try:
        if path.suffix.lower() in (".parquet", ".geoparquet"):
            if layer is not None:
                raise InputError(f"{path}: a GeoParquet file has one layer; do not name one ({layer!r})")
            gdf = gpd.read_parquet(path)
        else:
            with gdal_path(path) as name:  # ``a;b.gpkg`` would open ``a``
                layer = _one_layer(path, name, layer, layer_option)
                gdf = gpd.read_file(name, layer=layer, engine="pyogrio")
    except InputError:
        raise
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: not a vector file that can be read ({first})") from exc
    if not isinstance(gdf, gpd.GeoDataFrame) or gdf.geometry.name not in gdf.columns:
        raise InputError(f"{path}: a table without geometry; give a vector file (GeoPackage, GeoJSON, "
                         "Shapefile, FlatGeobuf, GeoParquet)")
    if gdf.crs is None and len(gdf):
        raise InputError(f"{path}: vector file has no CRS; set one (e.g. ogr2ogr -a_srs)")
    return gdf


def _one_layer(path: Path, name: str, layer: str | None, option: str) -> str | None:
    """The layer of ``name`` to read: ``layer`` if the file has it, else its only spatial layer
    (None: the driver's only or first one when no layer has geometry)."""
    try:
        layers = pyogrio.list_layers(name)
    except Exception:  # not a vector file: reading it says why
        return layer
    names = [str(n) for n, _ in layers]
    if layer is not None:
        if layer not in names:
            raise InputError(f"{path}: no layer {layer!r}; it has {_listed(names)}")
        return layer
    spatial = [str(n) for n, geom in layers if geom is not None]
    if len(spatial) > 1:
        raise InputError(f"{path}: has {len(spatial)} layers ({_listed(spatial)}); choose one with {option}")
    return spatial[0] if spatial else None


def _listed(names: list[str], most: int = 8) -> str:
    shown = ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")
    return shown or "no layers"


def empty_frame(crs: CRS, columns: dict[str, str]) -> gpd.GeoDataFrame:
    """An empty GeoDataFrame with the given ``{column: dtype}`` schema and CRS."""
    import pandas as pd

    data = {name: pd.Series(dtype=dtype) for name, dtype in columns.items()}
    return gpd.GeoDataFrame(data, geometry=gpd.GeoSeries([], crs=crs), crs=crs)


def read_prompts(path: str | os.PathLike, *, layer: str | None = None,
                 layer_option: str = "--prompts-layer / layer=") -> list:
    """Prompts from a vector file, in its own CRS: points -> point prompts, polygons -> box
    prompts (their bounding boxes); a multi-part feature gives one prompt per part. ``label``
    (1 select / 0 remove, points only) and ``group`` columns are honoured, whatever their case
    (``LABEL`` from a Shapefile). Features without geometry are skipped; messages number
    features as the file does (from 0). ``layer``: the layer of a file with several.
    Raises :class:`PromptError` for a file without features or with other geometry types.
    """
    return prompts_from_frame(read_vector(path, layer=layer, layer_option=layer_option), path)


def prompts_from_frame(gdf: gpd.GeoDataFrame | gpd.GeoSeries, path: object = "prompts") -> list:
    """:func:`read_prompts` of a GeoDataFrame or GeoSeries (``path`` names it in messages)."""
    from .errors import PromptError
    from .prompts import BoxPrompt, PointPrompt

    if isinstance(gdf, gpd.GeoSeries):
        gdf = gpd.GeoDataFrame(geometry=gdf)
    present = (gdf.geometry.notna() & ~gdf.geometry.is_empty).to_numpy()
    if not present.any():
        raise PromptError(f"{path}: the prompts file has no features")
    if gdf.crs is None:
        raise PromptError(f"{path}: the prompts file has no CRS; assign one (e.g. ogr2ogr -a_srs EPSG:4326)")
    columns = {}
    for c in gdf.columns:  # an exact name wins over another case
        if c != gdf.geometry.name and (c.lower() not in columns or c == c.lower()):
            columns[c.lower()] = c
    labels = gdf[columns["label"]].tolist() if "label" in columns else [None] * len(gdf)
    groups = gdf[columns["group"]].tolist() if "group" in columns else [None] * len(gdf)
    crs = gdf.crs.to_wkt()
    out = []
    for i, g in enumerate(gdf.geometry):  # i: the feature's position in the file
        if not present[i]:
            continue
        label = _label(labels[i], path, i)
        group = groups[i]
        group = None if group is None or (isinstance(group, float) and group != group) else group
        if g.geom_type in ("Point", "MultiPoint"):
            for p in getattr(g, "geoms", [g]):
                out.append(PointPrompt(p.x, p.y, crs=crs, label=label, group=group))
        elif g.geom_type in ("Polygon", "MultiPolygon"):
            if label == 0:
                raise PromptError(f"{path}: feature {i} is a polygon with label 0; a box selects an object, "
                                  "remove objects with points labelled 0")
            for part in getattr(g, "geoms", [g]):  # each part its own box, as each point of a MultiPoint
                out.append(BoxPrompt(*part.bounds, crs=crs))
        else:
            raise PromptError(f"{path}: feature {i} is a {g.geom_type}; prompts must be points "
                              "(clicks) or polygons (boxes)")
    return out


def _label(value: object, path: str | os.PathLike, i: int) -> int:
    """A prompt's ``label`` column value as 1 (select) or 0 (remove); empty means 1."""
    from .errors import PromptError

    if value is None or (isinstance(value, float) and value != value):
        return 1
    try:
        f = float(value)
    except (TypeError, ValueError):
        f = float("nan")
    if f not in (0.0, 1.0):
        raise PromptError(f"{path}: feature {i} has label {value!r}; labels must be 1 (select) or 0 (remove)")
    return int(f)


def write_stream(batches: Iterator[tuple[list, dict[str, np.ndarray]]], path: str | os.PathLike, crs: CRS,
                 columns: dict[str, str], *, layer: str | None = None, dst_crs: object = None,
                 spatial_index: bool = True, allow_empty: bool = True) -> int:
    """Write ``(geometries in crs, {column: values})`` batches to ``path`` as they arrive; return the count.

    Nothing is held beyond one batch, so output size does not limit memory. Every format's
    layer is MultiPolygon (Polygons promoted: one type per layer, the same in every format);
    empty geometries and NaN numbers are written as NULL. Geometries are reprojected to
    :func:`output_crs` (``dst_crs``; GeoJSON defaults to RFC 7946 WGS 84 lon/lat, written with
    no ``crs`` member). The layer is named ``layer``, else after the file's stem (GeoParquet
    has no layer names); in an existing GeoPackage only that layer is replaced; a new one is
    GeoPackage 1.2 (GDAL before 3.7, in QGIS 3.28 and older, warns on 1.4 files). FlatGeobuf
    gets a spatial index unless ``spatial_index`` is False (its index cannot hold a NULL
    geometry: :func:`write` turns it off for a layer that has one). Written to a
    temporary file and renamed when complete: a failure (re-raised as it was, Ctrl-C and
    SIGTERM included) leaves no temporary file and the previous output as it was. With
    ``allow_empty=False`` a run that wrote no row raises :class:`EmptyResultError` instead of
    committing an empty layer (the previous output, if any, stays as it was).
    """
    driver = check_output(path, layer=layer)
    path = Path(path)
    name = layer_name(path, layer)
    out_crs = output_crs(path, crs, dst_crs)
    remove_leftovers(path.parent)
    schema, types = _arrow_schema(columns, covering=driver == "Parquet")
    count = [0]
    failure: list[BaseException] = []
    arrow = _record_batches(batches, schema, types, (crs, out_crs), count, failure)
    tmp = reserve(path)
    try:
        if driver == "GPKG" and path.is_file() and path.stat().st_size:
            copy_geopackage(path, tmp)
        _write_driver(arrow, schema, tmp, driver, out_crs, name, spatial_index)
        if count[0] == 0 and not allow_empty:
            raise EmptyResultError(f"no objects found; nothing written to {path} (--allow-empty writes an empty "
                                   "layer)")
        commit(tmp, path)
    except BaseException as exc:
        discard(tmp)
        if failure:
            raise failure[0] from None
        if isinstance(exc, OutputError | EmptyResultError | KeyboardInterrupt):
            raise
        raise OutputError(f"{path}: could not write {driver} ({exc})") from exc
    return count[0]


BBOX_FIELDS = ("xmin", "ymin", "xmax", "ymax")


def _arrow_schema(columns: dict[str, str], *, covering: bool = False):
    """The Arrow schema of a stream (attribute columns, then WKB geometry, then with ``covering``
    GeoParquet 1.1's ``bbox`` struct column) and its attribute column types."""
    import pyarrow as pa

    types = {name: pa.string() if dtype in ("object", "str", "string") else pa.from_numpy_dtype(np.dtype(dtype))
             for name, dtype in columns.items()}
    fields = [pa.field(name, t) for name, t in types.items()]
    wkb_meta = {b"ARROW:extension:name": b"geoarrow.wkb"}
    fields.append(pa.field("geometry", pa.binary(), metadata=wkb_meta))
    if covering:
        fields.append(pa.field("bbox", pa.struct([pa.field(k, pa.float64()) for k in BBOX_FIELDS])))
    return pa.schema(fields), types


def _record_batches(batches, schema, types, crs: tuple[CRS, CRS], count: list, failure: list):
    """Arrow record batches of the ``(geometries, values)`` batches, geometries reprojected from
    ``crs[0]`` to ``crs[1]``; an exception raised while producing them (the pipeline's, or
    Ctrl-C/SIGTERM) is kept in ``failure`` so it is re-raised as it was, not as the writer's
    wrapping of it."""
    import pyarrow as pa

    from .coords import reproject_footprints

    covering = "bbox" in schema.names
    try:
        for geoms, values in batches:
            if not len(geoms):
                continue
            arr = as_multipolygons(geoms)  # empty -> NULL; one type per layer
            arr = reproject_footprints(arr, *crs)
            count[0] += len(arr)
            cols = [pa.array(list(values[name]), type=t) if t == pa.string()
                    else pa.array(np.asarray(values[name]), type=t, from_pandas=True)  # NaN -> NULL
                    for name, t in types.items()]
            cols.append(pa.array(shapely.to_wkb(arr), type=pa.binary()))
            if covering:
                missing = shapely.is_missing(arr)
                b = shapely.bounds(arr)
                cols.append(pa.StructArray.from_arrays([pa.array(b[:, i]) for i in range(4)], names=BBOX_FIELDS,
                                                       mask=pa.array(missing)))
            yield pa.record_batch(cols, schema=schema)
    except BaseException as exc:
        failure.append(exc)
        raise


def _write_driver(arrow, schema, tmp: Path, driver: str, crs: CRS, name: str | None,
                  spatial_index: bool = True) -> None:
    """Stream the batches into ``tmp`` with the format's writer; the layer is called ``name``."""
    import pyarrow as pa

    if driver == "Parquet":
        _write_geoparquet_stream(arrow, schema, tmp, crs)
        return
    reader = pa.RecordBatchReader.from_batches(schema, arrow)
    options, created = {}, {}
    if driver == "FlatGeobuf":
        options = {"SPATIAL_INDEX": "YES" if spatial_index else "NO"}
    elif driver == "GeoJSON" and is_wgs84(crs):  # RFC 7946: no crs member, counter-clockwise outer rings
        options = {"RFC7946": "YES"}
    elif driver == "GPKG" and tmp.stat().st_size == 0:  # a new file, not a copy with other layers
        created = {"VERSION": "1.2"}
    with gdal_path(tmp) as target:
        pyogrio.write_arrow(reader, target, driver=driver, layer=name, geometry_name="geometry",
                            geometry_type="MultiPolygon", crs=crs.to_wkt(), layer_options=options,
                            dataset_options=created)


def geoparquet_metadata(crs: CRS, bbox: list[float] | None = None) -> dict:
    """GeoParquet 1.1 ``geo`` metadata of our layers: one WKB MultiPolygon column ``geometry``
    in ``crs`` (PROJJSON), covered by the ``bbox`` struct column, ``bbox`` the layer's extent."""
    col = {"encoding": "WKB", "geometry_types": ["MultiPolygon"], "crs": crs.to_json_dict(),
           "covering": {"bbox": {k: ["bbox", k] for k in BBOX_FIELDS}}}
    if bbox is not None:
        col["bbox"] = bbox
    return {"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": col}}


def _write_geoparquet_stream(batches, schema, path: Path, crs: CRS) -> None:
    """GeoParquet 1.1 (WKB, bbox covering column) written one row group per batch; its ``geo``
    metadata, with the layer's extent, goes in the footer once every batch is written."""
    import json

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    extent = np.array([np.inf, np.inf, -np.inf, -np.inf])
    with open(path, "wb") as f, pq.ParquetWriter(f, schema) as writer:  # a file object: no URI parsing
        for batch in batches:
            box = batch.column("bbox")
            if box.null_count < len(box):
                lo = [pc.min(pc.struct_field(box, [i])).as_py() for i in range(2)]
                hi = [pc.max(pc.struct_field(box, [i])).as_py() for i in range(2, 4)]
                extent = np.r_[np.minimum(extent[:2], lo), np.maximum(extent[2:], hi)]
            writer.write_batch(batch)
        bbox = [float(v) for v in extent] if np.isfinite(extent).all() else None
        writer.add_key_value_metadata({"geo": json.dumps(geoparquet_metadata(crs, bbox))})
