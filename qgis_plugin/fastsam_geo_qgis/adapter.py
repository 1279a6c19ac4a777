"""The one module converting between QGIS values and fastsam-geo values.

QGIS in: points, rectangles, CRSs, raster layers, feature sources and dock settings become
prompts, bboxes, :class:`fastsam_geo.Options` and a :class:`Job` (what a session is keyed by).
QGIS out: result GeoDataFrames become ``QgsFeature`` s. Nothing in ``fastsam_geo`` sees a QGIS type.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from qgis.core import (
    NULL,
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsFeatureSource,
    QgsFields,
    QgsGeometry,
    QgsPointXY,
    QgsRasterLayer,
    QgsRectangle,
    QgsWkbTypes,
)

from fastsam_geo import BoxPrompt, Options, PointPrompt, TextPrompt
from fastsam_geo.errors import InputError
from fastsam_geo.gsd import validate as validate_gsd
from fastsam_geo.prompts import describe

BUNDLED = "buildings-nano"
MODELS = (BUNDLED, "FastSAM-s.pt", "FastSAM-x.pt")


@dataclass(frozen=True)
class Job:
    """What a :class:`fastsam_geo.SegmentedRaster` is made from (and keyed by in the session pool)."""

    source: str
    segmenter: str | None
    options: Options
    clip: str | None = None


def crs_string(crs: QgsCoordinateReferenceSystem) -> str:
    """A CRS as pyproj reads it: the EPSG code when there is one, else WKT2."""
    if not crs.isValid():
        raise InputError("no valid CRS (of a layer or the map); set one first (Layer Properties > Source, "
                         "Project Properties > CRS)")
    auth = crs.authid()
    if auth.upper().startswith(("EPSG:", "ESRI:", "IGNF:")):
        return auth
    return crs.toWkt(QgsCoordinateReferenceSystem.WKT2_2019)


def raster_source(layer: QgsRasterLayer | None) -> str:
    """The file (or GDAL dataset name) behind a raster layer."""
    if layer is None or not layer.isValid():
        raise InputError("choose a raster layer first")
    if layer.providerType() != "gdal":
        raise InputError(f"layer {layer.name()!r} comes from the {layer.providerType()!r} provider; FastSAM reads "
                         "rasters GDAL opens (GeoTIFF, COG, VRT...): save it as a GeoTIFF first")
    return layer.source().split("|")[0]


def model_spec(text: str) -> str | None:
    """The dock's model text as ``segmenter=``: None for the bundled model, else a name, path or ``module:factory``."""
    text = (text or "").strip()
    return None if text in ("", BUNDLED, f"{BUNDLED}.pt") else text


def gsd_setting(text: object) -> str | float:
    """A GSD as typed (dock, Processing): ``auto`` (also when empty), ``native`` or the model's m/px."""
    return validate_gsd(("" if text is None else str(text)).strip() or "auto")


def options(*, tile_size: int, overlap: int, device: str, min_area: int, regularize: bool = False,
            gsd: object = "auto") -> Options:
    """The dock's settings, validated (an InputError names the bad one)."""
    return Options(tile_size=int(tile_size), overlap=int(overlap), device=str(device), min_area=int(min_area),
                   regularize=bool(regularize), gsd=gsd_setting(gsd))


def job(layer: QgsRasterLayer | None, model: str, opts: Options, clip: str | None = None) -> Job:
    return Job(raster_source(layer), model_spec(model), opts, clip or None)


def point_prompts(points: list[tuple[QgsPointXY, int]], crs: QgsCoordinateReferenceSystem) -> list[PointPrompt]:
    """Clicked points (label 1 foreground, 0 background) as one object: a point group."""
    c = crs_string(crs)
    return [PointPrompt(p.x(), p.y(), crs=c, label=int(label), group="click") for p, label in points]


def box_prompt(rect: QgsRectangle, crs: QgsCoordinateReferenceSystem) -> BoxPrompt:
    return BoxPrompt(rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum(), crs=crs_string(crs))


def text_prompt(text: str) -> TextPrompt:
    return TextPrompt(text)


def bbox(rect: QgsRectangle, crs: QgsCoordinateReferenceSystem) -> tuple[tuple[float, float, float, float], str]:
    """A map extent as ``segment(bbox=..., bbox_crs=...)`` takes it (the raster is tiled on its own grid)."""
    return (rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum()), crs_string(crs)


