"""The "RS-Prune" Processing provider: prune, re-select, export chips, write the report.

Each algorithm runs one ``rsprune`` command (``--progress-json``) through the backend, so the
modeler can chain them (prune → re-select → export) and Cancel stops the command within about a
second. The prune algorithm's parameters are built from the package's option definitions
(``options.json``), as the dialog's are.
"""

from __future__ import annotations

import os
import tempfile

from qgis.core import (
    QgsFeature,
    QgsGeometry,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingOutputHtml,
    QgsProcessingOutputNumber,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
    QgsProcessingParameterVectorLayer,
    QgsProcessingProvider,
    QgsVectorFileWriter,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QIcon

from . import backend, options
from .compat import DOUBLE, FOLDER, INTEGER, POLYGONS, RASTER

ICON = os.path.join(os.path.dirname(__file__), "icon.png")
AUTO = "(automatic)"


def processing_parameter(item: dict):
    """The Processing parameter of one option definition (name in upper case)."""
    key, label = item["name"].upper(), item["label"] or item["name"]
    if item["name"] == "encoder":
        return QgsProcessingParameterEnum(key, label, options.ENCODERS,
                                          defaultValue=options.ENCODERS.index(options.form_default("encoder")))
    if item["choices"]:
        choices = ([f"{AUTO} {item['auto'] or ''}".strip()] if item["optional"] else []) + list(item["choices"])
        default = options.form_default(item["name"])
        param = QgsProcessingParameterEnum(key, label, choices,
                                           defaultValue=0 if default is None else choices.index(default))
    elif item["type"] in ("int", "float"):
        kind = INTEGER if item["type"] == "int" else DOUBLE
        if item["optional"] and item["auto"]:
            label = f"{label} (empty: {item['auto']})"
        param = QgsProcessingParameterNumber(key, label, kind, options.form_default(item["name"]), item["optional"],
                                             item["low"] if item["low"] is not None else -1e12,
                                             item["high"] if item["high"] is not None else 1e12)
    elif item["path"] == "bank":  # a folder picker; a .rsbank profile, default or none may be typed in
        param = QgsProcessingParameterFile(key, f"{label} (empty: the UC Merced profile rsprune ships; a folder, "
                                           "a .rsbank file or none)", FOLDER, optional=True)
    elif item["path"]:
        param = QgsProcessingParameterFile(key, label, FOLDER, optional=True)
    else:
        param = QgsProcessingParameterString(key, f"{label} (empty: {item['auto']})" if item["auto"] else label,
                                             optional=True)
    param.setHelp(item["help"])
    return param


def run_layer_parameter():
    """``RUN``: the tiles layer of a run's GeoPackage (the input of re-select, export and report)."""
    return QgsProcessingParameterVectorLayer("RUN", "RS-Prune tiles layer", [POLYGONS])


class _Styled(QgsProcessingLayerPostProcessorInterface):
    """Loads a run's stored QGIS style (and time) onto the layer Processing adds."""

    instances: list = []  # Processing holds post-processors by reference only

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802
        from .task import make_temporal

        if isinstance(layer, QgsVectorLayer):
            layer.loadDefaultStyle()
            make_temporal(layer)
            layer.triggerRepaint()

    @classmethod
    def attach(cls, context, destination: str, name: str) -> None:
        if context.willLoadLayerOnCompletion(destination):
            details = context.layerToLoadOnCompletionDetails(destination)
            details.name = name
            processor = cls()
            cls.instances.append(processor)
            details.setPostProcessor(processor)


class RsPruneAlgorithm(QgsProcessingAlgorithm):
    """What the RS-Prune algorithms share: icon, group, running one command with feedback."""

    def group(self):
        return ""

    def groupId(self):
        return ""

    def icon(self):
        return QIcon(ICON)

    def createInstance(self):
        return type(self)()

    def run_command(self, arguments: list[str], feedback, output: str | None = None) -> dict:
        """Run ``rsprune ARGUMENTS``; progress and stage names go to ``feedback``."""
        last = {"stage": None}

        def progress(percent: float, stage: str) -> None:
            feedback.setProgress(percent)
            if stage != last["stage"]:
                last["stage"] = stage
                feedback.setProgressText(options.STAGES.get(stage, stage))

        try:
            return backend.run_command(arguments, progress, feedback.isCanceled, output=output)
        except backend.Canceled:
            raise QgsProcessingException("canceled: nothing was written") from None
        except backend.BackendError as exc:
            raise QgsProcessingException(str(exc)) from None

    def run_file(self, parameters, context, name: str = "RUN") -> str:
        """The run behind a run layer parameter.

        Its GeoPackage, or the run folder whose ``tiles.gpkg`` the layer shows.
        """
        layer = self.parameterAsVectorLayer(parameters, name, context)
        path = layer.source().split("|")[0] if layer is not None else ""
        try:
            return backend.run_location(path)
        except backend.BackendError:
            raise QgsProcessingException("choose the tiles layer of an RS-Prune run (a GeoPackage or a run "
                                         "folder's tiles.gpkg)") from None

    def gpkg_destination(self, parameters, context, name: str = "OUTPUT") -> str:
        path = self.parameterAsOutputLayer(parameters, name, context)
        if not path.lower().endswith(".gpkg"):
            raise QgsProcessingException(f"{path}: the output must be a GeoPackage (.gpkg)")
        return path


class PruneAlgorithm(RsPruneAlgorithm):
    """rsprune:prune — tile, score and select the tiles of raster layers."""

    def name(self):
        return "prune"

    def displayName(self):
        return "Prune raster tiles"

    def shortHelpString(self):
        return ("Tiles the input rasters, drops low-information tiles by entropy and, with a prior "
                "bank, keeps a scene-balanced subset. Writes a GeoPackage of tile footprints with "
                "their status, styled for QGIS (temporal when the rasters are dated). An area of "
                "interest (polygon layer) or an extent limits the tiles to those touching it. Instead of "
                "(or beside) raster layers, a STAC catalogue gives one raster an item: its asset, by "
                "default visual, else red, green and blue stacked; items date their tiles.")

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterMultipleLayers("INPUT", "Raster layers", RASTER, optional=True))
        self.addParameter(QgsProcessingParameterFile(
            "STAC", "STAC catalogue (Catalog or Collection JSON, ItemCollection, stac-geoparquet) or its URL",
            optional=True, fileFilter="STAC (*.json *.geojson *.parquet)"))
        self.addParameter(QgsProcessingParameterString(
            "ASSET", "STAC asset (default: visual, else red, green and blue)", optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "AOI", "Area of interest (polygons)", [POLYGONS], optional=True))
        self.addParameter(QgsProcessingParameterExtent("EXTENT", "Area of interest (extent)", optional=True))
        for item in options.GUI_OPTIONS:
            self.addParameter(processing_parameter(item))
        self.addParameter(QgsProcessingParameterVectorDestination(
            "OUTPUT", "RS-Prune tiles", POLYGONS))

    def _value(self, parameters, context, item):
        key = item["name"].upper()
        if item["name"] == "encoder":
            return options.ENCODERS[self.parameterAsEnum(parameters, key, context)]
        if item["choices"]:
            index = self.parameterAsEnum(parameters, key, context)
            offset = 1 if item["optional"] else 0
            return None if index < offset else item["choices"][index - offset]
        if item["path"]:
            return self.parameterAsFile(parameters, key, context) or None
        if item["type"] == "str":
            return self.parameterAsString(parameters, key, context).strip() or None
        raw = parameters.get(key, options.form_default(item["name"]))
        if raw in (None, ""):
            return None
        return self.parameterAsInt(parameters, key, context) if item["type"] == "int" \
            else self.parameterAsDouble(parameters, key, context)

    def _area_of_interest(self, parameters, context, feedback) -> str | None:
        """A vector file of the area of interest: the polygon layer as a file, else the extent."""
        if parameters.get("AOI"):
            return self.parameterAsCompatibleSourceLayerPath(parameters, "AOI", context, ["gpkg", "shp", "geojson"],
                                                             "gpkg", feedback)
        if not parameters.get("EXTENT"):
            return None
        crs = self.parameterAsExtentCrs(parameters, "EXTENT", context)
        geometry = self.parameterAsExtentGeometry(parameters, "EXTENT", context, crs)
        layer = QgsVectorLayer(f"Polygon?crs={crs.authid() or crs.toWkt()}", "aoi", "memory")
        feature = QgsFeature()
        feature.setGeometry(QgsGeometry(geometry))
        layer.dataProvider().addFeatures([feature])
        path = os.path.join(tempfile.mkdtemp(prefix="rsprune-aoi-"), "aoi.gpkg")
        writer_options = QgsVectorFileWriter.SaveVectorOptions()
        writer_options.driverName = "GPKG"
        write = getattr(QgsVectorFileWriter, "writeAsVectorFormatV3", None) or QgsVectorFileWriter.writeAsVectorFormatV2
        write(layer, path, context.transformContext(), writer_options)
        return path

    def processAlgorithm(self, parameters, context, feedback):
        layers = self.parameterAsLayerList(parameters, "INPUT", context)
        stac = self.parameterAsFile(parameters, "STAC", context).strip() or None
        asset = self.parameterAsString(parameters, "ASSET", context).strip() or None
        values = {item["name"]: self._value(parameters, context, item) for item in options.GUI_OPTIONS}
        bank = values.pop("prior_bank")
        output = self.gpkg_destination(parameters, context)
        params = backend.PruneParams(
            rasters=[layer.source().split("|")[0] for layer in layers], output=output,
            prior_banks=[bank] if bank else [], aoi=self._area_of_interest(parameters, context, feedback),
            stac=stac, asset=asset, **values,
        )
        try:
            params.validate()
        except backend.BackendError as exc:
            raise QgsProcessingException(str(exc)) from None
        if backend.in_process_available() and backend.in_process_allowed():
            try:
                event = backend.run_in_process(params, lambda pct, stage: feedback.setProgress(pct),
                                               feedback.isCanceled)
            except backend.Canceled:
                raise QgsProcessingException("canceled: nothing was written") from None
        else:
            event = self.run_command(params.cli_arguments(), feedback, output)
        feedback.pushInfo(f"RS-Prune: {event['counts']}")
        _Styled.attach(context, output, "RS-Prune tiles")
        return {"OUTPUT": output}


