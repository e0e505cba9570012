"""The run as a cancellable QgsTask; the layer is added in finished(), on the main thread."""

from __future__ import annotations

import os

from qgis.core import QgsMessageLog, QgsProject, QgsTask, QgsVectorLayer

from . import backend
from .compat import CAN_CANCEL, CRITICAL, TIME_FROM_FIELD

LOG_TAG = "RS-Prune"


def add_result_layer(output: str, above=None, name: str = "RS-Prune tiles") -> QgsVectorLayer:
    """Add the GeoPackage's ``tiles`` layer (its stored style colours it by status).

    A run folder shows its ``tiles.gpkg``.
    """
    if os.path.isdir(output):
        output = os.path.join(output, backend.RUN_GEOPACKAGE)
    layer = QgsVectorLayer(f"{output}|layername=tiles", name, "ogr")
    if not layer.isValid():
        raise backend.BackendError(f"{output}: the tiles layer cannot be opened")
    layer.loadDefaultStyle()
    make_temporal(layer)
    project = QgsProject.instance()
    project.addMapLayer(layer, False)
    root = project.layerTreeRoot()
    index = 0
    if above is not None:
        node = root.findLayer(above.id())
        if node is not None and node.parent() is root:
            index = root.children().index(node)
    root.insertLayer(index, layer)
    return layer


def make_temporal(layer: QgsVectorLayer, field: str = "date") -> bool:
    """When the tiles have acquisition dates, let QGIS's temporal controller animate them.

    Each tile shown at its ``date``. Returns whether the layer was made temporal.
    """
    index = layer.fields().indexOf(field)
    latest = layer.maximumValue(index) if index >= 0 else None
    if latest is None or (hasattr(latest, "isNull") and latest.isNull()):  # no tile has a date
        return False
    properties = layer.temporalProperties()
    properties.setMode(TIME_FROM_FIELD)
    properties.setStartField(field)
    properties.setIsActive(True)
    return True


class LayerTask(QgsTask):
    """A task whose result is a tiles layer.

    When it finishes, :meth:`add_layer` puts it on the map (a failure there becomes the task's error),
    the error is logged, and ``on_done(ok, task)`` is called.
    """

    on_done = None
    error: str | None = None
    layer = None

    def add_layer(self):
        raise NotImplementedError

    def finished(self, ok: bool) -> None:
        if ok:
            try:
                self.layer = self.add_layer()
            except backend.BackendError as exc:
                self.error, ok = str(exc), False
        if self.error:
            QgsMessageLog.logMessage(self.error, LOG_TAG, CRITICAL)
        if self.on_done:
            self.on_done(ok, self)


class PruneTask(LayerTask):
    """Runs the backend off the main thread; reports progress; Cancel stops it."""

    def __init__(self, params: backend.PruneParams, use_in_process: bool | None = None,
                 on_done=None, above=None):
        super().__init__("RS-Prune", CAN_CANCEL)
        self.params = params
        if use_in_process is None:
            use_in_process = backend.in_process_allowed() and backend.in_process_available()
        self.use_in_process = use_in_process
        self.on_done = on_done
        self.above = above
        self.result_event = None
        self.error = None
        self.layer = None

    def run(self) -> bool:
        runner = backend.run_in_process if self.use_in_process else backend.run_cli
        self.result_event, self.error = backend.outcome(
            lambda: runner(self.params, lambda pct, stage: self.setProgress(pct), self.isCanceled))
        return self.result_event is not None

    def add_layer(self):
        return add_result_layer(self.result_event["output"], self.above)


class OpenRunTask(LayerTask):
    """Opens a finished run on the map.

    A GeoPackage as it is; a run folder through its ``tiles.gpkg``, which the backend writes first when
    the folder has none (a large run).
    """

    def __init__(self, run: str, on_done=None):
        super().__init__("RS-Prune: open a run", CAN_CANCEL)
        self.run_path = run
        self.on_done = on_done
        self.geopackage = None
        self.error = None
        self.layer = None

    def run(self) -> bool:
        self.geopackage, self.error = backend.outcome(
            lambda: backend.run_geopackage(self.run_path, lambda pct, stage: self.setProgress(pct), self.isCanceled))
        return self.geopackage is not None

    def add_layer(self):
        name = os.path.basename(os.path.normpath(backend.run_location(self.run_path)))
        return add_result_layer(self.geopackage, name=f"RS-Prune tiles ({name})")
