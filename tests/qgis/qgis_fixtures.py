"""Fixtures and helpers of the QGIS suite: a sized canvas in another CRS than the raster's, a
synthetic GeoTIFF with known buildings, the plugin started through ``classFactory``, synthetic
mouse and key events, and waiting for tasks."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import shapely
from qgis.core import (
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsPointXY,
    QgsProject,
    QgsRasterLayer,
    QgsSettings,
)
from qgis.gui import QgsMapMouseEvent
from qgis.PyQt.QtCore import QEvent, QPoint, Qt
from qgis.PyQt.QtGui import QKeyEvent

from fastsam_geo.synthetic import ColourSegmenter, make_scene, write_scene

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ARTIFACTS = HERE / "artifacts"
CANVAS_CRS = "EPSG:3857"
RASTER_CRS = "EPSG:32633"
COLOUR = "fastsam_geo.synthetic:ColourSegmenter"
PERTURBED = "fastsam_geo.synthetic:PerturbedSegmenter"
SLOW = "qgis_fixtures:SlowSegmenter"
COUNTING = "qgis_fixtures:CountingSegmenter"


class SlowSegmenter(ColourSegmenter):
    """The true masks, 0.1 s per tile: long enough to cancel a run midway."""

    def __call__(self, images):
        time.sleep(0.1 * len(images))
        return super().__call__(images)


class CountingSegmenter(ColourSegmenter):
    """The true masks, 0.02 s per tile; counts instances and the most calls that ever ran at once
    (class-wide: ``reset()`` first)."""

    _lock = threading.Lock()
    instances = active = max_active = 0

    @classmethod
    def reset(cls) -> None:
        cls.instances = cls.active = cls.max_active = 0

    def __init__(self):
        super().__init__()
        with self._lock:
            type(self).instances += 1

    def __call__(self, images):
        cls = type(self)
        with cls._lock:
            cls.active += 1
            cls.max_active = max(cls.max_active, cls.active)
        try:
            time.sleep(0.02 * len(images))
            return super().__call__(images)
        finally:
            with cls._lock:
                cls.active -= 1


class Scene:
    def __init__(self, path: Path, scene):
        self.path, self.scene = str(path), scene
        self.truth = scene.truth_map()  # buildings in the raster's CRS

    def interior(self, k: int) -> tuple[float, float]:
        p = self.truth[k].buffer(-1.0).representative_point()  # 1 m inside: clear of the outline
        return p.x, p.y


@pytest.fixture(scope="session")
def scene(tmp_path_factory) -> Scene:
    """1024 x 768 px at 0.3 m in UTM 33N (EPSG:32633), ~35 buildings in known places."""
    s = make_scene(1024, 768, seed=7, crs=RASTER_CRS, origin=(500000.0, 4500000.0), res=0.3)
    path = tmp_path_factory.mktemp("scene") / "scene.tif"
    write_scene(s, path)
    return Scene(path, s)


@pytest.fixture(scope="session")
def coarse_scene(tmp_path_factory) -> Scene:
    """512 x 384 px at 0.6 m: 4x coarser than the bundled model's card (0.147 m/px), 8x finer than 5 m/px."""
    s = make_scene(512, 384, seed=3, crs=RASTER_CRS, res=0.6)
    path = tmp_path_factory.mktemp("coarse") / "coarse.tif"
    write_scene(s, path)
    return Scene(path, s)


@pytest.fixture(scope="session")
def big_scene(tmp_path_factory) -> Scene:
    s = make_scene(2048, 2048, seed=11, crs=RASTER_CRS)
    path = tmp_path_factory.mktemp("big") / "big.tif"
    write_scene(s, path)
    return Scene(path, s)


@pytest.fixture(scope="session")
def canvas(qgis_app, qgis_canvas, qgis_parent):
    """The canvas shown at 800 x 600 px (never shown, it stays ~100 x 30 and clicks land elsewhere),
    in Web Mercator: not the raster's CRS, so every click and box is reprojected."""
    qgis_parent.resize(1000, 800)
    qgis_parent.show()
    qgis_canvas.resize(800, 600)
    qgis_canvas.show()
    QgsApplication.processEvents()
    qgis_canvas.setDestinationCrs(QgsCoordinateReferenceSystem(CANVAS_CRS))
    assert qgis_canvas.mapSettings().outputSize().width() > 700  # 798: the frame takes 1 px a side
    return qgis_canvas


