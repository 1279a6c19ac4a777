"""Processing: "Segment raster (FastSAM)": every object of a raster (or of an extent) as polygons."""

from __future__ import annotations

from qgis.core import (
    QgsField,
    QgsFields,
    QgsProcessing,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSink,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QVariant

from fastsam_geo import segment_raster

from . import adapter
from .alg_common import FastSAMAlgorithm, call, progress, write


def fields() -> QgsFields:
    out = QgsFields()
    out.append(QgsField("score", QVariant.Double))
    out.append(QgsField("area_m2", QVariant.Double))
    return out


class SegmentRasterAlgorithm(FastSAMAlgorithm):
    def name(self) -> str:
        return "segment_raster"

    def displayName(self) -> str:
        return "Segment raster (FastSAM)"

    def shortHelpString(self) -> str:
        return ("Every object the model finds in the raster, as polygons in the raster's CRS with their score "
                "and geodesic area (m²). The raster is read tile by tile; objects cut by tile seams come out "
                "once and whole. With an extent, only the tiles it touches are segmented, on the raster's own "
                "tile grid, so the objects are those of a whole-raster run.")

    def initAlgorithm(self, config=None):
        self.add_raster_params()
        self.addParameter(QgsProcessingParameterExtent("EXTENT", "Only this extent", optional=True))
        self.addParameter(QgsProcessingParameterFeatureSink("OUTPUT", "Segments", QgsProcessing.TypeVectorPolygon))

    def processAlgorithm(self, parameters, context, feedback):
        layer, source, segmenter, opts = self.raster(parameters, context)
        bbox = bbox_crs = None
        if parameters.get("EXTENT"):
            crs = self.parameterAsExtentCrs(parameters, "EXTENT", context)
            rect = self.parameterAsExtent(parameters, "EXTENT", context, crs if crs.isValid() else layer.crs())
            bbox, bbox_crs = adapter.bbox(rect, crs if crs.isValid() else layer.crs())
        gdf = call(lambda: segment_raster(source, segmenter=segmenter, options=opts, bbox=bbox, bbox_crs=bbox_crs,
                                          progress=progress(feedback)), feedback)
        out = fields()  # the output is made only once there is a result: a cancelled run leaves no file
        sink, dest = self.parameterAsSink(parameters, "OUTPUT", context, out, QgsWkbTypes.MultiPolygon, layer.crs())
        write(sink, adapter.features(gdf, out), feedback)
        return {"OUTPUT": dest}
