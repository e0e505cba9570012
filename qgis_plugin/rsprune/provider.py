"""The "RS-Prune" Processing provider and its "prune" algorithm (modeler, batch, processing.run)."""

from __future__ import annotations

from qgis.core import (
    QgsProcessingAlgorithm, QgsProcessingException, QgsProcessingParameterEnum,
    QgsProcessingParameterFile, QgsProcessingParameterFileDestination,
    QgsProcessingParameterMultipleLayers, QgsProcessingParameterNumber, QgsProcessingProvider,
    QgsProcessing,
)

from . import backend
from .dialog import ENCODERS


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

    def shortHelpString(self):
        return ("Tiles the input rasters, drops low-information tiles by entropy and, with a prior "
                "bank, keeps a scene-balanced subset. Writes a GeoPackage of tile footprints with "
                "their status, styled for QGIS.")

    def createInstance(self):
        return PruneAlgorithm()

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterMultipleLayers("INPUT", "Raster layers", QgsProcessing.TypeRaster))
        self.addParameter(QgsProcessingParameterNumber("TILE_SIZE", "Tile size (px)", defaultValue=256, minValue=8))
        self.addParameter(QgsProcessingParameterNumber("STRIDE", "Stride (px, 0 = tile size)", defaultValue=0, minValue=0))
        self.addParameter(QgsProcessingParameterNumber("KEEP", "Keep (fraction of the tiles with data)",
                                                       QgsProcessingParameterNumber.Double, 0.15, False, 0.001, 1.0))
        self.addParameter(QgsProcessingParameterNumber("STAGE1_KEEP", "Stage-1 keep (by entropy; empty: 1.0 with a "
                                                       "prior bank, else 0.30)",
                                                       QgsProcessingParameterNumber.Double, None, True, 0.001, 1.0))
        self.addParameter(QgsProcessingParameterNumber("ENTROPY_MIN", "Minimum entropy (bits)",
                                                       QgsProcessingParameterNumber.Double, None, True, 0.0, 8.0))
        self.addParameter(QgsProcessingParameterEnum("ENCODER", "Scene encoder", ENCODERS, defaultValue=0))
        self.addParameter(QgsProcessingParameterFile("PRIOR_BANK", "Prior bank folder",
                                                     QgsProcessingParameterFile.Folder, optional=True))
        self.addParameter(QgsProcessingParameterFileDestination("OUTPUT", "Output GeoPackage",
                                                                "GeoPackage (*.gpkg)"))

    def processAlgorithm(self, parameters, context, feedback):
        layers = self.parameterAsLayerList(parameters, "INPUT", context)
        rasters = [layer.source().split("|")[0] for layer in layers]
        bank = self.parameterAsFile(parameters, "PRIOR_BANK", context)
        entropy_min = parameters.get("ENTROPY_MIN")
        params = backend.PruneParams(
            rasters=rasters, output=self.parameterAsFileOutput(parameters, "OUTPUT", context),
            tile_size=self.parameterAsInt(parameters, "TILE_SIZE", context),
            stride=self.parameterAsInt(parameters, "STRIDE", context),
            keep=self.parameterAsDouble(parameters, "KEEP", context),
            stage1_keep=None if parameters.get("STAGE1_KEEP") in (None, "") else float(parameters["STAGE1_KEEP"]),
            entropy_min=None if entropy_min in (None, "") else float(entropy_min),
            encoder=ENCODERS[self.parameterAsEnum(parameters, "ENCODER", context)],
            prior_banks=[bank] if bank else [],
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

    def loadAlgorithms(self):
        self.addAlgorithm(PruneAlgorithm())