class ReselectAlgorithm(RsPruneAlgorithm):
    """rsprune:reselect — a finished run at another keep ratio, in seconds (nothing re-encoded)."""

    def name(self):
        return "reselect"

    def displayName(self):
        return "Re-select a run at another keep ratio"

    def shortHelpString(self):
        return ("Selects again from the clusters, distances and entropy ranks stored in a run's GeoPackage: "
                "no pixel is read and nothing is encoded, so it takes seconds. Writes a new GeoPackage.")

    def initAlgorithm(self, config=None):
        self.addParameter(run_layer_parameter())
        keep = options.option("keep")
        self.addParameter(QgsProcessingParameterNumber("KEEP", keep["label"], DOUBLE,
                                                       options.form_default("keep"), False, 0.001, 1.0))
        self.addParameter(QgsProcessingParameterVectorDestination(
            "OUTPUT", "Re-selected tiles", POLYGONS))

    def processAlgorithm(self, parameters, context, feedback):
        run = self.run_file(parameters, context)
        output = self.gpkg_destination(parameters, context)
        keep = self.parameterAsDouble(parameters, "KEEP", context)
        event = self.run_command(["select", run, "-o", output, "--keep", repr(float(keep)), "--overwrite",
                                  "--progress-json"], feedback, output)
        feedback.pushInfo(f"RS-Prune: {event['counts']}")
        _Styled.attach(context, output, "RS-Prune tiles (re-selected)")
        return {"OUTPUT": output}


