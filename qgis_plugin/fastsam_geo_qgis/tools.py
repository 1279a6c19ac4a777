"""Map tools: clicked points (left: foreground, right: background) and a dragged box.

They only collect map coordinates in the canvas CRS and emit them; the plugin turns them into prompts.
"""

from __future__ import annotations

from qgis.core import QgsGeometry, QgsPointXY, QgsRectangle, QgsWkbTypes
from qgis.gui import QgsMapTool, QgsRubberBand
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtGui import QColor

FOREGROUND = QColor(0, 200, 0)
BACKGROUND = QColor(220, 0, 0)


class PointTool(QgsMapTool):
    """Left click adds a foreground point, right click a background point; Enter runs, Esc clears.

    ``run_requested(points, crs)``: ``points`` is a list of ``(QgsPointXY, label)`` in ``crs``
    (the canvas CRS when they were clicked).
    """

    run_requested = pyqtSignal(list, object)
    points_changed = pyqtSignal(int)

    def __init__(self, canvas):
        super().__init__(canvas)
        self.points: list[tuple[QgsPointXY, int]] = []
        self.crs = canvas.mapSettings().destinationCrs()
        self.markers = {1: self._band(FOREGROUND), 0: self._band(BACKGROUND)}
        self.setCursor(Qt.CrossCursor)

    def _band(self, colour: QColor) -> QgsRubberBand:
        band = QgsRubberBand(self.canvas(), QgsWkbTypes.PointGeometry)
        band.setColor(colour)
        band.setIcon(QgsRubberBand.ICON_CIRCLE)
        band.setIconSize(10)
        band.setWidth(2)
        return band

    def canvasReleaseEvent(self, event):
        if event.button() not in (Qt.LeftButton, Qt.RightButton):
            return
        crs = self.canvas().mapSettings().destinationCrs()
        if self.points and crs != self.crs:  # the canvas was reprojected between clicks: start again
            self.clear()
        self.crs = crs
        label = 1 if event.button() == Qt.LeftButton else 0
        point = QgsPointXY(event.mapPoint())
        self.points.append((point, label))
        self.markers[label].addPoint(point)
        self.points_changed.emit(len(self.points))

    def keyPressEvent(self, event):
        if event.key() in (Qt.Key_Return, Qt.Key_Enter):
            self.run()
            event.accept()
        elif event.key() == Qt.Key_Escape:
            self.clear()
            event.accept()
        else:
            event.ignore()

    def run(self) -> bool:
        """Emit the collected points (if any has label 1) and clear them."""
        if not any(label == 1 for _, label in self.points):
            return False
        points, crs = list(self.points), self.crs
        self.clear()
        self.run_requested.emit(points, crs)
        return True

    def clear(self) -> None:
        self.points.clear()
        for band in self.markers.values():
            band.reset(QgsWkbTypes.PointGeometry)
        self.points_changed.emit(0)

    def deactivate(self):
        self.clear()
        super().deactivate()

    def remove(self) -> None:
        for band in self.markers.values():
            self.canvas().scene().removeItem(band)
        self.markers.clear()


class BoxTool(QgsMapTool):
    """Drag a rectangle; ``box_drawn(QgsRectangle, crs)`` on release (canvas CRS)."""

    box_drawn = pyqtSignal(QgsRectangle, object)

    def __init__(self, canvas):
        super().__init__(canvas)
        self.start: QgsPointXY | None = None
        self.band = QgsRubberBand(canvas, QgsWkbTypes.PolygonGeometry)
        self.band.setColor(QColor(255, 230, 0, 200))
        self.band.setFillColor(QColor(255, 230, 0, 40))
        self.band.setWidth(2)
        self.setCursor(Qt.CrossCursor)

    def _rect(self, end: QgsPointXY) -> QgsRectangle:
        return QgsRectangle(self.start, end)

    def canvasPressEvent(self, event):
        if event.button() == Qt.LeftButton:
            self.start = QgsPointXY(event.mapPoint())

    def canvasMoveEvent(self, event):
        if self.start is not None:
            self.band.setToGeometry(QgsGeometry.fromRect(self._rect(QgsPointXY(event.mapPoint()))), None)

    def canvasReleaseEvent(self, event):
        if self.start is None or event.button() != Qt.LeftButton:
            return
        rect = self._rect(QgsPointXY(event.mapPoint()))
        self.start = None
        self.band.reset(QgsWkbTypes.PolygonGeometry)
        if rect.width() > 0 and rect.height() > 0:
            self.box_drawn.emit(rect, self.canvas().mapSettings().destinationCrs())

    def deactivate(self):
        self.start = None
        self.band.reset(QgsWkbTypes.PolygonGeometry)
        super().deactivate()

    def remove(self) -> None:
        self.canvas().scene().removeItem(self.band)

