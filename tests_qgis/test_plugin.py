"""The QGIS plugin in real QGIS: loading, the button, Processing, the task, style, render, cancel."""

import os
import shutil

import numpy as np
import pytest
from conftest import ARTIFACTS, RGB_BYTE, wait_for
from qgis.core import QgsApplication, QgsMapRendererParallelJob, QgsMapSettings, QgsProject, QgsVectorLayer
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor

KEPT = (26, 152, 80)


def params(output, **kw):
    from rsprune.backend import PruneParams

    return PruneParams(rasters=[str(RGB_BYTE)], output=str(output), tile_size=128, keep=0.3, **kw)


def test_plugin_loads_with_button_menu_and_provider(plugin):
    assert plugin.action in plugin.toolbar_icons
    assert plugin.action.objectName() == "rsprune_prune"
    assert QgsApplication.processingRegistry().providerById("rsprune") is not None
    assert QgsApplication.processingRegistry().algorithmById("rsprune:prune") is not None


def test_button_without_raster_warns(plugin, qgis_iface, qgis_new_project):
    from qgis.core import Qgis

    plugin.run()
    assert any("select a raster" in m for m in qgis_iface.messageBar().get_messages(Qgis.Warning))


def test_processing_algorithm_runs_through_the_cli(plugin, raster_layer, tmp_path):
    import processing

    out = tmp_path / "dir with spaces ü" / "prune.gpkg"
    out.parent.mkdir()
    result = processing.run("rsprune:prune", {"INPUT": [raster_layer], "TILE_SIZE": 128, "KEEP": 0.3,
                                              "ENCODER": 0, "OUTPUT": str(out)})
    assert result["OUTPUT"] == str(out)
    layer = QgsVectorLayer(f"{out}|layername=tiles", "tiles", "ogr")
    assert layer.isValid() and layer.featureCount() == 30


def test_task_adds_the_styled_layer_above_the_raster_and_renders(plugin, raster_layer, tmp_path, qgis_iface):
    from qgis.core import Qgis

    out = tmp_path / "task.gpkg"
    plugin.start(params(out), above=raster_layer, use_in_process=False)
    outcome = wait_for(plugin)
    assert outcome["ok"], outcome["error"]
    layer = outcome["layer"]
    assert layer is not None and layer.featureCount() == 30
    assert layer.renderer().type() == "categorizedSymbol"  # the style stored in the GeoPackage
    order = [node.layer() for node in QgsProject.instance().layerTreeRoot().findLayers()]
    assert order.index(layer) < order.index(raster_layer)
    # keep 0.3 of the 19 tiles with data (the 11 collar tiles are not data)
    assert any("6 tiles kept" in m for m in qgis_iface.messageBar().get_messages(Qgis.Success))
    # render the map and look for the kept tiles' colour over the raster
    settings = QgsMapSettings()
    settings.setLayers([layer, raster_layer])
    settings.setExtent(raster_layer.extent())
    settings.setOutputSize(QSize(800, 730))
    settings.setDestinationCrs(raster_layer.crs())
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    image = job.renderedImage()
    ARTIFACTS.mkdir(exist_ok=True)
    image.save(str(ARTIFACTS / "qgis-map.png"))
    pixels = [QColor(image.pixel(x, y)).getRgb()[:3] for x in range(0, 800, 4) for y in range(0, 730, 4)]
    near_kept = sum(1 for p in pixels if np.abs(np.subtract(p, KEPT)).sum() < 40)
    assert near_kept > 50


def test_cancel_stops_and_writes_nothing(plugin, tmp_path):
    from rsprune.backend import PruneParams

    big = sorted((RGB_BYTE.parents[1] / "opengeos-data" / "naip").glob("*.tif"))
    out = tmp_path / "canceled.gpkg"
    task = plugin.start(PruneParams(rasters=[str(p) for p in big], output=str(out), tile_size=16, keep=0.3),
                        use_in_process=False)
    from qgis.PyQt.QtCore import QCoreApplication

    while task.progress() <= 0 and plugin.outcome is None:
        QCoreApplication.processEvents()
    task.cancel()
    outcome = wait_for(plugin)
    assert not outcome["ok"] and outcome["error"] is None  # canceled, not failed
    assert not out.exists() and not list(tmp_path.glob(".*.tmp*"))


def test_hostile_file_names_are_just_names(plugin, tmp_path):
    """Quotes, ;, $(...), newlines and non-ASCII in paths: passed as arguments, never a shell."""
    hostile = tmp_path / "a'b\"c; rm -rf ~ $(touch pwned)\nné.tif"
    shutil.copy(RGB_BYTE, hostile)
    out = tmp_path / "out $(x) && 'y' é.gpkg"
    from rsprune.backend import PruneParams

    plugin.start(PruneParams(rasters=[str(hostile)], output=str(out), tile_size=128, keep=0.3), use_in_process=False)
    outcome = wait_for(plugin)
    assert outcome["ok"], outcome["error"]
    assert out.exists() and outcome["layer"].featureCount() == 30
    assert not (tmp_path / "pwned").exists() and not list(tmp_path.parent.glob("pwned"))


