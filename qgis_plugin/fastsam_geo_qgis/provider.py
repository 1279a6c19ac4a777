"""The Processing provider ``fastsam_geo``: Model Builder, batch mode and ``qgis_process`` see these."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .alg_evaluate import EvaluateAlgorithm
from .alg_prompts import SegmentPromptsAlgorithm
from .alg_segment import SegmentRasterAlgorithm


class Provider(QgsProcessingProvider):
    def id(self) -> str:
        return "fastsam_geo"

    def name(self) -> str:
        return "FastSAM Geo"

    def longName(self) -> str:
        return "FastSAM Geo: segment rasters into georeferenced polygons"

    def icon(self) -> QIcon:
        return QIcon(str(Path(__file__).with_name("icon.svg")))

    def loadAlgorithms(self) -> None:
        for alg in (SegmentRasterAlgorithm(), SegmentPromptsAlgorithm(), EvaluateAlgorithm()):
            self.addAlgorithm(alg)
