"""The parameters dialog, with defaults and validation."""

from __future__ import annotations

import os

from qgis.PyQt.QtWidgets import (
    QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFileDialog, QFormLayout, QHBoxLayout,
    QLineEdit, QMessageBox, QPushButton, QSpinBox, QWidget,
)

from . import backend

ENCODERS = ["efficientnet-lite0", "rcf-empirical", "rcf-gaussian", "git-rsclip", "git-rsclip-base"]


class PruneDialog(QDialog):
    """Tile size, stride, keep ratios, encoder, prior bank(s) and output."""

    def __init__(self, rasters: list[str], parent=None):
        super().__init__(parent)
        self.setWindowTitle("RS-Prune")
        self.rasters = rasters
        form = QFormLayout(self)
        self.tile_size = QSpinBox(minimum=8, maximum=8192, value=256)
        self.stride = QSpinBox(minimum=0, maximum=8192, value=0, specialValueText="= tile size")
        self.keep = QDoubleSpinBox(minimum=0.001, maximum=1.0, value=0.15, singleStep=0.05, decimals=3)
        self.stage1_keep = QDoubleSpinBox(minimum=0.0, maximum=1.0, value=0.0, singleStep=0.05, decimals=3,
                                          specialValueText="auto (1.0 with a prior bank, else 0.30)")
        self.entropy_min = QDoubleSpinBox(minimum=0.0, maximum=8.0, value=0.0, decimals=2,
                                          specialValueText="none")
        self.encoder = QComboBox()
        self.encoder.addItems(ENCODERS)
        self.encoder.setEditable(True)  # any torchgeo weight name too
        self.prior_bank = QLineEdit()
        self.prior_bank.setPlaceholderText("folder with one sub-folder per class (optional)")
        self.output = QLineEdit(os.path.splitext(rasters[0])[0] + "-rsprune.gpkg" if rasters else "")
        form.addRow("Rasters", QLineEdit("; ".join(rasters), readOnly=True))
        form.addRow("Tile size (px)", self.tile_size)
        form.addRow("Stride (px)", self.stride)
        form.addRow("Keep (fraction of the tiles with data)", self.keep)
        form.addRow("Stage-1 keep (by entropy)", self.stage1_keep)
        form.addRow("Minimum entropy (bits)", self.entropy_min)
        form.addRow("Scene encoder", self.encoder)
        form.addRow("Prior bank", self._with_browse(self.prior_bank, folder=True))
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

    def params(self) -> backend.PruneParams:
        return backend.PruneParams(
            rasters=self.rasters, output=self.output.text().strip(), tile_size=self.tile_size.value(),
            stride=self.stride.value(), keep=self.keep.value(), stage1_keep=self.stage1_keep.value() or None,
            entropy_min=self.entropy_min.value() or None, encoder=self.encoder.currentText(),
            prior_banks=[self.prior_bank.text().strip()] if self.prior_bank.text().strip() else [],
        )

    def accept(self) -> None:
        try:
            self.params().validate()
        except backend.BackendError as exc:
            QMessageBox.warning(self, "RS-Prune", str(exc))
            return
        super().accept()
