"""QGIS tests: real QGIS (Debian's, headless) through pytest-qgis; the backend is the repo's CLI."""

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RSPRUNE_SHARED_DATA", REPO.parent / "shared" / "data"))
RGB_BYTE = SHARED / "geotiff" / "rasterio-tests" / "RGB.byte.tif"
ARTIFACTS = REPO / "qgis-test-output"

sys.path.insert(0, str(REPO / "qgis_plugin"))
os.environ.setdefault("RSPRUNE_CLI", str(REPO / ".venv" / "bin" / "rsprune"))


@pytest.fixture
def plugin(qgis_iface, qgis_processing, monkeypatch):
    """The plugin loaded like QGIS loads it; toolbar icons recorded."""
    import rsprune

    icons = []
    monkeypatch.setattr(qgis_iface, "addToolBarIcon", icons.append, raising=False)
    instance = rsprune.classFactory(qgis_iface)
    instance.initGui()
    instance.toolbar_icons = icons
    yield instance
    instance.unload()


@pytest.fixture
def raster_layer(qgis_new_project):
    from qgis.core import QgsProject, QgsRasterLayer

    assert RGB_BYTE.exists(), f"real test data missing: {RGB_BYTE}"
    layer = QgsRasterLayer(str(RGB_BYTE), "RGB.byte")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


def wait_for(plugin, timeout=300):
    """Spin the event loop until the plugin's task has finished (finished() runs on this thread)."""
    import time

    from qgis.PyQt.QtCore import QCoreApplication

    deadline = time.time() + timeout
    while plugin.outcome is None and time.time() < deadline:
        QCoreApplication.processEvents()
        time.sleep(0.02)
    assert plugin.outcome is not None, "the task did not finish in time"
    return plugin.outcome
