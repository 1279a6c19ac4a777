"""What the Processing algorithms share: model and option parameters, progress and cancel, errors, warnings."""

from __future__ import annotations

from qgis.core import (
    QgsFeatureSink,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from fastsam_geo.errors import Cancelled, FastSAMGeoError

from . import adapter
from .tasks import in_python_thread

DEVICES = ("auto", "cpu", "cuda", "mps")


class FastSAMAlgorithm(QgsProcessingAlgorithm):
    """Base: ``INPUT`` raster, ``MODEL``, ``DEVICE``, ``TILE_SIZE``, ``OVERLAP``, ``MIN_AREA``, ``GSD``."""

    def createInstance(self):
        return type(self)()

    def add_raster_params(self) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Raster (GeoTIFF, COG, VRT...)"))
        self.addParameter(QgsProcessingParameterString(
            "MODEL", "Model: buildings-nano (bundled), FastSAM-s.pt, FastSAM-x.pt, a .pt path or module:factory",
            defaultValue=adapter.BUNDLED))
        advanced = [
            QgsProcessingParameterEnum("DEVICE", "Device", options=list(DEVICES), defaultValue=0),
            QgsProcessingParameterNumber("TILE_SIZE", "Tile size (px)", QgsProcessingParameterNumber.Integer,
                                         1024, minValue=64),
            QgsProcessingParameterNumber("OVERLAP", "Tile overlap (px)", QgsProcessingParameterNumber.Integer,
                                         128, minValue=0),
            QgsProcessingParameterNumber("MIN_AREA", "Minimum object area (px)", QgsProcessingParameterNumber.Integer,
                                         16, minValue=0),
            QgsProcessingParameterString(
                "GSD", "Resolution (GSD): auto (the model card's m/px), native (tiles as given) or the model's m/px",
                defaultValue="auto", optional=True),
        ]
        for p in advanced:
            p.setFlags(p.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(p)

    def raster(self, parameters, context):
        """``(layer, source path, segmenter spec, Options)`` (a QgsProcessingException when one is invalid)."""
        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        with errors():
            opts = adapter.options(
                tile_size=self.parameterAsInt(parameters, "TILE_SIZE", context),
                overlap=self.parameterAsInt(parameters, "OVERLAP", context),
                device=DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)],
                min_area=self.parameterAsInt(parameters, "MIN_AREA", context),
                gsd=self.parameterAsString(parameters, "GSD", context))
            return layer, adapter.raster_source(layer), adapter.model_spec(
                self.parameterAsString(parameters, "MODEL", context)), opts


def call(fn, feedback):
    """``fn()`` (an API call) in a Python thread, its errors as QgsProcessingException; the fastsam-geo
    warnings it raised (a raster far from the model's GSD, nothing found) go to ``feedback``, also when it fails."""
    warned: list = []
    try:
        with errors():
            return in_python_thread(fn, warned)
    finally:
        for w in warned:
            feedback.pushWarning(str(w.message))


def progress(feedback):
    """A fastsam-geo progress callback reporting to ``feedback`` and returning False once cancelled."""
    def report(p) -> bool:
        if p.total:
            feedback.setProgress(100.0 * p.done / p.total)
        return not feedback.isCanceled()

    return report


class errors:
    """fastsam-geo errors and cancellation as QgsProcessingException (one line, no traceback)."""

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None:
            return False
        if isinstance(exc, Cancelled):
            raise QgsProcessingException("cancelled; nothing was written") from None
        if isinstance(exc, FastSAMGeoError):
            raise QgsProcessingException(str(exc)) from None
        if isinstance(exc, ImportError):
            from . import torch_hint

            raise QgsProcessingException(f"{exc}. {torch_hint() or ''}") from None
        return False


def write(sink, features, feedback) -> None:
    if not sink.addFeatures(features, QgsFeatureSink.FastInsert):
        raise QgsProcessingException(f"could not write the output: {sink.lastError()}")
    feedback.pushInfo(f"{len(features)} feature(s) written")
