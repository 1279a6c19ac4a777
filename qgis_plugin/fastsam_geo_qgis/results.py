"""Where results go: one styled memory layer per source raster, an undo stack, GeoPackage export."""

from __future__ import annotations

import os

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsField,
    QgsFields,
    QgsFillSymbol,
    QgsProject,
    QgsSimpleLineSymbolLayer,
    QgsSingleSymbolRenderer,
    QgsVectorFileWriter,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QVariant
from qgis.PyQt.QtGui import QColor

OUTLINE = QColor(255, 230, 0)
PROPERTY = "fastsam_geo/source"


def result_fields() -> QgsFields:
    fields = QgsFields()
    fields.append(QgsField("score", QVariant.Double))
    fields.append(QgsField("area_m2", QVariant.Double))
    fields.append(QgsField("prompt", QVariant.String))
    return fields


def outline_renderer() -> QgsSingleSymbolRenderer:
    """A yellow outline over a thin dark halo, no fill: the imagery stays visible."""
    symbol = QgsFillSymbol.createSimple({"style": "no", "outline_style": "no"})
    halo = QgsSimpleLineSymbolLayer(QColor(0, 0, 0, 160), 0.9)
    line = QgsSimpleLineSymbolLayer(OUTLINE, 0.5)
    symbol.changeSymbolLayer(0, halo)
    symbol.appendSymbolLayer(line)
    return QgsSingleSymbolRenderer(symbol)


class ResultLayers:
    """One memory layer per source raster (made again if the user removed it), and the undo stack."""

    def __init__(self, project: QgsProject | None = None):
        self.project = project or QgsProject.instance()
        self.fields = result_fields()
        self._layers: dict[str, str] = {}  # source -> layer id
        self._undo: list[tuple[str, list[int]]] = []

    def layer(self, source: str) -> QgsVectorLayer | None:
        lid = self._layers.get(source)
        return self.project.mapLayer(lid) if lid else None

    def layer_for(self, source: str, name: str, crs: QgsCoordinateReferenceSystem) -> QgsVectorLayer:
        layer = self.layer(source)
        if layer is None:
            layer = QgsVectorLayer("MultiPolygon", f"{name} (FastSAM)", "memory")
            layer.setCrs(crs)
            layer.dataProvider().addAttributes(self.fields.toList())
            layer.updateFields()
            layer.setRenderer(outline_renderer())
            layer.setCustomProperty(PROPERTY, source)
            self.project.addMapLayer(layer)
            self._layers[source] = layer.id()
        return layer

    def add(self, source: str, name: str, crs: QgsCoordinateReferenceSystem, features: list) -> QgsVectorLayer:
        """Add one run's features (one undo step) and return the layer."""
        layer = self.layer_for(source, name, crs)
        if features:
            ok, added = layer.dataProvider().addFeatures(features)
            if not ok:
                raise RuntimeError(f"could not add features to {layer.name()}")
            self._undo.append((layer.id(), [f.id() for f in added]))
            layer.updateExtents()
            layer.triggerRepaint()
        return layer

    def can_undo(self) -> bool:
        return bool(self._undo)

    def undo(self) -> int:
        """Remove the last run's features; how many were removed."""
        while self._undo:
            lid, fids = self._undo.pop()
            layer = self.project.mapLayer(lid)
            if layer is not None:
                layer.dataProvider().deleteFeatures(fids)
                layer.triggerRepaint()
                return len(fids)
        return 0

    def save(self, source: str, path: str) -> str:
        """Write the source's result layer to a GeoPackage (its own layer, replaced if there); the file name."""
        layer = self.layer(source)
        if layer is None:
            raise ValueError("no results for this raster yet")
        opts = QgsVectorFileWriter.SaveVectorOptions()
        opts.driverName = "GPKG"
        opts.layerName = layer.name().replace(" (FastSAM)", "_fastsam").replace(" ", "_")
        if os.path.exists(path):
            opts.actionOnExistingFile = QgsVectorFileWriter.CreateOrOverwriteLayer
        err, msg, new_file, _ = QgsVectorFileWriter.writeAsVectorFormatV3(
            layer, path, self.project.transformContext(), opts)
        if err != QgsVectorFileWriter.NoError:
            raise OSError(f"cannot write {path}: {msg}")
        return new_file or path

    def forget(self) -> None:
        self._layers.clear()
        self._undo.clear()
