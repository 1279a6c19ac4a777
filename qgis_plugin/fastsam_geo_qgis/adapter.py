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

def frame(features: Iterable[QgsFeature], crs: QgsCoordinateReferenceSystem) -> gpd.GeoDataFrame:
    """Features' geometries as a GeoDataFrame in ``crs``, one row each, in order."""
    geoms = [shapely.from_wkb(bytes(f.geometry().asWkb())) if not f.geometry().isNull() else shapely.Polygon()
             for f in features]
    c = crs_string(crs) if crs.isValid() else None
    return gpd.GeoDataFrame(geometry=gpd.GeoSeries(np.asarray(geoms, dtype=object), crs=c), crs=c)


def source_prompts(points: QgsFeatureSource | None, boxes: QgsFeatureSource | None, *, label_field: str = "",
                   group_field: str = "") -> list:
    """Point features as point prompts (``label_field``: 1 foreground, 0 background; ``group_field``:
    points of one group select one object), polygon features as box prompts (their bounding boxes)."""
    out: list = []
    if points is not None:
        crs = crs_string(points.sourceCrs())
        for feat in points.getFeatures():
            label, group = (_attr(feat, label_field), _attr(feat, group_field))
            label = 1 if label is None else label
            for part in feat.geometry().constParts():
                out.append(PointPrompt(part.x(), part.y(), crs=crs, label=label, group=group))
    if boxes is not None:
        crs = crs_string(boxes.sourceCrs())
        for feat in boxes.getFeatures():
            r = feat.geometry().boundingBox()
            if not r.isEmpty():
                out.append(BoxPrompt(r.xMinimum(), r.yMinimum(), r.xMaximum(), r.yMaximum(), crs=crs))
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
