"""The dock: raster layer, model and options (remembered in QgsSettings), the tools, text, progress."""

from __future__ import annotations

from qgis.core import QgsMapLayerProxyModel, QgsSettings
from qgis.gui import QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDockWidget,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from . import adapter

GROUP = "fastsam_geo"
DEVICES = ("auto", "cpu", "cuda", "mps")
GSD_MODES = ("auto", "native")
GSD_TIP = ("Resolution (ground sample distance). auto: tiles are sized so the network sees the imagery at the m/px "
           "the model's card records, tile size and overlap read as pixels at that GSD (custom models without a "
           "card: tiles as given); native: tiles as given; a number: assume the model was trained at that many "
           "m/px. Imagery far outside the model's training range gets a warning.")
DEFAULTS = {"model": adapter.BUNDLED, "device": "auto", "tile_size": 1024, "overlap": 128, "min_area": 16,
            "regularize": False, "clip": "", "gsd": "auto"}


def setting(key: str):
    value = QgsSettings().value(f"{GROUP}/{key}", DEFAULTS[key])
    if value is None:
        return DEFAULTS[key]
    if isinstance(DEFAULTS[key], bool):  # QSettings gives "true"/"false" back from an .ini
        return value in (True, 1, "true", "1")
    return type(DEFAULTS[key])(value)


