"""The plugin: toolbar, menu, dock and map tools wired to tasks; results to the result layers."""

from __future__ import annotations

from pathlib import Path

from qgis.core import Qgis, QgsApplication
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from fastsam_geo.errors import EmptyResultWarning, FastSAMGeoError

from . import adapter, torch_hint
from .dock import Dock
from .provider import Provider
from .results import ResultLayers
from .tasks import SegmentTask, Sessions
from .tools import BoxTool, PointTool

ICON = Path(__file__).with_name("icon.svg")
MENU = "&FastSAM Geo"
ACTIONS = (  # key, tooltip, short text (dock buttons), theme icon, checkable
    ("dock", "FastSAM Geo panel", "Panel", None, True),
    ("segment_layer", "Segment everything (whole layer)", "Segment layer", "/mActionZoomToLayer.svg", False),
    ("segment_view", "Segment everything (map view)", "Segment view", "/mActionZoomActual.svg", False),
    ("points", "Point prompts (left: object, right: background)", "Points", "/mActionCapturePoint.svg", True),
    ("run_points", "Run point prompts (Enter)", "Run points", "/mActionStart.svg", False),
    ("box", "Box prompt (drag a rectangle)", "Box", "/mActionSelectRectangle.svg", True),
    ("undo", "Undo last result", "Undo", "/mActionUndo.svg", False),
)


