"""The parameters dialog, built from the package's option definitions (``options.json``)."""

from __future__ import annotations

import os

from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QSpinBox,
    QWidget,
)

from . import backend, options

#: The largest value an open-ended number field offers.
BIG = 1_000_000
#: What the prior-bank field takes; empty, the backend's ``rsprune run`` uses the profile it ships.
BANK_HINT = "empty: the UC Merced profile rsprune ships; or a folder (one sub-folder per class), a .rsbank, none"
MASK_SAMPLES = 512  # the longest side of the validity mask the budget line is estimated on


def number_widget(item: dict):
    """A spin box for one numeric parameter.

    Its range, its form default, and (for an optional parameter) its lowest value standing for
    "automatic", worded by the definition.
    """
    is_int = item["type"] == "int"
    low = item["low"] if item["low"] is not None else 0
    high = item["high"] if item["high"] is not None else BIG
    box = QSpinBox() if is_int else QDoubleSpinBox(decimals=3, singleStep=0.05)
    step = 1 if is_int else 0.001
    floor = low + step if item["low_open"] else low
    if item["optional"]:
        floor -= step  # the special "auto" value sits just below the range
        box.setSpecialValueText(item["auto"] or "auto")
    box.setRange(int(floor) if is_int else floor, int(high) if is_int else high)
    value = options.form_default(item["name"])
    box.setValue(floor if value is None else value)
    box.setToolTip(item["help"])
    box.auto_value = floor if item["optional"] else None
    return box


OUTPUT_FOLDER_KEY = "rsprune/output_folder"
#: The folder made for runs when the user has chosen none and the project is not saved.
RUNS_FOLDER = "rsprune-runs"


def output_folder() -> str:
    """Where outputs go by default.

    A place the user keeps (a run may take hours; QGIS deletes its temporary folder at exit): the folder
    the user chose last; else the saved project's folder; else ``rsprune-runs`` in the user's Documents
    (or, without one, in the QGIS profile), made when first needed. Never, silently, the folder of the
    source data, which may be read-only or shared.
    """
    from qgis.core import QgsApplication, QgsProject, QgsSettings

    chosen = QgsSettings().value(OUTPUT_FOLDER_KEY, "", type=str)
    if chosen and os.path.isdir(chosen):
        return chosen
    project = QgsProject.instance()
    if project.fileName() and os.path.isdir(project.absolutePath()):
        return project.absolutePath()
    documents = os.path.join(os.path.expanduser("~"), "Documents")
    base = documents if os.path.isdir(documents) else QgsApplication.qgisSettingsDirPath()
    folder = os.path.join(base, RUNS_FOLDER)
    os.makedirs(folder, exist_ok=True)
    return folder


def temporary_folder() -> str:
    """QGIS's Processing temporary folder (emptied when QGIS exits): a choice, never the default."""
    from qgis.core import QgsProcessingUtils

    return QgsProcessingUtils.tempFolder()


def remember_output_folder(folder: str) -> None:
    """Make ``folder`` the default output folder from now on."""
    from qgis.core import QgsSettings

    QgsSettings().setValue(OUTPUT_FOLDER_KEY, folder)


def default_output(raster: str, folder: str | None = None) -> str:
    """``<folder>/<raster name>-rsprune.gpkg`` (``folder``: :func:`output_folder`).

    Numbered so no file is overwritten.
    """
    stem = os.path.splitext(os.path.basename(raster))[0]
    folder = folder or output_folder()
    path = os.path.join(folder, f"{stem}-rsprune.gpkg")
    n = 2
    while os.path.exists(path):
        path = os.path.join(folder, f"{stem}-rsprune-{n}.gpkg")
        n += 1
    return path