def set_settings(model: str = COLOUR, tile_size: int = 256, overlap: int = 32, min_area: int = 16) -> None:
    s = QgsSettings()
    for key, value in (("model", model), ("device", "cpu"), ("tile_size", tile_size), ("overlap", overlap),
                       ("min_area", min_area), ("clip", ""), ("gsd", "auto")):
        s.setValue(f"fastsam_geo/{key}", value)


@pytest.fixture
def plugin(qgis_iface, canvas, qgis_processing):
    """The plugin as QGIS starts it: ``classFactory(iface)`` then ``initGui``; unloaded after."""
    import fastsam_geo_qgis

    set_settings()
    qgis_iface.messageBar().clear_messages()
    p = fastsam_geo_qgis.classFactory(qgis_iface)
    assert type(p).__name__ == "FastSAMGeoPlugin", getattr(p, "message", p)
    p.initGui()
    yield p
    p.unload()
    wait_idle()
    canvas.unsetMapTool(canvas.mapTool())
    QgsProject.instance().removeAllMapLayers()


def add_raster(plugin, canvas, scene: Scene, extent=None) -> QgsRasterLayer:
    """Add the scene as a layer, choose it in the dock, and show it (or ``extent``) on the canvas."""
    layer = QgsRasterLayer(scene.path, Path(scene.path).stem)
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    plugin.dock.layer_combo.setLayer(layer)
    tr = QgsCoordinateTransform(layer.crs(), canvas.mapSettings().destinationCrs(), QgsProject.instance())
    canvas.setExtent(extent if extent is not None else tr.transformBoundingBox(layer.extent()))
    QgsApplication.processEvents()
    return layer


def wait(plugin, task, timeout: float = 60.0) -> None:
    """Run the event loop until the plugin has handled ``task``'s end."""
    assert task is not None, "no task was started"
    end = time.monotonic() + timeout
    while task in plugin.tasks:
        QgsApplication.processEvents()
        time.sleep(0.005)
        if time.monotonic() > end:
            raise TimeoutError(f"task {task.description()} still running after {timeout} s")
    QgsApplication.processEvents()


def wait_idle(timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while QgsApplication.taskManager().countActiveTasks() and time.monotonic() < end:
        QgsApplication.processEvents()
        time.sleep(0.005)


def device_point(canvas, x: float, y: float, crs: str = RASTER_CRS) -> QPoint:
    """Where map point ``(x, y)`` in ``crs`` lies on the canvas, in widget pixels."""
    tr = QgsCoordinateTransform(QgsCoordinateReferenceSystem(crs), canvas.mapSettings().destinationCrs(),
                                QgsProject.instance())
    d = canvas.getCoordinateTransform().transform(tr.transform(QgsPointXY(x, y)))
    return QPoint(round(d.x()), round(d.y()))


def mouse(canvas, kind, pos: QPoint, button=Qt.LeftButton) -> QgsMapMouseEvent:
    return QgsMapMouseEvent(canvas, kind, pos, button, button, Qt.NoModifier)


def click(tool, canvas, pos: QPoint, button=Qt.LeftButton) -> None:
    tool.canvasPressEvent(mouse(canvas, QEvent.MouseButtonPress, pos, button))
    tool.canvasReleaseEvent(mouse(canvas, QEvent.MouseButtonRelease, pos, button))


def key(tool, k) -> None:
    tool.keyPressEvent(QKeyEvent(QEvent.KeyPress, k, Qt.NoModifier))


def shapes(layer, expression: str | None = None) -> list:
    """The layer's geometries as shapely (in the layer's CRS), optionally filtered."""
    from qgis.core import QgsFeatureRequest

    req = QgsFeatureRequest() if expression is None else QgsFeatureRequest().setFilterExpression(expression)
    return [shapely.from_wkb(bytes(f.geometry().asWkb())) for f in layer.getFeatures(req)]


def iou(a, b) -> float:
    return float(shapely.area(shapely.intersection(a, b)) / shapely.area(shapely.union(a, b)))


def best_match(geom, truth: list) -> tuple[int, float]:
    ious = np.array([iou(geom, t) if geom.intersects(t) else 0.0 for t in truth])
    k = int(np.argmax(ious))
    return k, float(ious[k])