def text_support(clip: str | None) -> str | None:
    """None when text prompts can run, else what to install or choose (nothing is imported)."""
    if importlib.util.find_spec("open_clip") is None or importlib.util.find_spec("torch") is None:
        from . import pip_command

        return ("Text prompts need the [text] extra (open_clip, torch) in QGIS's Python: "
                f"{pip_command('text')}")
    if not clip or not Path(clip).is_file():
        return ("Text prompts need CLIP weights on disk (never downloaded): choose the ViT-B-32 weights file "
                "(open_clip_pytorch_model.bin) below")
    return None


def clip_spec(clip: str | None) -> str | None:
    return f"ViT-B-32:{clip}" if clip else None


# -- feature sources (Processing inputs) ----------------------------------------------------------

def frame(features: Iterable[QgsFeature], crs: QgsCoordinateReferenceSystem,
          fields: Iterable[str] = ()) -> gpd.GeoDataFrame:
    """Features' geometries (curves as straight segments: shapely has no arcs) and attributes
    ``fields`` (NULL as None) as a GeoDataFrame in ``crs``, one row each, in order."""
    fields = list(fields)
    geoms, rows = [], []
    for f in features:
        g = QgsGeometry(f.geometry())
        if g.isNull():
            geoms.append(shapely.Polygon())
        else:
            if QgsWkbTypes.isCurvedType(g.wkbType()):  # (a curved type even with straight rings only)
                g = QgsGeometry(g.constGet().segmentize())
            geoms.append(shapely.from_wkb(bytes(g.asWkb())))
        rows.append([_attr(f, name) for name in fields])
    c = crs_string(crs) if crs.isValid() else None
    data = {name: [r[k] for r in rows] for k, name in enumerate(fields)}
    return gpd.GeoDataFrame(data, geometry=gpd.GeoSeries(np.asarray(geoms, dtype=object), crs=c), crs=c)


def source_prompts(points: QgsFeatureSource | None, boxes: QgsFeatureSource | None, *, label_field: str = "",
                   group_field: str = "") -> list:
    """Point features as point prompts, polygon features as box prompts, read by the rules of
    :func:`fastsam_geo.read_prompts` (one prompt per part of a multi-part feature; ``label`` (1
    object, 0 background; numbers or text) and ``group`` columns in any case). ``label_field`` /
    ``group_field`` name other fields to read as them."""
    from fastsam_geo.io import prompts_from_frame

    out: list = []
    for source, chosen in ((points, {"label": label_field, "group": group_field}), (boxes, {})):
        if source is None:
            continue
        names = source.fields().names()
        df = frame(source.getFeatures(), source.sourceCrs(), names)
        for role, name in chosen.items():
            if name:  # the named field plays the role; a field of that name otherwise would compete
                df = df.drop(columns=[c for c in df.columns if c.lower() == role and c != name])
                df = df.rename(columns={name: role})
        if (df.geometry.notna() & ~df.geometry.is_empty).any():  # an empty layer gives no prompts
            out += prompts_from_frame(df, source.sourceName() or "prompts layer")
    return out


def _attr(feat: QgsFeature, name: str):
    """A feature's attribute, None when there is no such field or it is NULL."""
    if not name:
        return None
    v = feat[name]
    return None if v is None or v == NULL else v


# -- results (fastsam-geo out) --------------------------------------------------------------------

def geometry(geom) -> QgsGeometry:
    """A shapely geometry as a multi-part QgsGeometry (null for an empty one)."""
    if geom is None or geom.is_empty:
        return QgsGeometry()
    g = QgsGeometry()
    g.fromWkb(shapely.to_wkb(geom))
    g.convertToMultiType()
    return g


def _value(v):
    if isinstance(v, np.generic):
        v = v.item()
    return None if isinstance(v, float) and math.isnan(v) else v


def features(gdf: gpd.GeoDataFrame, fields: QgsFields, extra: dict | None = None, *, found_only: bool = False,
             prompts: list | None = None) -> list[QgsFeature]:
    """Result rows as features of ``fields`` (columns of the same name, plus ``extra`` constants;
    a ``prompt`` field gets each row's prompt described when ``prompts`` are given)."""
    out = []
    names = fields.names()
    extra = extra or {}
    for row in gdf.itertuples(index=False):
        rec = row._asdict()
        if found_only and not rec.get("found", True):
            continue
        if prompts is not None and "prompt_id" in rec:
            rec["prompt"] = describe(prompts[int(rec["prompt_id"])])
        f = QgsFeature(fields)
        f.setAttributes([_value(extra[n]) if n in extra else _value(rec.get(n)) for n in names])
        f.setGeometry(geometry(rec["geometry"]))
        out.append(f)
    return out
