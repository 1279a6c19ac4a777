"""A screenshot of the map canvas (EPSG:3857) with the result layer over the raster (EPSG:32633):
the outlines must lie on the buildings' edges, not beside them. Saved to tests/qgis/artifacts/."""

from __future__ import annotations

import numpy as np
import shapely
from qgis.core import QgsCoordinateTransform, QgsMapRendererParallelJob, QgsPointXY, QgsProject, QgsRectangle
from qgis_fixtures import ARTIFACTS, add_raster, wait


def image_array(img) -> np.ndarray:
    img = img.convertToFormat(img.Format_RGB32)
    ptr = img.constBits()
    ptr.setsize(img.sizeInBytes())
    bgra = np.frombuffer(ptr, np.uint8).reshape(img.height(), img.bytesPerLine() // 4, 4)[:, :img.width()]
    return bgra[..., [2, 1, 0]].copy()


def outline_hits(rgb: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Whether the outline's yellow is within 1 px of each ``(x, y)`` image pixel."""
    yellow = (rgb[..., 0] > 190) & (rgb[..., 1] > 170) & (rgb[..., 2] < 100)
    h, w = yellow.shape
    out = []
    for x, y in np.round(pixels).astype(int):
        y0, y1, x0, x1 = max(0, y - 1), min(h, y + 2), max(0, x - 1), min(w, x + 2)
        out.append(bool(yellow[y0:y1, x0:x1].any()) if y1 > y0 and x1 > x0 else False)
    return np.array(out)


def test_canvas_screenshot_shows_outlines_on_the_buildings(plugin, canvas, scene):
    layer = add_raster(plugin, canvas, scene)
    wait(plugin, plugin.segment())
    result = plugin.results.layer(scene.path)
    assert result.featureCount() == len(scene.truth)
    t = scene.scene.transform
    view = QgsRectangle(t.c + 150 * t.a, t.f + 560 * t.e, t.c + 750 * t.a, t.f + 110 * t.e)  # raster px
    to_canvas = QgsCoordinateTransform(layer.crs(), canvas.mapSettings().destinationCrs(), QgsProject.instance())
    canvas.setExtent(to_canvas.transformBoundingBox(view))
    canvas.setLayers([result, layer])
    settings = canvas.mapSettings()
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    img = job.renderedImage()
    ARTIFACTS.mkdir(exist_ok=True)
    assert img.save(str(ARTIFACTS / "canvas.png"))
    rgb = image_array(img)
    m2p = settings.mapToPixel()

    def to_pixels(line) -> np.ndarray:
        pts = [shapely.line_interpolate_point(line, d) for d in np.linspace(0, line.length, 48, endpoint=False)]
        return np.array([[q.x(), q.y()] for q in (m2p.transform(to_canvas.transform(QgsPointXY(p.x, p.y)))
                                                   for p in pts)])

    area = shapely.box(t.c + 160 * t.a, t.f + 550 * t.e, t.c + 740 * t.a, t.f + 120 * t.e)
    on, inside, outside = [], [], []
    for poly in scene.truth:
        if not area.contains(poly):
            continue
        on.append(outline_hits(rgb, to_pixels(poly.exterior)).mean())
        shrunk = poly.buffer(-2.0, join_style="mitre")  # 2 m (~10 screen px) inside the edge
        if not shrunk.is_empty and shrunk.geom_type == "Polygon":
            inside.append(outline_hits(rgb, to_pixels(shrunk.exterior)).mean())
        outside.append(outline_hits(rgb, to_pixels(poly.buffer(2.0, join_style="mitre").exterior)).mean())
    assert len(on) >= 5
    assert np.mean(on) > 0.9, f"outline found on only {np.mean(on):.0%} of the building edges"
    assert np.mean(inside) < 0.1 and np.mean(outside) < 0.1, "outlines drawn beside the buildings"