class PruneDialog(QDialog):
    """One field per parameter the package marks for forms, then the output."""

    def __init__(self, rasters: list[str], parent=None):
        super().__init__(parent)
        self.setWindowTitle("RS-Prune")
        self.rasters = rasters
        form = QFormLayout(self)
        form.addRow("Rasters", QLineEdit("; ".join(rasters), readOnly=True))
        for item in options.GUI_OPTIONS:
            name = item["name"]
            if name == "encoder":
                widget = QComboBox()
                widget.addItems(options.ENCODERS)
                widget.setEditable(True)  # any torchgeo weight name too
                widget.setCurrentText(options.form_default(name))
                row = widget
            elif item["choices"]:
                widget = row = QComboBox()
                if item["optional"]:
                    widget.addItem(f"automatic ({item['auto']})" if item["auto"] else "automatic", None)
                for choice in item["choices"]:
                    widget.addItem(choice, choice)
                default = options.form_default(name)
                widget.setCurrentIndex(max(0, widget.findData(default)) if default is not None else 0)
            elif item["type"] in ("int", "float"):
                widget = row = number_widget(item)
            else:
                widget = QLineEdit()
                widget.setPlaceholderText(BANK_HINT if item["path"] == "bank" else (item["auto"] or ""))
                row = self._with_browse(widget, folder=True) if item["path"] else widget
            widget.setToolTip(item["help"])
            setattr(self, name, widget)
            form.addRow(item["label"] or name, row)
        self.coverage = QLabel()
        self.coverage.setWordWrap(True)
        form.addRow("Grid coverage", self.coverage)
        self.budget = QLabel()
        self.budget.setWordWrap(True)
        form.addRow("Tiles", self.budget)
        self._masks: dict = {}
        for name in ("tile_size", "stride", "keep", "stage1_keep", "max_nodata"):
            getattr(self, name).valueChanged.connect(self.update_coverage)
        self.edge.currentIndexChanged.connect(self.update_coverage)
        self.update_coverage()
        self.output = QLineEdit(default_output(rasters[0]) if rasters else "")
        form.addRow("Output GeoPackage", self._with_browse(self.output, folder=False))
        self.temporary = QCheckBox("Temporary output (QGIS deletes it when it exits)")
        self.temporary.toggled.connect(self._temporary_toggled)
        form.addRow("", self.temporary)
        self.where = QLabel()
        self.where.setWordWrap(True)
        form.addRow("Kept in", self.where)
        self.output.textChanged.connect(self._say_where)
        self._say_where()
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def update_coverage(self) -> None:
        """Say how much of each raster the tile grid covers (offering ``pad`` when it leaves some out).

        How many tiles the grid gives, about how many have data and how many the run will keep, and a
        smaller tile size when the rasters yield only a handful.
        """
        size, stride, edge = self.value("tile_size"), self.value("stride"), self.value("edge")
        keep = self.value("keep") or self.value("stage1_keep") or options.option("keep")["suggested"]
        max_nodata = self.value("max_nodata")
        notes, tiles, with_data, suggestions = [], 0, 0, []
        for path in self.rasters:
            mask = self._mask(path)
            if mask is None:
                continue
            width, height, samples, mask_width, mask_height = mask
            share = backend.grid_coverage(width, height, size, stride, edge)
            if share < 0.999:
                notes.append(f"{os.path.basename(path)} ({width}×{height} px): {share:.0%} tiled")
            counted = backend.tiles_with_data(samples, mask_width, mask_height, width, height, size, stride, edge,
                                              max_nodata)
            tiles, with_data = tiles + counted[0], with_data + counted[1]
            suggestions.append(backend.suggested_tile_size(width, height, size, counted[1] / max(counted[0], 1)))
        self.coverage.setText(
            "the tile grid covers every raster" if not notes else
            "; ".join(notes) + f" — with {size}-px tiles and edge {edge} the rest is never tiled; "
            "choose edge tiles 'pad' to cover it")
        suggestion = min((s for s in suggestions if s), default=None) if with_data < backend.FEW_TILES else None
        self.budget.setText(backend.budget_text(tiles, with_data, keep, suggestion))

    def _mask(self, path: str):
        """``(width, height, samples, sample width, sample height)``.

        A raster's validity mask read once at a reduced size (GDAL's mask band), or ``None`` when GDAL
        cannot open it.
        """
        if path not in self._masks:
            from osgeo import gdal

            dataset = gdal.Open(path)
            if dataset is None:
                self._masks[path] = None
            else:
                width, height = dataset.RasterXSize, dataset.RasterYSize
                scale = min(1.0, MASK_SAMPLES / max(width, height))
                mw, mh = max(1, round(width * scale)), max(1, round(height * scale))
                samples = dataset.GetRasterBand(1).GetMaskBand().ReadRaster(
                    0, 0, width, height, buf_xsize=mw, buf_ysize=mh, buf_type=gdal.GDT_Byte)
                self._masks[path] = (width, height, bytes(samples), mw, mh)
        return self._masks[path]

    def _with_browse(self, edit: QLineEdit, folder: bool) -> QWidget:
        box = QWidget()
        row = QHBoxLayout(box)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(edit)
        button = QPushButton("…")
        if folder:
            button.clicked.connect(lambda: edit.setText(QFileDialog.getExistingDirectory(self) or edit.text()))
        else:
            button.clicked.connect(lambda: self._choose_output(edit))
        row.addWidget(button)
        return box

    def _temporary_toggled(self, temporary: bool) -> None:
        """Move the output to QGIS's temporary folder, or back to the folder runs are kept in."""
        if self.rasters:
            self.output.setText(default_output(self.rasters[0], temporary_folder() if temporary else None))

    def _say_where(self) -> None:
        """Say where the run will be written, and whether it outlives QGIS."""
        folder = os.path.dirname(self.output.text().strip()) or "."
        temporary = os.path.normpath(folder) == os.path.normpath(temporary_folder())
        self.where.setText(f"{folder} — " + ("a temporary folder: QGIS deletes the run when it exits"
                                             if temporary else "the run outlives QGIS"))

    def _choose_output(self, edit: QLineEdit) -> None:
        path = QFileDialog.getSaveFileName(self, "Output GeoPackage", edit.text(), "GeoPackage (*.gpkg)")[0]
        if path:
            edit.setText(path if path.lower().endswith(".gpkg") else path + ".gpkg")
            remember_output_folder(os.path.dirname(path))

    def value(self, name: str):
        """A field's value as rsprune takes it (``None`` for "automatic" or empty)."""
        widget = getattr(self, name)
        if isinstance(widget, QComboBox):
            return widget.currentText() if name == "encoder" else widget.currentData()
        if isinstance(widget, (QSpinBox, QDoubleSpinBox)):
            value = widget.value()
            return None if widget.auto_value is not None and value == widget.auto_value else value
        return widget.text().strip() or None

    def params(self) -> backend.PruneParams:
        bank = self.value("prior_bank")
        return backend.PruneParams(
            rasters=self.rasters, output=self.output.text().strip(), tile_size=self.value("tile_size"),
            stride=self.value("stride"), edge=self.value("edge"), keep=self.value("keep"),
            stage1_keep=self.value("stage1_keep"),
            entropy_min=self.value("entropy_min"), encoder=self.value("encoder"),
            max_per_cell=self.value("max_per_cell"), bands=self.value("bands"), max_nodata=self.value("max_nodata"),
            stage1=self.value("stage1"), prior_banks=[bank] if bank else [],
        )

    def accept(self) -> None:
        try:
            self.params().validate()
        except backend.BackendError as exc:
            QMessageBox.warning(self, "RS-Prune", str(exc))
            return
        super().accept()