class ExportChipsAlgorithm(RsPruneAlgorithm):
    """rsprune:export_chips — the kept tiles as training chips."""

    FORMATS = ["tif", "png", "jpg"]
    LAYOUTS = ["flat", "by-scene"]

    def name(self):
        return "export_chips"

    def displayName(self):
        return "Export training chips of the kept tiles"

    def shortHelpString(self):
        return ("GeoTIFF chips (every band, georeferenced) or 8-bit RGB PNG/JPEG with metadata.jsonl that Hugging "
                "Face's imagefolder reads; by-scene puts each chip in its scene's folder (torchvision ImageFolder). "
                "Resumable.")

    def initAlgorithm(self, config=None):
        self.addParameter(run_layer_parameter())
        self.addParameter(QgsProcessingParameterEnum("FORMAT", "Format", self.FORMATS, defaultValue=0))
        self.addParameter(QgsProcessingParameterEnum("LAYOUT", "Layout", self.LAYOUTS, defaultValue=0))
        self.addParameter(QgsProcessingParameterFolderDestination("FOLDER", "Chips folder"))
        self.addOutput(QgsProcessingOutputNumber("CHIPS", "Chips"))

    def processAlgorithm(self, parameters, context, feedback):
        run = self.run_file(parameters, context)
        folder = self.parameterAsString(parameters, "FOLDER", context)
        fmt = self.FORMATS[self.parameterAsEnum(parameters, "FORMAT", context)]
        layout = self.LAYOUTS[self.parameterAsEnum(parameters, "LAYOUT", context)]
        event = self.run_command(["export", run, "--to", folder, "--format", fmt, "--layout", layout,
                                  "--progress-json"], feedback)
        return {"FOLDER": folder, "CHIPS": event["chips"]["chips"]}


