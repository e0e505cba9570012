"""RS-Prune QGIS plugin: prune the tiles of loaded rasters and see the result on the map."""


def classFactory(iface):  # noqa: N802 (QGIS's name)
    """QGIS entry point."""
    from .plugin import RsPrunePlugin

    return RsPrunePlugin(iface)