def test_backend_errors_reach_the_message_bar(plugin, tmp_path, qgis_iface):
    from qgis.core import Qgis
    from rsprune.backend import PruneParams

    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    plugin.start(PruneParams(rasters=[str(text)], output=str(tmp_path / "x.gpkg")), use_in_process=False)
    outcome = wait_for(plugin)
    assert not outcome["ok"] and "not a raster GDAL can open" in outcome["error"]
    assert any("not a raster" in m for m in qgis_iface.messageBar().get_messages(Qgis.Critical))


def test_dialog_defaults_and_validation(plugin, raster_layer, qgis_iface):
    from rsprune.backend import BackendError
    from rsprune.dialog import PruneDialog

    qgis_iface.setActiveLayer(raster_layer)
    layers, paths = plugin.selected_rasters()
    assert layers == [raster_layer] and paths == [str(RGB_BYTE)]
    dialog = PruneDialog(paths)
    p = dialog.params()
    assert (p.tile_size, p.keep, p.stage1_keep, p.encoder) == (256, 0.15, None, "efficientnet-lite0")
    assert "--stage1-keep" not in p.cli_arguments()  # rsprune's own default for the rule in force
    assert p.output.endswith("RGB.byte-rsprune.gpkg") and p.prior_banks == []
    dialog.output.setText("/tmp/out.shp")
    with pytest.raises(BackendError, match="GeoPackage"):
        dialog.params().validate()
    dialog.prior_bank.setText("/no/such/folder")
    dialog.output.setText("/tmp/out.gpkg")
    with pytest.raises(BackendError, match="does not exist"):
        dialog.params().validate()


def test_a_vector_layer_is_not_a_raster(plugin, qgis_iface, qgis_new_project, tmp_path):
    from qgis.core import QgsVectorLayer
    from rsprune.backend import BackendError

    layer = QgsVectorLayer("Point?crs=EPSG:4326", "points", "memory")
    QgsProject.instance().addMapLayer(layer)
    qgis_iface.setActiveLayer(layer)
    with pytest.raises(BackendError, match="select a raster"):
        plugin.selected_rasters()


def test_dialog_and_processing_are_built_from_the_packages_option_definitions(plugin, raster_layer):
    from qgis.core import QgsApplication
    from rsprune import options
    from rsprune.dialog import PruneDialog

    names = [item["name"] for item in options.GUI_OPTIONS]
    assert {"tile_size", "stride", "keep", "stage1_keep", "entropy_min", "encoder", "max_per_cell",
            "prior_bank"} <= set(names)
    dialog = PruneDialog([str(RGB_BYTE)])
    keep = options.option("keep")
    assert dialog.keep.toolTip() == keep["help"] and dialog.keep.value() == keep["suggested"]
    assert dialog.tile_size.minimum() == options.option("tile_size")["low"]
    dialog.stride.setValue(dialog.stride.minimum())
    assert dialog.params().stride is None  # the special value stands for "= tile size"
    algorithm = QgsApplication.processingRegistry().algorithmById("rsprune:prune")
    defined = {p.name() for p in algorithm.parameterDefinitions()}
    assert {name.upper() for name in names} <= defined
    cap = algorithm.parameterDefinition("MAX_PER_CELL")  # the per-location cap (#16)
    assert cap.defaultValue() == 1 and cap.minimum() == 0
    assert dialog.params().max_per_cell == 1
    tile = algorithm.parameterDefinition("TILE_SIZE")
    assert tile.defaultValue() == 256 and tile.minimum() == 8 and tile.help() == options.option("tile_size")["help"]


def test_a_dated_run_is_a_temporal_layer(plugin, qgis_new_project, tmp_path):
    """Tiles with acquisition dates (two NAIP dates, found in the file names) animate in the
    temporal controller; an undated run's layer is not temporal."""
    import subprocess

    from conftest import SHARED
    from rsprune.task import add_result_layer

    naip = sorted((SHARED / "geotiff" / "opengeos-data" / "naip").glob("*.tif"))[:2]
    assert len(naip) == 2, "real test data missing: the NAIP stack"
    runs = {}
    for name, extra in (("dated", ["--date-pattern", r"_(\d{8})\.tif$"]), ("undated", [])):
        out = tmp_path / f"{name}.gpkg"
        subprocess.run([os.environ["RSPRUNE_CLI"], "run", *map(str, naip), "-o", str(out), "--tile-size", "256",
                        "--keep", "0.5", *extra], check=True, capture_output=True)
        runs[name] = add_result_layer(str(out))
    dated = runs["dated"]
    properties = dated.temporalProperties()
    assert properties.isActive() and properties.startField() == "date"
    years = {f["date"].date().year() for f in dated.getFeatures()}
    assert years == {2009, 2010}
    assert not runs["undated"].temporalProperties().isActive()
