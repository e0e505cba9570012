"""Enum values that moved between QGIS 3.22 and QGIS 4 (Qt6), looked up once.

QGIS 4 drops the unscoped names (``QgsProcessing.TypeRaster``) for scoped ones
(``Qgis.ProcessingSourceType.Raster``); each constant here is the first name this QGIS has.
"""

from __future__ import annotations

from qgis.core import (
    Qgis,
    QgsProcessing,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsTask,
    QgsVectorLayerTemporalProperties,
)


def first(*candidates):
    """The first of ``(owner, "Scope.Name")`` pairs that resolves."""
    for owner, path in candidates:
        value = owner
        try:
            for part in path.split("."):
                value = getattr(value, part)
        except AttributeError:
            continue
        return value
    raise AttributeError(f"none of {[path for _, path in candidates]} exists in this QGIS")


RASTER = first((Qgis, "ProcessingSourceType.Raster"), (QgsProcessing, "TypeRaster"))
POLYGONS = first((Qgis, "ProcessingSourceType.VectorPolygon"), (QgsProcessing, "TypeVectorPolygon"))
INTEGER = first((Qgis, "ProcessingNumberParameterType.Integer"), (QgsProcessingParameterNumber, "Integer"))
DOUBLE = first((Qgis, "ProcessingNumberParameterType.Double"), (QgsProcessingParameterNumber, "Double"))
FOLDER = first((Qgis, "ProcessingFileParameterBehavior.Folder"), (QgsProcessingParameterFile, "Folder"))
CAN_CANCEL = first((QgsTask, "Flag.CanCancel"), (QgsTask, "CanCancel"))
INFO = first((Qgis, "MessageLevel.Info"), (Qgis, "Info"))
WARNING = first((Qgis, "MessageLevel.Warning"), (Qgis, "Warning"))
CRITICAL = first((Qgis, "MessageLevel.Critical"), (Qgis, "Critical"))
SUCCESS = first((Qgis, "MessageLevel.Success"), (Qgis, "Success"))
TIME_FROM_FIELD = first((Qgis, "VectorTemporalMode.FeatureDateTimeInstantFromField"),
                        (QgsVectorLayerTemporalProperties, "ModeFeatureDateTimeInstantFromField"))


def is_raster(layer) -> bool:
    """Whether a map layer is a raster layer, in any QGIS."""
    from qgis.core import QgsRasterLayer

    return isinstance(layer, QgsRasterLayer)
