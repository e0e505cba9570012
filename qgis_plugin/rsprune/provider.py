"""The "RS-Prune" Processing provider and its "prune" algorithm (modeler, batch, processing.run).

Its parameters are built from the package's option definitions (``options.json``), as the
dialog's are.
"""

from __future__ import annotations

import os

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingProvider,
)
from qgis.PyQt.QtGui import QIcon

from . import backend, options

ICON = os.path.join(os.path.dirname(__file__), "icon.png")


def processing_parameter(item: dict):
    """The Processing parameter of one option definition (name in upper case)."""
    key, label = item["name"].upper(), item["label"] or item["name"]
    if item["name"] == "encoder":
        return QgsProcessingParameterEnum(key, label, options.ENCODERS,
                                          defaultValue=options.ENCODERS.index(options.form_default("encoder")))
    if item["type"] in ("int", "float"):
        kind = QgsProcessingParameterNumber.Integer if item["type"] == "int" else QgsProcessingParameterNumber.Double
        if item["optional"] and item["auto"]:
            label = f"{label} (empty: {item['auto']})"
        param = QgsProcessingParameterNumber(key, label, kind, options.form_default(item["name"]), item["optional"],
                                             item["low"] if item["low"] is not None else -1e12,
                                             item["high"] if item["high"] is not None else 1e12)
    elif item["path"]:
        param = QgsProcessingParameterFile(key, label, QgsProcessingParameterFile.Folder, optional=True)
    else:
        raise ValueError(f"no Processing parameter for {item['name']}")
    param.setHelp(item["help"])
    return param


class PruneAlgorithm(QgsProcessingAlgorithm):
    """rsprune:prune — tile, score and select the tiles of raster layers."""

    def name(self):
        return "prune"

    def displayName(self):
        return "Prune raster tiles (RS-Prune)"

    def group(self):
        return ""

    def groupId(self):
        return ""

    def icon(self):
        return QIcon(ICON)

    def shortHelpString(self):
        return ("Tiles the input rasters, drops low-information tiles by entropy and, with a prior "
                "bank, keeps a scene-balanced subset. Writes a GeoPackage of tile footprints with "
                "their status, styled for QGIS.")

    def createInstance(self):
        return PruneAlgorithm()

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterMultipleLayers("INPUT", "Raster layers", QgsProcessing.TypeRaster))
        for item in options.GUI_OPTIONS:
            self.addParameter(processing_parameter(item))
        self.addParameter(QgsProcessingParameterFileDestination("OUTPUT", "Output GeoPackage",
                                                                "GeoPackage (*.gpkg)"))

    def _value(self, parameters, context, item):
        key = item["name"].upper()
        if item["name"] == "encoder":
            return options.ENCODERS[self.parameterAsEnum(parameters, key, context)]
        if item["path"]:
            return self.parameterAsFile(parameters, key, context) or None
        raw = parameters.get(key, options.form_default(item["name"]))
        if raw in (None, ""):
            return None
        return self.parameterAsInt(parameters, key, context) if item["type"] == "int" \
            else self.parameterAsDouble(parameters, key, context)

    def processAlgorithm(self, parameters, context, feedback):
        layers = self.parameterAsLayerList(parameters, "INPUT", context)
        values = {item["name"]: self._value(parameters, context, item) for item in options.GUI_OPTIONS}
        bank = values.pop("prior_bank")
        params = backend.PruneParams(
            rasters=[layer.source().split("|")[0] for layer in layers],
            output=self.parameterAsFileOutput(parameters, "OUTPUT", context), prior_banks=[bank] if bank else [],
            **values,
        )
        runner = backend.run_in_process if backend.in_process_available() else backend.run_cli
        try:
            event = runner(params, lambda pct, stage: feedback.setProgress(pct), feedback.isCanceled)
        except backend.Canceled:
            return {}
        except backend.BackendError as exc:
            raise QgsProcessingException(str(exc)) from None
        feedback.pushInfo(f"RS-Prune: {event['counts']}")
        return {"OUTPUT": event["output"]}


class RsPruneProvider(QgsProcessingProvider):
    """The RS-Prune provider."""

    def id(self):
        return "rsprune"

    def name(self):
        return "RS-Prune"

    def icon(self):
        return QIcon(ICON)

    def loadAlgorithms(self):
        self.addAlgorithm(PruneAlgorithm())
