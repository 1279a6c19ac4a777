"""fastsam-geo's output files open in this QGIS as they are: valid, one MultiPolygon layer named after
the file, the CRS and columns written, and no message in QGIS's log (GDAL warnings land there)."""

from __future__ import annotations

import pytest
from qgis.core import QgsApplication, QgsVectorLayer, QgsWkbTypes
from qgis_fixtures import COLOUR

from fastsam_geo import segment_raster


@pytest.mark.parametrize("ext", [".gpkg", ".geojson", ".fgb"])
def test_outputs_open_cleanly_in_qgis(scene, tmp_path, ext):
    out = tmp_path / f"buildings{ext}"
    gdf = segment_raster(scene.path, segmenter=COLOUR, tile_size=256, overlap=32, output=out)
    messages = []
    log = QgsApplication.messageLog()

    def record(message, tag, level):
        messages.append((tag, message))

    log.messageReceived.connect(record)
    try:
        layer = QgsVectorLayer(str(out), "x", "ogr")
        assert layer.isValid(), messages
        assert layer.featureCount() == len(gdf) > 0
        assert layer.wkbType() == QgsWkbTypes.MultiPolygon
        want = "EPSG:4326" if ext == ".geojson" else scene.scene.crs.to_string()
        assert layer.crs().authid() == want
        assert {"score", "quality", "area_m2", "source", "model"} <= set(layer.fields().names())
        if ext != ".geojson":  # GeoJSON has no layer names QGIS shows; the others are named after the file
            assert layer.dataProvider().subLayers()[0].split("!!::!!")[1] == "buildings"
    finally:
        log.messageReceived.disconnect(record)
    assert not messages, messages