class ReportAlgorithm(RsPruneAlgorithm):
    """rsprune:report — the HTML report of a run, with its gallery pages."""

    def name(self):
        return "report"

    def displayName(self):
        return "Write the HTML report of a run"

    def shortHelpString(self):
        return ("Counts, plots, the baselines table, parameters and one gallery page per scene (kept and left-out "
                "tiles, nearest and farthest from the centroid). Opens in the results viewer.")

    def initAlgorithm(self, config=None):
        self.addParameter(run_layer_parameter())
        self.addParameter(QgsProcessingParameterFileDestination("OUTPUT", "Report", "HTML files (*.html)"))
        self.addOutput(QgsProcessingOutputHtml("HTML", "RS-Prune report"))

    def processAlgorithm(self, parameters, context, feedback):
        run = self.run_file(parameters, context)
        output = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        self.run_command(["report", run, "-o", output, "--overwrite", "--progress-json"], feedback)
        return {"OUTPUT": output, "HTML": output}


class RsPruneProvider(QgsProcessingProvider):
    """The RS-Prune provider."""

    def id(self):
        return "rsprune"

    def name(self):
        return "RS-Prune"

    def icon(self):
        return QIcon(ICON)

    def supportsNonFileBasedOutput(self):  # noqa: N802  (a run is a GeoPackage file, never a memory layer)
        return False

    def defaultVectorFileExtension(self, has_geometry=True):  # noqa: N802
        return "gpkg"

    def supportedOutputVectorLayerExtensions(self):  # noqa: N802
        return ["gpkg"]

    def loadAlgorithms(self):
        for algorithm in (PruneAlgorithm(), ReselectAlgorithm(), ExportChipsAlgorithm(), ReportAlgorithm()):
            self.addAlgorithm(algorithm)