class FastSAMGeoPlugin:
    """What ``classFactory`` returns. ``initProcessing`` alone serves ``qgis_process``."""

    def __init__(self, iface):
        self.iface = iface
        self.provider: Provider | None = None
        self.sessions = Sessions()
        self.tasks: list[SegmentTask] = []
        self.last_task: SegmentTask | None = None
        self.results: ResultLayers | None = None
        self.dock: Dock | None = None
        self.toolbar = None
        self.actions: dict[str, QAction] = {}

    # -- life cycle -------------------------------------------------------------------------------

    def initProcessing(self):
        if self.provider is None:
            self.provider = Provider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):
        self.initProcessing()
        window, canvas = self.iface.mainWindow(), self.iface.mapCanvas()
        self.results = ResultLayers()
        for key, text, short, theme, checkable in ACTIONS:
            icon = QIcon(str(ICON)) if theme is None else QgsApplication.getThemeIcon(theme)
            action = QAction(icon, text, window)
            action.setIconText(short)
            action.setToolTip(text)
            action.setCheckable(checkable)
            action.setObjectName(f"fastsam_geo_{key}")
            self.actions[key] = action
        a = self.actions
        self.point_tool, self.box_tool = PointTool(canvas), BoxTool(canvas)
        self.point_tool.setAction(a["points"])
        self.box_tool.setAction(a["box"])
        self.dock = Dock(window, a)
        self.iface.addDockWidget(Qt.RightDockWidgetArea, self.dock)
        self.toolbar = self.iface.addToolBar("FastSAM Geo")
        self.toolbar.setObjectName("FastSAMGeoToolbar")
        for key, *_ in ACTIONS:
            self.toolbar.addAction(a[key])
            self.iface.addPluginToMenu(MENU, a[key])

        a["dock"].setChecked(True)
        a["dock"].toggled.connect(self.dock.setVisible)
        self.dock.visibilityChanged.connect(a["dock"].setChecked)
        a["segment_layer"].triggered.connect(lambda: self.segment())
        a["segment_view"].triggered.connect(lambda: self.segment(view=True))
        a["points"].triggered.connect(lambda: canvas.setMapTool(self.point_tool))
        a["box"].triggered.connect(lambda: canvas.setMapTool(self.box_tool))
        a["run_points"].triggered.connect(self.point_tool.run)
        a["undo"].triggered.connect(self.undo)
        self.point_tool.run_requested.connect(self.run_points)
        self.box_tool.box_drawn.connect(self.run_box)
        self.dock.text_requested.connect(self.run_text)
        self.dock.cancel_requested.connect(self.cancel)
        self.dock.save_requested.connect(self.save)
        hint = torch_hint()
        if hint:
            self._message(hint, Qgis.Warning)

    def unload(self):
        self.cancel()
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
        self.sessions.clear()
        if self.dock is None:  # Processing only (qgis_process), or initGui never ran
            return
        canvas = self.iface.mapCanvas()
        for tool in (self.point_tool, self.box_tool):
            if canvas.mapTool() is tool:
                canvas.unsetMapTool(tool)
            tool.remove()
        for action in self.actions.values():
            self.iface.removePluginMenu(MENU, action)
        self.iface.removeDockWidget(self.dock)
        self.dock.deleteLater()
        self.toolbar.deleteLater()
        self.dock = self.toolbar = None
        self.actions.clear()

    # -- runs -------------------------------------------------------------------------------------

    def segment(self, view: bool = False) -> SegmentTask | None:
        """Every object of the layer, or of the current map view (tiled on the raster's own grid)."""
        if not view:
            return self._start("whole layer", lambda sr, p: sr.segment(progress=p), extra={"prompt": "everything"})
        canvas = self.iface.mapCanvas()
        area = self._checked(lambda: adapter.bbox(canvas.extent(), canvas.mapSettings().destinationCrs()))
        if area is None:
            return None
        bbox, crs = area
        return self._start("map view", lambda sr, p: sr.segment(bbox=bbox, bbox_crs=crs, progress=p),
                           extra={"prompt": "everything in view"})

    def run_points(self, points: list, crs) -> SegmentTask | None:
        return self._prompt("points", lambda: adapter.point_prompts(points, crs))

    def run_box(self, rect, crs) -> SegmentTask | None:
        return self._prompt("box", lambda: [adapter.box_prompt(rect, crs)])

    def run_text(self, text: str) -> SegmentTask | None:
        if not text.strip():
            return None
        return self._prompt(f"text {text!r}", lambda: [adapter.text_prompt(text)], text=True)

    def _prompt(self, what: str, make, text: bool = False) -> SegmentTask | None:
        prompts = self._checked(make)
        if prompts is None:
            return None
        return self._start(what, lambda sr, p: sr.prompt(prompts, progress=p), prompts=prompts, text=text)

    def _checked(self, make):
        """``make()``, or None after a message when a value is invalid (a bad CRS, an empty text)."""
        try:
            return make()
        except (FastSAMGeoError, ValueError) as exc:
            self._message(str(exc), Qgis.Warning)
            return None

    def _start(self, what: str, call, *, extra=None, prompts=None, text: bool = False) -> SegmentTask | None:
        job = self._checked(lambda: self.dock.job(text))
        if job is None:
            return None
        layer = self.dock.layer()
        task = SegmentTask(f"FastSAM: {layer.name()} ({what})", self.sessions, job, call, self.results.fields,
                           self._done, extra=extra, prompts=prompts)
        task.layer_name, task.layer_crs = layer.name(), layer.crs()
        task.progressChanged.connect(lambda v: self.dock and self.dock.progress.setValue(int(v)))
        self.tasks.append(task)
        self.last_task = task
        self.dock.set_running(True, f"{what}: running…")
        QgsApplication.taskManager().addTask(task)
        return task

    def _done(self, task: SegmentTask) -> None:
        if task in self.tasks:
            self.tasks.remove(task)
        if self.dock is None:  # unloaded meanwhile
            return
        for w in task.warnings:  # an empty result is said in the status line below
            if not issubclass(w.category, EmptyResultWarning):
                self._message(str(w.message), Qgis.Warning)
        if task.error:
            self._message(task.error, Qgis.Critical)
            msg = task.outcome = "failed"
        elif task.isCanceled():
            msg = task.outcome = "cancelled"
        else:
            task.outcome = "done"
            self.results.add(task.job.source, task.layer_name, task.layer_crs, task.features)
            msg = f"{len(task.features)} object(s) in {task.seconds:.1f} s"
            if task.found < task.rows:
                msg += f"; {task.rows - task.found} prompt(s) selected nothing"
        self.dock.set_running(bool(self.tasks), msg)

    def cancel(self) -> None:
        for task in list(self.tasks):
            task.cancel()

    def undo(self) -> None:
        n = self.results.undo()
        self.dock.status.setText(f"removed {n} object(s)" if n else "nothing to undo")

    def save(self, path: str) -> None:
        try:
            written = self.results.save(self.dock.job().source, path)
        except (FastSAMGeoError, ValueError, OSError) as exc:
            self._message(str(exc), Qgis.Warning)
            return
        self._message(f"saved to {written}", Qgis.Success)

    def _message(self, text: str, level) -> None:
        duration = 0 if level in (Qgis.Critical, Qgis.Warning) and "install" in text else 8
        self.iface.messageBar().pushMessage("FastSAM Geo", text, level=level,
                                            duration=0 if level == Qgis.Critical else duration)
