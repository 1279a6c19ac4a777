"""Processing: "Evaluate against footprints": precision, recall and F1 of polygons against reference ones."""

from __future__ import annotations

from qgis.core import (
    QgsFeature,
    QgsField,
    QgsFields,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingOutputNumber,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QVariant

from fastsam_geo import evaluate, evaluate_by_size
from fastsam_geo.api import SIZE_CLASSES_M2

from . import adapter
from .alg_common import errors, write
from .tasks import in_python_thread

SCORES = ("TP", "FP", "FN", "PRECISION", "RECALL", "F1", "MEAN_IOU")


class EvaluateAlgorithm(QgsProcessingAlgorithm):
    def createInstance(self):
        return type(self)()

    def name(self) -> str:
        return "evaluate"

    def displayName(self) -> str:
        return "Evaluate against footprints"

    def shortHelpString(self) -> str:
        return ("Matches predicted polygons to reference footprints one to one, greedily by IoU (the SpaceNet "
                "rule), and reports TP, FP, FN, precision, recall, F1 and mean IoU. The output is the predictions "
                "with matched (true/false), iou and ref_index (row of the matched reference, -1 if none). "
                "Predictions are reprojected to the reference CRS. Optionally, the same scores per building size "
                "class (ground square metres, whatever the CRS): a match and a miss count in the reference's "
                "class, an unmatched prediction in its own.")

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterFeatureSource(
            "PREDICTIONS", "Predicted polygons", [QgsProcessing.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "REFERENCE", "Reference footprints", [QgsProcessing.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterNumber(
            "IOU", "IoU threshold", QgsProcessingParameterNumber.Double, 0.5, minValue=0.01, maxValue=1.0))
        self.addParameter(QgsProcessingParameterFeatureSink(
            "OUTPUT", "Predictions with matches", QgsProcessing.TypeVectorPolygon))
        self.addParameter(QgsProcessingParameterString(
            "SIZE_CLASSES", "Size classes for the table by size (ground m², ascending)",
            ",".join(f"{v:g}" for v in SIZE_CLASSES_M2)))
        self.addParameter(QgsProcessingParameterFeatureSink(
            "BY_SIZE", "Scores by building size", QgsProcessing.TypeVector, optional=True, createByDefault=False))
        for key in SCORES:
            self.addOutput(QgsProcessingOutputNumber(key, key.replace("_", " ").lower()))

    def processAlgorithm(self, parameters, context, feedback):
        pred_src = self.parameterAsSource(parameters, "PREDICTIONS", context)
        ref_src = self.parameterAsSource(parameters, "REFERENCE", context)
        preds = list(pred_src.getFeatures())
        with errors():
            refs, iou = list(ref_src.getFeatures()), self.parameterAsDouble(parameters, "IOU", context)
            pcrs, rcrs = pred_src.sourceCrs(), ref_src.sourceCrs()
            res = in_python_thread(lambda: evaluate(adapter.frame(preds, pcrs), adapter.frame(refs, rcrs), iou=iou))
        added = (("matched", QVariant.Bool), ("iou", QVariant.Double), ("ref_index", QVariant.Int))
        out, kept = QgsFields(), []  # a previous evaluation's columns are replaced, not kept stale
        for k, fld in enumerate(pred_src.fields()):
            if fld.name().lower() not in {name for name, _ in added}:
                out.append(fld)
                kept.append(k)
        for name, kind in added:
            out.append(QgsField(name, kind))
        sink, dest = self.parameterAsSink(parameters, "OUTPUT", context, out, pred_src.wkbType(),
                                          pred_src.sourceCrs())
        match = {p: (g, v) for p, g, v in res.pairs}
        feats = []
        for i, f in enumerate(preds):
            g, v = match.get(i, (-1, 0.0))
            nf = QgsFeature(out)
            nf.setGeometry(f.geometry())
            attrs = f.attributes()
            nf.setAttributes([*(attrs[k] for k in kept), g >= 0, float(v), int(g)])
            feats.append(nf)
        write(sink, feats, feedback)
        table_dest = self._by_size(parameters, context, feedback, preds, pcrs, refs, rcrs, iou)
        scores = dict(TP=res.tp, FP=res.fp, FN=res.fn, PRECISION=res.precision, RECALL=res.recall, F1=res.f1,
                      MEAN_IOU=res.mean_iou)
        feedback.pushInfo(", ".join(f"{k.lower()} {v:.3f}" if isinstance(v, float) else f"{k.lower()} {v}"
                                    for k, v in scores.items()))
        return {"OUTPUT": dest, **scores, **({"BY_SIZE": table_dest} if table_dest else {})}

    def _by_size(self, parameters, context, feedback, preds, pcrs, refs, rcrs, iou) -> str | None:
        """The table by size class, when its output was asked for: one row per class, no geometry."""
        if parameters.get("BY_SIZE") is None:
            return None
        with errors():
            sizes = self.parameterAsString(parameters, "SIZE_CLASSES", context)
            table = in_python_thread(lambda: evaluate_by_size(adapter.frame(preds, pcrs), adapter.frame(refs, rcrs),
                                                              sizes=sizes, iou=iou))
        fields = QgsFields()
        for name in table.columns:
            fields.append(QgsField(name, QVariant.Int if name in ("tp", "fp", "fn") else QVariant.Double))
        sink, dest = self.parameterAsSink(parameters, "BY_SIZE", context, fields, QgsWkbTypes.NoGeometry)
        if sink is None:
            return None
        rows = []
        for rec in table.itertuples(index=False):
            f = QgsFeature(fields)
            f.setAttributes([int(v) if name in ("tp", "fp", "fn") else None if v == float("inf") else float(v)
                             for name, v in zip(table.columns, rec)])  # the last class has no upper bound: NULL
            rows.append(f)
        write(sink, rows, feedback)
        return dest
