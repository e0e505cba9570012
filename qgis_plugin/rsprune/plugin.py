"""The plugin: a toolbar button and menu entry on the active raster(s), and the Processing provider."""

from __future__ import annotations

import os

from qgis.core import QgsApplication
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction, QFileDialog

from . import backend
from .compat import CRITICAL, INFO, SUCCESS, WARNING, is_raster
from .provider import RsPruneProvider
from .task import OpenRunTask, PruneTask

MENU = "&RS-Prune"


class RsPrunePlugin:
    """Registers the button, the menu, the settings action and the Processing provider."""

    def __init__(self, iface):
        self.iface = iface
        self.provider = None
        self.action = None
        self.settings_action = None
        self.setup_action = None
        self.in_process_action = None
        self.diagnostics_action = None
        self.open_action = None
        self.error_item = None  # the last error on the message bar, cleared when a run succeeds
        self.task = None
        self.outcome = None  # the last run's outcome (QGIS deletes finished tasks)

    def initGui(self):  # noqa: N802
        self.provider = RsPruneProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)
        icon = QIcon(os.path.join(os.path.dirname(__file__), "icon.png"))
        self.action = QAction(icon, "Prune raster tiles (RS-Prune)…", self.iface.mainWindow())
        self.action.setObjectName("rsprune_prune")
        self.action.triggered.connect(self.run)
        self.iface.addToolBarIcon(self.action)
        self.iface.addPluginToRasterMenu(MENU, self.action)
        self.open_action = QAction("Open a run (GeoPackage or folder)…", self.iface.mainWindow())
        self.open_action.setObjectName("rsprune_open")
        self.open_action.triggered.connect(self.choose_run)
        self.iface.addPluginToRasterMenu(MENU, self.open_action)
        self.setup_action = QAction("Set up backend…", self.iface.mainWindow())
        self.setup_action.setObjectName("rsprune_setup")
        self.setup_action.triggered.connect(self.set_up_backend)
        self.iface.addPluginToRasterMenu(MENU, self.setup_action)
        self.settings_action = QAction("Settings: an existing rsprune command…", self.iface.mainWindow())
        self.settings_action.triggered.connect(self.choose_cli)
        self.iface.addPluginToRasterMenu(MENU, self.settings_action)
        self.in_process_action = QAction("Run inside QGIS's Python (advanced)", self.iface.mainWindow())
        self.in_process_action.setCheckable(True)
        self.in_process_action.setChecked(backend.in_process_allowed())
        self.in_process_action.toggled.connect(self.allow_in_process)
        self.iface.addPluginToRasterMenu(MENU, self.in_process_action)
        self.diagnostics_action = QAction("Diagnostics (copy a report)", self.iface.mainWindow())
        self.diagnostics_action.triggered.connect(self.copy_diagnostics)
        self.iface.addPluginToRasterMenu(MENU, self.diagnostics_action)

    def unload(self):
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
        for action in (self.action, self.open_action, self.setup_action, self.settings_action, self.in_process_action,
                       self.diagnostics_action):
            if action is not None:
                self.iface.removePluginRasterMenu(MENU, action)
        if self.action is not None:
            self.iface.removeToolBarIcon(self.action)

    def selected_rasters(self):
        """The rasters selected in the Layers panel, else the active layer; file-backed only."""
        layers = list(self.iface.layerTreeView().selectedLayers()) if self.iface.layerTreeView() else []
        if not layers and self.iface.activeLayer() is not None:
            layers = [self.iface.activeLayer()]
        rasters = [layer for layer in layers if is_raster(layer)]
        if not rasters:
            raise backend.BackendError("select a raster layer first")
        paths = [layer.source().split("|")[0] for layer in rasters]
        for path in paths:
            if not os.path.isfile(path):
                raise backend.BackendError(f"{path}: the layer has no file behind it")
        return rasters, paths

    def has_backend(self) -> bool:
        """Whether a run can start.

        A configured rsprune command, or rsprune_geo in QGIS's Python when the user allowed it.
        """
        return backend.configured_cli() is not None or (backend.in_process_allowed() and
                                                        backend.in_process_available())

    def offer_setup(self) -> bool:
        """With no backend.

        Ask before any form whether to set one up now (and open *Set up backend* when the answer is yes).
        Returns whether a run can go on.
        """
        from qgis.PyQt.QtWidgets import QMessageBox

        from .backend_setup import LEAN_SIZE

        if self.has_backend():
            return True
        answer = QMessageBox.question(
            self.iface.mainWindow(), "RS-Prune",
            "RS-Prune needs its backend (a Python environment with rsprune_geo) before it can prune.\n\n"
            f"Set it up now? It installs the package and what it needs from the package index ({LEAN_SIZE} on "
            "disk, no PyTorch: about a minute where the index is near), beside your QGIS profile.")
        if answer == QMessageBox.StandardButton.Yes:
            self.set_up_backend()
        return False

    def clear_error(self) -> None:
        """Take the last error off the message bar (a later success makes it stale)."""
        bar = self.iface.messageBar()
        if self.error_item is not None and hasattr(bar, "popWidget"):
            try:
                bar.popWidget(self.error_item)
            except RuntimeError:  # the user closed it already
                pass
        self.error_item = None

    def run(self):
        from .dialog import PruneDialog

        try:
            layers, paths = self.selected_rasters()
        except backend.BackendError as exc:
            self.iface.messageBar().pushMessage("RS-Prune", str(exc), level=WARNING)
            return
        if not self.offer_setup():
            return
        dialog = PruneDialog(paths, self.iface.mainWindow())
        if not dialog.exec():
            return
        self.start(dialog.params(), above=layers[0])

    def start(self, params, above=None, use_in_process=None) -> PruneTask:
        """Run ``params`` as a background task (also used by tests)."""
        self.outcome = None
        self.task = PruneTask(params, use_in_process, on_done=self.report, above=above)
        QgsApplication.taskManager().addTask(self.task)
        return self.task

    def choose_run(self) -> None:
        """Ask for a run (its GeoPackage, or a run folder's ``run.json``) and open it on the map."""
        path, _ = QFileDialog.getOpenFileName(self.iface.mainWindow(), "An RS-Prune run", "",
                                              "RS-Prune runs (*.gpkg run.json)")
        if path:
            self.open_run(path)

    def open_run(self, path: str) -> OpenRunTask:
        """Open a finished run on the map as a background task (also used by tests)."""
        self.outcome = None
        self.task = OpenRunTask(path, on_done=self.opened)
        QgsApplication.taskManager().addTask(self.task)
        return self.task

    def opened(self, ok, task):
        self.outcome = {"ok": ok, "error": task.error, "layer": task.layer, "event": None}
        if task.error:
            self.iface.messageBar().pushMessage("RS-Prune", task.error, level=CRITICAL)

    def allow_in_process(self, allowed: bool) -> None:
        """Opt in (or out) of running rsprune_geo inside QGIS's own Python."""
        from qgis.core import QgsSettings

        QgsSettings().setValue(backend.IN_PROCESS_KEY, bool(allowed))

    def report(self, ok, task):
        self.outcome = {"ok": ok, "error": task.error, "layer": task.layer, "event": task.result_event}
        bar = self.iface.messageBar()
        if ok:
            self.clear_error()  # a stale error goes
            bar.pushMessage("RS-Prune", backend.run_message(task.result_event), level=SUCCESS)
        elif task.error:
            bar.pushMessage("RS-Prune", task.error, level=CRITICAL)
            item = bar.currentItem() if hasattr(bar, "currentItem") else None
            self.error_item = item if item is not None and item.text() == task.error else None
        else:
            bar.pushMessage("RS-Prune", "canceled: nothing was written", level=INFO)

    def set_up_backend(self):
        from .backend_setup import SetupDialog

        self.setup_dialog = SetupDialog(self.iface.mainWindow(), on_ready=self.clear_error)
        self.setup_dialog.show()
        return self.setup_dialog

    def copy_diagnostics(self) -> str:
        """Copy the diagnostics report to the clipboard (and the message log)."""
        from qgis.core import QgsMessageLog
        from qgis.PyQt.QtWidgets import QApplication

        from .backend_setup import diagnostics

        report = diagnostics()
        QApplication.clipboard().setText(report)
        QgsMessageLog.logMessage(report, "RS-Prune", INFO)
        self.iface.messageBar().pushMessage("RS-Prune", "diagnostics copied to the clipboard", level=INFO)
        return report

    def choose_cli(self):
        from qgis.core import QgsSettings

        path, _ = QFileDialog.getOpenFileName(self.iface.mainWindow(), "The rsprune command")
        if path:
            QgsSettings().setValue(backend.SETTINGS_KEY, path)
