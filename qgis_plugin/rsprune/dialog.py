"""The parameters dialog, built from the package's option definitions (``options.json``)."""

from __future__ import annotations

import os

from qgis.PyQt.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QSpinBox,
    QWidget,
)

from . import backend, options

#: The largest value an open-ended number field offers.
BIG = 1_000_000


def number_widget(item: dict):
    """A spin box for one numeric parameter: its range, its form default, and (for an optional
    parameter) its lowest value standing for "automatic", worded by the definition."""
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
            elif item["type"] in ("int", "float"):
                widget = row = number_widget(item)
            else:
                widget = QLineEdit()
                widget.setPlaceholderText("folder with one sub-folder per class (optional)" if item["path"] else "")
                row = self._with_browse(widget, folder=True) if item["path"] else widget
            widget.setToolTip(item["help"])
            setattr(self, name, widget)
            form.addRow(item["label"] or name, row)
        self.output = QLineEdit(os.path.splitext(rasters[0])[0] + "-rsprune.gpkg" if rasters else "")
        form.addRow("Output GeoPackage", self._with_browse(self.output, folder=False))
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def _with_browse(self, edit: QLineEdit, folder: bool) -> QWidget:
        box = QWidget()
        row = QHBoxLayout(box)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(edit)
        button = QPushButton("…")
        if folder:
            button.clicked.connect(lambda: edit.setText(QFileDialog.getExistingDirectory(self) or edit.text()))
        else:
            button.clicked.connect(lambda: edit.setText(
                QFileDialog.getSaveFileName(self, filter="GeoPackage (*.gpkg)")[0] or edit.text()))
        row.addWidget(button)
        return box

    def value(self, name: str):
        """A field's value as rsprune takes it (``None`` for "automatic" or empty)."""
        widget = getattr(self, name)
        if isinstance(widget, QComboBox):
            return widget.currentText()
        if isinstance(widget, (QSpinBox, QDoubleSpinBox)):
            value = widget.value()
            return None if widget.auto_value is not None and value == widget.auto_value else value
        return widget.text().strip() or None

    def params(self) -> backend.PruneParams:
        bank = self.value("prior_bank")
        return backend.PruneParams(
            rasters=self.rasters, output=self.output.text().strip(), tile_size=self.value("tile_size"),
            stride=self.value("stride"), keep=self.value("keep"), stage1_keep=self.value("stage1_keep"),
            entropy_min=self.value("entropy_min"), encoder=self.value("encoder"),
            max_per_cell=self.value("max_per_cell"), prior_banks=[bank] if bank else [],
        )

    def accept(self) -> None:
        try:
            self.params().validate()
        except backend.BackendError as exc:
            QMessageBox.warning(self, "RS-Prune", str(exc))
            return
        super().accept()
