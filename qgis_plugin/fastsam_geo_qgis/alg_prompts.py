"""Processing: "Segment with prompts": the objects that points, polygons (boxes) or a text select."""

from __future__ import annotations

from qgis.core import (
    QgsField,
    QgsFields,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterString,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QVariant

from fastsam_geo import segment_raster

from . import adapter
from .alg_common import FastSAMAlgorithm, call, errors, progress, write


def fields() -> QgsFields:
    out = QgsFields()
    for name, kind in (("prompt_id", QVariant.Int), ("prompt_type", QVariant.String), ("found", QVariant.Bool),
                       ("score", QVariant.Double), ("area_m2", QVariant.Double), ("prompt", QVariant.String)):
        out.append(QgsField(name, kind))
    return out


class SegmentPromptsAlgorithm(FastSAMAlgorithm):
    def name(self) -> str:
        return "segment_prompts"

    def displayName(self) -> str:
        return "Segment with prompts"

    def shortHelpString(self) -> str:
        return ("The objects selected by prompts in any CRS: each point picks the object containing it (label "
                "field: 1 object, 0 background; points sharing a group value select one object together), each "
                "polygon's bounding box picks the best matching object, a text (needs the [text] extra and CLIP "
                "weights) the most similar object. One row per prompt object, in input order; a prompt that "
                "selects nothing keeps its row with no geometry (NULL), NULL score and found = false. Only the "
                "tiles the prompts touch are segmented.")

    def initAlgorithm(self, config=None):
        self.add_raster_params()
        self.addParameter(QgsProcessingParameterFeatureSource(
            "POINTS", "Point prompts", [QgsProcessing.TypeVectorPoint], optional=True))
        self.addParameter(QgsProcessingParameterField(
            "LABEL_FIELD", "Label field (1 object, 0 background; default: a field named label)",
            parentLayerParameterName="POINTS", type=QgsProcessingParameterField.Any, optional=True))
        self.addParameter(QgsProcessingParameterField(
            "GROUP_FIELD", "Group field (points of a group select one object)", parentLayerParameterName="POINTS",
            optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "BOXES", "Box prompts (polygon bounding boxes)", [QgsProcessing.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterString("TEXT", "Text prompt", optional=True))
        self.addParameter(QgsProcessingParameterFile("CLIP", "CLIP ViT-B-32 weights (for text)", optional=True))
        self.addParameter(QgsProcessingParameterFeatureSink("OUTPUT", "Selected objects",
                                                            QgsProcessing.TypeVectorPolygon))

    def processAlgorithm(self, parameters, context, feedback):
        layer, source, segmenter, opts = self.raster(parameters, context)
        text = self.parameterAsString(parameters, "TEXT", context).strip()
        with errors():
            prompts = adapter.source_prompts(
                self.parameterAsSource(parameters, "POINTS", context),
                self.parameterAsSource(parameters, "BOXES", context),
                label_field=self.parameterAsString(parameters, "LABEL_FIELD", context),
                group_field=self.parameterAsString(parameters, "GROUP_FIELD", context))
            if text:
                prompts.append(adapter.text_prompt(text))
        if not prompts:
            raise QgsProcessingException("give point prompts, box prompts or a text")
        clip = adapter.clip_spec(self.parameterAsFile(parameters, "CLIP", context))
        gdf = call(lambda: segment_raster(
            source, segmenter=segmenter, options=opts, prompts=prompts, text_embedder=clip,
            progress=progress(feedback)), feedback)
        out = fields()  # made only once there is a result: a cancelled run leaves no file
        sink, dest = self.parameterAsSink(parameters, "OUTPUT", context, out, QgsWkbTypes.MultiPolygon, layer.crs())
        write(sink, adapter.features(gdf, out, prompts=prompts), feedback)
        return {"OUTPUT": dest}