class Dock(QDockWidget):
    """Widgets only: the plugin reads :meth:`job` and the signals; the actions are the toolbar's."""

    text_requested = pyqtSignal(str)
    cancel_requested = pyqtSignal()
    save_requested = pyqtSignal(str)

    def __init__(self, parent, actions: dict):
        super().__init__("FastSAM Geo", parent)
        self.setObjectName("FastSAMGeoDock")
        body = QWidget()
        box = QVBoxLayout(body)

        self.layer_combo = QgsMapLayerComboBox()
        self.layer_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.model = QComboBox()
        self.model.setEditable(True)
        self.model.addItems(adapter.MODELS)
        self.model.setToolTip("bundled building model, an official FastSAM name (from the weights folder), "
                              "a .pt path, or package.module:factory")
        browse = QToolButton()
        browse.setText("…")
        browse.clicked.connect(self._browse_model)
        row = QHBoxLayout()
        row.addWidget(self.model, 1)
        row.addWidget(browse)
        self.device = QComboBox()
        self.device.addItems(DEVICES)
        self.tile_size, self.overlap, self.min_area = (_spin(64, 8192, 128), _spin(0, 4096, 32), _spin(0, 10**7, 16))
        form = QFormLayout()
        form.addRow("Raster layer", self.layer_combo)
        form.addRow("Model", row)
        form.addRow("Device", self.device)
        form.addRow("Tile size (px)", self.tile_size)
        form.addRow("Tile overlap (px)", self.overlap)
        form.addRow("Min area (px)", self.min_area)
        self.gsd = QComboBox()
        self.gsd.setEditable(True)
        self.gsd.addItems(GSD_MODES)
        self.gsd.setToolTip(GSD_TIP)
        form.addRow("Resolution (GSD)", self.gsd)
        self.regularize = QCheckBox("Right-angle footprints (regularise)")
        self.regularize.setToolTip("buildingregulariser after merging: pip install \"fastsam-geo[regularize]\"")
        form.addRow("", self.regularize)
        box.addLayout(form)

        grid = QGridLayout()
        for i, key in enumerate(("segment_layer", "segment_view", "points", "run_points", "box", "undo")):
            button = QToolButton()
            button.setDefaultAction(actions[key])
            button.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
            button.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
            grid.addWidget(button, i // 2, i % 2)
        box.addLayout(grid)

        text_group = QGroupBox("Text prompt")
        tbox = QVBoxLayout(text_group)
        self.text = QLineEdit()
        self.text.setPlaceholderText("e.g. swimming pool")
        self.find = QPushButton("Find")
        trow = QHBoxLayout()
        trow.addWidget(self.text, 1)
        trow.addWidget(self.find)
        self.clip = QgsFileWidget()
        self.clip.setFilter("CLIP weights (*.bin *.pt *.safetensors)")
        self.text_note = QLabel()
        self.text_note.setWordWrap(True)
        self.text_note.setTextInteractionFlags(Qt.TextSelectableByMouse)  # the pip command can be copied
        tbox.addLayout(trow)
        tbox.addWidget(QLabel("CLIP ViT-B-32 weights"))
        tbox.addWidget(self.clip)
        tbox.addWidget(self.text_note)
        box.addWidget(text_group)

        self.save = QPushButton("Save results to GeoPackage…")
        box.addWidget(self.save)
        prow = QHBoxLayout()
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.cancel = QPushButton("Cancel")
        self.cancel.setEnabled(False)
        prow.addWidget(self.progress, 1)
        prow.addWidget(self.cancel)
        box.addLayout(prow)
        self.status = QLabel()
        self.status.setWordWrap(True)
        box.addWidget(self.status)
        box.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(body)
        self.setWidget(scroll)

        self._load()
        self.find.clicked.connect(lambda: self.text_requested.emit(self.text.text()))
        self.text.returnPressed.connect(lambda: self.text_requested.emit(self.text.text()))
        self.cancel.clicked.connect(self.cancel_requested.emit)
        self.save.clicked.connect(self._save)
        self.clip.fileChanged.connect(lambda _: self._store())
        self.model.currentTextChanged.connect(lambda _: self._store())
        self.device.currentTextChanged.connect(lambda _: self._store())
        self.gsd.currentTextChanged.connect(lambda _: self._store())
        for spin in (self.tile_size, self.overlap, self.min_area):
            spin.valueChanged.connect(lambda _: self._store())
        self.regularize.toggled.connect(lambda _: self._store())

    # -- settings ---------------------------------------------------------------------------------

    def _load(self) -> None:
        self.model.setCurrentText(setting("model"))
        self.device.setCurrentText(setting("device"))
        self.gsd.setCurrentText(setting("gsd"))
        self.tile_size.setValue(setting("tile_size"))
        self.overlap.setValue(setting("overlap"))
        self.min_area.setValue(setting("min_area"))
        self.regularize.setChecked(setting("regularize"))
        self.clip.setFilePath(setting("clip"))
        self.update_text_support()

    def _store(self) -> None:
        s = QgsSettings()
        for key, value in (("model", self.model.currentText()), ("device", self.device.currentText()),
                           ("tile_size", self.tile_size.value()), ("overlap", self.overlap.value()),
                           ("min_area", self.min_area.value()), ("regularize", self.regularize.isChecked()),
                           ("clip", self.clip.filePath()), ("gsd", self.gsd.currentText())):
            s.setValue(f"{GROUP}/{key}", value)
        self.update_text_support()

    def update_text_support(self) -> None:
        note = adapter.text_support(self.clip.filePath())
        for w in (self.text, self.find):
            w.setEnabled(note is None)
        self.text_note.setText(note or "")

    # -- what the plugin reads --------------------------------------------------------------------

    def layer(self):
        return self.layer_combo.currentLayer()

    def job(self, text: bool = False) -> adapter.Job:
        """The current layer, model and options as a job (InputError when one is invalid)."""
        opts = adapter.options(tile_size=self.tile_size.value(), overlap=self.overlap.value(),
                               device=self.device.currentText(), min_area=self.min_area.value(),
                               regularize=self.regularize.isChecked(), gsd=self.gsd.currentText())
        clip = adapter.clip_spec(self.clip.filePath()) if text else None
        return adapter.job(self.layer(), self.model.currentText(), opts, clip)

    def set_running(self, running: bool, message: str = "") -> None:
        self.cancel.setEnabled(running)
        if not running:
            self.progress.setValue(0)
        if message:
            self.status.setText(message)

    def _browse_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Model weights", "", "PyTorch weights (*.pt)")
        if path:
            self.model.setCurrentText(path)

    def _save(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save results", "", "GeoPackage (*.gpkg)")
        if path:
            self.save_requested.emit(path if path.lower().endswith(".gpkg") else path + ".gpkg")


def _spin(lo: int, hi: int, step: int) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(lo, hi)
    spin.setSingleStep(step)
    return spin
