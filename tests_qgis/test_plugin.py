"""The QGIS plugin in real QGIS: loading, the button, Processing, the task, style, render, cancel."""

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from conftest import ARTIFACTS, RGB_BYTE, wait_for
from qgis.core import QgsApplication, QgsMapRendererParallelJob, QgsMapSettings, QgsProject, QgsVectorLayer
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor

KEPT = (26, 152, 80)


#: What a canceled command must stop within: far above the second or so it takes (see
#: benchmarks/bench_cancel.py), far below the minutes the canceled work would run, so the test
#: holds on a loaded machine and still fails if Cancel were ignored.
STOPPED_WITHIN = 45.0

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
    # a prior-bank profile typed into the folder field, as it is given to `rsprune run`
    from conftest import REPO

    for bank, expected in ((REPO / "rsprune_geo" / "shipped" / "ucmerced.rsbank", "ucmerced.rsbank"), ("none", None)):
        out = tmp_path / f"{expected or 'none'}.gpkg"
        processing.run("rsprune:prune", {"INPUT": [raster_layer], "TILE_SIZE": 128, "KEEP": 0.3, "ENCODER": 0,
                                         "PRIOR_BANK": str(bank), "OUTPUT": str(out)})
        info = json.loads(subprocess.run([os.environ["RSPRUNE_CLI"], "info", str(out), "--json"], capture_output=True,
                                         text=True, check=True).stdout)
        assert (info["stage2"]["prior_bank"][0].endswith(expected) if expected else info["stage2"] is None), info


def test_processing_prune_takes_a_stac_catalogue_instead_of_layers(plugin, tmp_path):
    from pathlib import Path

    import processing

    # the raster's grid, read by the backend's Python (GDAL's bindings in QGIS's own process crash its exit)
    probe = ("import json, sys, rasterio; s = rasterio.open(sys.argv[1]); "
             "print(json.dumps([s.crs.to_epsg(), [s.height, s.width], list(s.transform)[:6]]))")
    python = Path(os.environ["RSPRUNE_CLI"]).with_name("python")
    epsg, shape, transform = json.loads(subprocess.run([str(python), "-c", probe, str(RGB_BYTE)], capture_output=True,
                                                       text=True, check=True).stdout)
    xres, xrot, x0, yrot, yres, y0 = transform
    item = {"type": "Feature", "stac_version": "1.1.0", "id": "rgb-byte", "geometry": None, "bbox": None,
            "links": [], "properties": {"datetime": "2020-06-01T00:00:00Z", "proj:code": f"EPSG:{epsg}",
                                        "proj:shape": shape,
                                        "proj:transform": [xres, xrot, x0, yrot, yres, y0]},
            "assets": {"image": {"href": str(RGB_BYTE)}}}
    catalogue = tmp_path / "items.geojson"
    catalogue.write_text(json.dumps({"type": "FeatureCollection", "features": [item]}))
    out = tmp_path / "stac.gpkg"
    result = processing.run("rsprune:prune", {"STAC": str(catalogue), "ASSET": "image", "TILE_SIZE": 128, "KEEP": 0.3,
                                              "ENCODER": 0, "PRIOR_BANK": "none", "OUTPUT": str(out)})
    assert result["OUTPUT"] == str(out)
    layer = QgsVectorLayer(f"{out}|layername=tiles", "tiles", "ogr")
    assert layer.isValid() and layer.featureCount() == 30
    info = json.loads(subprocess.run([os.environ["RSPRUNE_CLI"], "info", str(out), "--json"], capture_output=True,
                                     text=True, check=True).stdout)
    assert "rgb-byte" in json.dumps(info["inputs"])
    # (no raster and no catalogue is one line: PruneParams.validate, tested in tests/test_qgis_backend.py;
    # a processing.run that failed here crashed QGIS 3.22 at exit, rc 139)


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
    said = f"6 tiles kept, 24 pruned; written to {out}"  # plurals right, and where the run went
    assert f"RS-Prune:{said}" in qgis_iface.messageBar().get_messages(Qgis.Success)
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
    assert "UC Merced profile" in dialog.prior_bank.placeholderText()  # empty: the shipped profile
    dialog.prior_bank.setText("/no/such/folder")
    dialog.output.setText("/tmp/out.gpkg")
    with pytest.raises(BackendError, match="no such prior bank folder or profile"):
        dialog.params().validate()
    for word in ("default", "none"):
        dialog.prior_bank.setText(word)
        dialog.params().validate()
        args = dialog.params().cli_arguments()
        assert args[args.index("--prior-bank") + 1] == word


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


def test_processing_chain_prune_aoi_reselect_export_report(plugin, raster_layer, tmp_path):
    """The algorithms chain as a model would: prune (area of interest, bands, stage-1 rule) writes a
    vector destination, re-select, export and report take its layer."""
    import processing
    from qgis.core import QgsProcessingContext, QgsProcessingFeedback, QgsRectangle

    texts = []

    class Recording(QgsProcessingFeedback):
        def setProgressText(self, text):  # noqa: N802
            texts.append(text)
            super().setProgressText(text)

    context, feedback = QgsProcessingContext(), Recording()
    extent = raster_layer.extent()
    half = QgsRectangle(extent.xMinimum(), extent.yMinimum(), extent.center().x(), extent.yMaximum())
    pruned = processing.run("rsprune:prune", {
        "INPUT": [raster_layer], "TILE_SIZE": 128, "KEEP": 0.3, "ENCODER": 0, "BANDS": "3,2,1",
        "STAGE1": 2, "MAX_NODATA": 0.5, "EXTENT": f"{half.xMinimum()},{half.xMaximum()},{half.yMinimum()},"
        f"{half.yMaximum()} [{raster_layer.crs().authid()}]", "OUTPUT": str(tmp_path / "pruned.gpkg")},
        context=context, feedback=feedback)
    layer = QgsVectorLayer(f"{pruned['OUTPUT']}|layername=tiles", "tiles", "ogr")
    assert layer.isValid() and 0 < layer.featureCount() < 30  # only tiles touching the left half
    loaded = processing.runAndLoadResults("rsprune:prune", {  # as the toolbox runs it: QGIS loads it, styled
        "INPUT": [raster_layer], "TILE_SIZE": 128, "KEEP": 0.3, "ENCODER": 0, "OUTPUT": str(tmp_path / "l.gpkg")})
    shown = QgsProject.instance().mapLayersByName("RS-Prune tiles")
    assert loaded and shown and shown[-1].renderer().type() == "categorizedSymbol"
    assert "windows: read once, scored (and encoded)" in texts  # feedback names the stages
    import sqlite3

    with sqlite3.connect(pruned["OUTPUT"]) as db:
        parameters = json.loads(db.execute("select parameters from runs").fetchone()[0])
    assert parameters["bands"] == [3, 2, 1] and parameters["stage1"] == "paper" and parameters["max_nodata"] == 0.5
    reselected = processing.run("rsprune:reselect", {"RUN": layer, "KEEP": 0.6,
                                                     "OUTPUT": str(tmp_path / "reselected.gpkg")})
    again = QgsVectorLayer(f"{reselected['OUTPUT']}|layername=tiles", "tiles", "ogr")
    kept = [f for f in again.getFeatures() if f["status"] == "kept"]
    assert again.featureCount() == layer.featureCount() and len(kept) > 0
    chips = processing.run("rsprune:export_chips", {"RUN": again, "FORMAT": 1, "LAYOUT": 0,
                                                    "FOLDER": str(tmp_path / "chips")})
    assert chips["CHIPS"] == len(kept) and len(list((tmp_path / "chips").glob("*.png"))) == len(kept)
    report = processing.run("rsprune:report", {"RUN": again, "OUTPUT": str(tmp_path / "report.html")})
    assert report["HTML"] == str(tmp_path / "report.html") and (tmp_path / "report.html").stat().st_size > 10_000


def test_a_model_chains_prune_then_reselect(plugin, raster_layer, tmp_path):
    """In the graphical modeler: prune's output feeds re-select's run input."""
    import processing
    from qgis.core import (
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterMultipleLayers,
    )

    model = QgsProcessingModelAlgorithm("prune then reselect", "rsprune")
    model.addModelParameter(QgsProcessingParameterMultipleLayers("rasters", "rasters", 3),
                            QgsProcessingModelParameter("rasters"))
    prune = QgsProcessingModelChildAlgorithm("rsprune:prune")
    prune.setChildId("prune")
    prune.addParameterSources("INPUT", [QgsProcessingModelChildParameterSource.fromModelParameter("rasters")])
    prune.addParameterSources("TILE_SIZE", [QgsProcessingModelChildParameterSource.fromStaticValue(128)])
    prune.addParameterSources("KEEP", [QgsProcessingModelChildParameterSource.fromStaticValue(0.3)])
    prune.addParameterSources("OUTPUT", [QgsProcessingModelChildParameterSource.fromStaticValue(
        str(tmp_path / "model-pruned.gpkg"))])
    model.addChildAlgorithm(prune)
    reselect = QgsProcessingModelChildAlgorithm("rsprune:reselect")
    reselect.setChildId("reselect")
    reselect.addParameterSources("RUN", [QgsProcessingModelChildParameterSource.fromChildOutput("prune", "OUTPUT")])
    reselect.addParameterSources("KEEP", [QgsProcessingModelChildParameterSource.fromStaticValue(0.5)])
    output = QgsProcessingModelOutput("reselected", "re-selected tiles")
    output.setChildId("reselect")
    output.setChildOutputName("OUTPUT")
    reselect.setModelOutputs({"reselected": output})
    model.addChildAlgorithm(reselect)
    result = processing.run(model, {"rasters": [raster_layer], "reselect:reselected": str(tmp_path / "chained.gpkg")})
    chained = QgsVectorLayer(f"{tmp_path / 'chained.gpkg'}|layername=tiles", "tiles", "ogr")
    assert result and chained.isValid() and chained.featureCount() == 30
    assert sum(f["status"] == "kept" for f in chained.getFeatures()) == 10  # 0.5 of the 19 tiles with data


def test_stage_2_with_the_uc_merced_bank_progress_and_cancel_during_encoding(plugin, tmp_path):
    """A stage-2 run in QGIS: progress rises to 100; a second run canceled while encoding stops
    (long before it would have finished, whatever else the machine is doing) and leaves no file.
    How fast a cancel stops is a benchmark figure (benchmarks/bench_cancel.py), not a test's."""
    import time

    from conftest import SHARED
    from qgis.PyQt.QtCore import QCoreApplication
    from rsprune.backend import PruneParams

    bank = SHARED / "scenes" / "ucmerced"
    naip = sorted((SHARED / "geotiff" / "opengeos-data" / "naip").glob("*.tif"))
    done = tmp_path / "stage2.gpkg"
    task = plugin.start(PruneParams(rasters=[str(p) for p in naip[:2]], output=str(done), tile_size=128,
                                    keep=0.15, encoder="rcf-empirical", prior_banks=[str(bank)]),
                        use_in_process=False)
    values = []
    task.progressChanged.connect(values.append)
    outcome = wait_for(plugin)
    assert outcome["ok"], outcome["error"]
    assert values and values == sorted(values) and values[-1] == 100
    assert outcome["event"]["counts"]["kept"] == 10
    stopped = tmp_path / "canceled.gpkg"
    task = plugin.start(PruneParams(rasters=[str(p) for p in naip], output=str(stopped), tile_size=32, keep=0.15,
                                    encoder="efficientnet-lite0", prior_banks=[str(bank)]), use_in_process=False)
    while task.progress() < 46 and plugin.outcome is None:  # into the encoding stage (45-90%)
        QCoreApplication.processEvents()
        time.sleep(0.02)
    assert plugin.outcome is None, "the run ended before it could be canceled"
    start = time.perf_counter()
    task.cancel()
    outcome = wait_for(plugin)
    assert time.perf_counter() - start < STOPPED_WITHIN  # the whole run takes minutes
    assert not outcome["ok"] and outcome["error"] is None
    assert not stopped.exists() and not list(tmp_path.glob(".rsprune-*"))


def test_dialog_output_coverage_and_choices(plugin, raster_layer, tmp_path, monkeypatch):
    from qgis.core import QgsProcessingUtils, QgsSettings
    from rsprune import dialog as dialog_module
    from rsprune.dialog import PruneDialog

    QgsSettings().remove(dialog_module.OUTPUT_FOLDER_KEY)
    home = tmp_path / "home"
    (home / "Documents").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    dialog = PruneDialog([str(RGB_BYTE)])
    # kept where the user keeps things, not in QGIS's temporary folder (emptied at exit), nor beside the source
    kept = home / "Documents" / dialog_module.RUNS_FOLDER
    assert os.path.dirname(dialog.output.text()) == str(kept) and kept.is_dir()
    assert dialog.where.text().startswith(str(kept)) and "outlives QGIS" in dialog.where.text()
    dialog.temporary.setChecked(True)  # a temporary output stays a choice
    assert os.path.dirname(dialog.output.text()) == QgsProcessingUtils.tempFolder()
    assert "QGIS deletes the run when it exits" in dialog.where.text()
    dialog.temporary.setChecked(False)
    assert os.path.dirname(dialog.output.text()) == str(kept)
    assert "RGB.byte.tif (791×718 px): 69% tiled" in dialog.coverage.text() and "pad" in dialog.coverage.text()
    dialog.edge.setCurrentIndex(dialog.edge.findData("pad"))
    assert dialog.coverage.text() == "the tile grid covers every raster" and dialog.params().edge == "pad"
    assert dialog.params().stage1 is None and dialog.params().bands is None
    dialog.stage1.setCurrentIndex(dialog.stage1.findData("paper"))
    dialog.bands.setText("3,2,1")
    args = dialog.params().cli_arguments()
    assert args[args.index("--stage1") + 1] == "paper" and args[args.index("--bands") + 1] == "3,2,1"
    dialog_module.remember_output_folder(str(tmp_path))
    assert os.path.dirname(PruneDialog([str(RGB_BYTE)]).output.text()) == str(tmp_path)
    QgsSettings().remove(dialog_module.OUTPUT_FOLDER_KEY)


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory):
    """The package's wheel, as `make plugin` ships it in the zip."""
    import sys

    from conftest import REPO

    folder = tmp_path_factory.mktemp("wheelhouse")
    python = REPO / ".venv" / "bin" / "python"
    subprocess.run([str(python if python.exists() else sys.executable), "-m", "pip", "wheel", "-q", "--no-deps",
                    "-w", str(folder), str(REPO)], check=True)
    return folder


def test_set_up_backend_builds_a_working_backend(plugin, wheelhouse, tmp_path, monkeypatch, qgis_iface):
    """RS-Prune > Set up backend: an environment outside the plugin folder, rsprune_geo from the local
    wheelhouse, dependencies from the package index (the versions tested together), a live log, a
    Test that checks the version, and Diagnostics that report it."""
    import time

    from conftest import REPO
    from qgis.core import QgsSettings
    from qgis.PyQt.QtCore import QCoreApplication
    from rsprune import backend, backend_setup

    monkeypatch.setattr(backend_setup, "plugin_constraints", lambda: str(REPO / "constraints.txt"))
    previous = QgsSettings().value(backend.SETTINGS_KEY, "", type=str)
    dialog = plugin.set_up_backend()
    assert not dialog.environment.text().startswith(backend_setup.PLUGIN_DIR)  # survives plugin updates
    assert not dialog.with_torch.isChecked() and not dialog.cpu_torch.isEnabled()  # lean unless asked
    assert not dialog.plan().with_torch and backend_setup.TORCH_SIZE in dialog.with_torch.text()
    environment = tmp_path / "rsprune-backend"
    dialog.environment.setText(str(environment))
    dialog.wheelhouse.setText(str(wheelhouse))
    outcome = {}
    task = dialog.start()
    task.on_done = lambda ok, t: (dialog._done(ok, t), outcome.update(ok=ok, error=t.error))
    deadline = time.time() + 900
    seen_while_running = 0
    while not outcome and time.time() < deadline:
        QCoreApplication.processEvents()
        seen_while_running = max(seen_while_running, dialog.log.blockCount())
        time.sleep(0.05)
    try:
        assert outcome.get("ok"), (outcome, dialog.log.toPlainText()[-2000:])
        assert seen_while_running > 5  # the log was live
        cli = backend_setup.environment_cli(str(environment))
        assert QgsSettings().value(backend.SETTINGS_KEY, "", type=str) == cli == backend.configured_cli()
        assert dialog.test() == "0.1.0" and "test passed" in dialog.status.text()
        report = plugin.copy_diagnostics()
        assert "backend rsprune_geo: 0.1.0" in report and "QGIS 3." in report
        assert "torch: not installed (the default install)" in report and "onnxruntime 1." in report
        assert report == QCoreApplication.instance().clipboard().text()
        # the button's run on the torch-free backend: both stages, with the prior-bank profile it ships
        plugin.start(backend.PruneParams(rasters=[str(RGB_BYTE)], output=str(tmp_path / "lean.gpkg"), tile_size=128,
                                         keep=0.3), use_in_process=False)
        ran = wait_for(plugin)
        assert ran["ok"], ran["error"]
        info = json.loads(subprocess.run([cli, "info", str(tmp_path / "lean.gpkg"), "--json"], capture_output=True,
                                         text=True, check=True).stdout)
        assert info["stage2"]["prior_bank"][0].endswith("ucmerced.rsbank") and info["counts"]["kept"] > 0
    finally:
        QgsSettings().setValue(backend.SETTINGS_KEY, previous)


def test_setup_plan_cancel_and_version_check(tmp_path, monkeypatch):
    import sys
    import time

    from rsprune import backend, backend_setup, options

    plan = backend_setup.SetupPlan(environment=str(tmp_path / "env"), python=sys.executable, wheel="/w/x.whl",
                                   find_links=["/wheels"], with_torch=True, cpu_torch=True, constraints="/c.txt")
    steps = plan.commands()
    assert steps[0] == [sys.executable, "-m", "venv", str(tmp_path / "env")]
    assert steps[1][-3:] == ["torchvision", "--index-url", backend_setup.CPU_TORCH_INDEX]
    assert steps[2][-1] == "/w/x.whl[plots,torch]" and "--constraint" in steps[2] and "--find-links" in steps[2]
    lean = backend_setup.SetupPlan(environment=str(tmp_path / "env"), python=sys.executable, wheel="/w/x.whl",
                                   cpu_torch=True).commands()  # CPU-only means nothing without PyTorch
    assert len(lean) == 2 and lean[1][-1] == "/w/x.whl[plots]" and not any("torch" in arg for arg in lean[1])
    index = backend_setup.SetupPlan(environment="e", python=sys.executable, with_torch=True).commands()
    assert index[1][-1] == f"rsprune_geo[plots,torch]=={options.PACKAGE_VERSION}"
    start, lines = time.perf_counter(), []
    with pytest.raises(backend.Canceled):
        backend_setup.stream([sys.executable, "-c", "import time\nprint('working', flush=True)\ntime.sleep(120)"],
                             lines.append, lambda: time.perf_counter() - start > 1.0)
    assert time.perf_counter() - start < STOPPED_WITHIN and lines == ["working"]  # stopped, not waited out
    with pytest.raises(backend.BackendError, match="not rsprune_geo's command"):
        backend_setup.check_backend("/bin/echo")
    cli = os.environ["RSPRUNE_CLI"]
    assert backend_setup.check_backend(cli) == "0.1.0"
    monkeypatch.setattr(options, "PACKAGE_VERSION", "9.0")
    with pytest.raises(backend.BackendError, match="older than 9.0"):
        backend_setup.check_backend(cli)


def test_a_stale_error_is_cleared_by_a_later_success_and_in_process_is_opt_in(plugin, tmp_path, monkeypatch,
                                                                               qgis_iface):
    from qgis.core import QgsSettings
    from qgis.gui import QgsMessageBar
    from rsprune import backend
    from rsprune.backend import PruneParams

    bar = QgsMessageBar()
    monkeypatch.setattr(qgis_iface, "messageBar", lambda: bar)
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    plugin.start(PruneParams(rasters=[str(text)], output=str(tmp_path / "x.gpkg")), use_in_process=False)
    assert not wait_for(plugin)["ok"]
    assert [item.text() for item in bar.items()] and "not a raster" in bar.items()[-1].text()
    plugin.start(PruneParams(rasters=[str(RGB_BYTE)], output=str(tmp_path / "ok.gpkg"), tile_size=128, keep=0.3),
                 use_in_process=False)
    assert wait_for(plugin)["ok"]
    assert not any("not a raster" in item.text() for item in bar.items())  # the stale error is gone
    assert QgsSettings().value(backend.IN_PROCESS_KEY, False, type=bool) is False  # off unless asked
    plugin.in_process_action.setChecked(True)
    assert backend.in_process_allowed()
    plugin.in_process_action.setChecked(False)
    assert not backend.in_process_allowed()


def test_the_dialog_flow_from_the_selected_layer_to_the_styled_result(plugin, raster_layer, qgis_iface,
                                                                       monkeypatch, tmp_path):
    """Press the button with a raster selected: the dialog opens on it, OK runs the task, and the
    styled tiles layer lands above the raster."""
    from rsprune.dialog import PruneDialog

    qgis_iface.setActiveLayer(raster_layer)
    seen = {}

    def accept(dialog):
        seen["rasters"] = dialog.rasters
        dialog.tile_size.setValue(128)
        dialog.keep.setValue(0.3)
        dialog.output.setText(str(tmp_path / "flow.gpkg"))
        return 1

    monkeypatch.setattr(PruneDialog, "exec", accept)
    plugin.run()
    outcome = wait_for(plugin)
    assert seen["rasters"] == [str(RGB_BYTE)] and outcome["ok"], outcome["error"]
    layer = outcome["layer"]
    assert layer.featureCount() == 30 and layer.renderer().type() == "categorizedSymbol"
    order = [node.layer() for node in QgsProject.instance().layerTreeRoot().findLayers()]
    assert order.index(layer) < order.index(raster_layer)


def test_open_a_run_folder_with_its_geopackage_or_the_backends(plugin, tmp_path):
    """A run folder opens on the map from its run.json: its tiles.gpkg when the run wrote one,
    else one the backend writes into the folder (QGIS's GDAL here reads no GeoParquet); either is
    styled by status, and Processing re-selects the run behind the layer."""
    from qgis import processing
    from qgis.core import QgsVectorLayer

    cli = os.environ["RSPRUNE_CLI"]
    small, big = tmp_path / "small", tmp_path / "big"
    stage1 = ["--tile-size", "128", "--prior-bank", "none", "-q"]  # stage 1 alone: the paper's top 30%
    subprocess.run([cli, "run", str(RGB_BYTE), "-o", str(small), *stage1], check=True)
    subprocess.run([cli, "run", str(RGB_BYTE), "-o", str(big), "--gpkg-max-tiles", "0", *stage1], check=True)
    assert (small / "tiles.gpkg").exists() and not (big / "tiles.gpkg").exists()
    for run, chosen in ((small, small / "run.json"), (big, big)):
        plugin.open_run(str(chosen))
        outcome = wait_for(plugin)
        assert outcome["ok"], outcome["error"]
        layer = outcome["layer"]
        assert layer.featureCount() == 30 and layer.renderer().type() == "categorizedSymbol"
        assert layer.source().split("|")[0] == str(run / "tiles.gpkg")
    assert sum(f["status"] == "kept" for f in layer.getFeatures()) == round(0.3 * 19)
    reselected = processing.run("rsprune:reselect", {"RUN": layer, "KEEP": 0.6, "OUTPUT": str(tmp_path / "re.gpkg")})
    again = QgsVectorLayer(f"{reselected['OUTPUT']}|layername=tiles", "again", "ogr")
    assert again.isValid() and sum(f["status"] == "kept" for f in again.getFeatures()) == round(0.6 * 19)
    plugin.open_run(str(tmp_path / "nowhere.json"))
    outcome = wait_for(plugin)
    assert not outcome["ok"] and "no such file or folder; a run is what `rsprune run` writes" in outcome["error"]


def test_open_a_run_says_what_is_wrong_with_a_file_that_is_not_one(plugin, tmp_path, qgis_iface):
    """Open a run checks what it is given as every rsprune command does, through the backend: a
    raster, a GeoPackage of footprints, a damaged run folder; one line on the message bar."""
    from qgis.core import Qgis

    cli = os.environ["RSPRUNE_CLI"]
    run = tmp_path / "run"
    subprocess.run([cli, "run", str(RGB_BYTE), "-o", str(run), "--tile-size", "128", "--prior-bank", "none", "-q"],
                   check=True)
    subprocess.run([cli, "export", str(run), "--footprints", str(tmp_path / "kept.gpkg")], check=True)
    part = sorted((run / "tiles").glob("part-*.parquet"))[0]
    part.write_bytes(part.read_bytes()[:100])
    for given, said in ((RGB_BYTE, "this is a raster, not a run"),
                        (tmp_path / "kept.gpkg", "a GeoPackage without a run's runs layer"),
                        (run / "run.json", f"{part.name}: a part of the run's tile table is damaged")):
        plugin.open_run(str(given))
        outcome = wait_for(plugin)
        assert not outcome["ok"] and said in outcome["error"] and "\n" not in outcome["error"], outcome["error"]
        assert outcome["layer"] is None
    assert any(said in m for m in qgis_iface.messageBar().get_messages(Qgis.Critical))


def test_the_dialog_says_how_many_tiles_a_run_keeps_before_ok(plugin, raster_layer):
    """The Tiles line counts the grid and its tiles with data from GDAL's mask, says what keep
    keeps (never none), and offers a smaller tile size when the grid yields only a handful."""
    from rsprune.dialog import PruneDialog

    dialog = PruneDialog([str(RGB_BYTE)])
    dialog.tile_size.setValue(256)
    dialog.keep.setValue(0.15)
    text = dialog.budget.text()
    assert text.startswith("6 tiles, about ") and "keeps 1 (the fraction rounds to none: rsprune keeps one)" in text
    assert "tile size 128 gives more" in text or "tile size 64 gives more" in text
    dialog.tile_size.setValue(64)
    text = dialog.budget.text()
    tiles, with_data = int(text.split()[0]), int(text.split("about ")[1].split()[0])
    assert tiles == 12 * 11 and 0 < with_data < tiles and "handful" not in text  # the scene's nodata corners


def test_the_first_click_without_a_backend_offers_set_up_before_any_form(plugin, raster_layer, qgis_iface,
                                                                          monkeypatch):
    from qgis.PyQt.QtWidgets import QMessageBox
    from rsprune import backend
    from rsprune.dialog import PruneDialog

    qgis_iface.setActiveLayer(raster_layer)
    monkeypatch.setattr(backend, "configured_cli", lambda: None)
    monkeypatch.setattr(backend, "in_process_allowed", lambda: False)
    asked, opened = [], []
    monkeypatch.setattr(PruneDialog, "exec", lambda self: pytest.fail("the form opened without a backend"))
    monkeypatch.setattr(plugin, "set_up_backend", lambda: opened.append(True))
    monkeypatch.setattr(plugin, "start", lambda *a, **k: pytest.fail("a run started without a backend"))
    for answer in (QMessageBox.StandardButton.No, QMessageBox.StandardButton.Yes):
        monkeypatch.setattr(QMessageBox, "question", lambda *args, answer=answer: asked.append(args[2]) or answer)
        plugin.run()
    assert len(asked) == 2 and "needs its backend" in asked[0] and opened == [True]  # set up opens on Yes only


def test_a_backend_set_up_takes_the_stale_error_off_the_bar(plugin, tmp_path, monkeypatch, qgis_iface):
    from qgis.gui import QgsMessageBar
    from rsprune.backend import PruneParams

    bar = QgsMessageBar()
    monkeypatch.setattr(qgis_iface, "messageBar", lambda: bar)
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    plugin.start(PruneParams(rasters=[str(text)], output=str(tmp_path / "x.gpkg")), use_in_process=False)
    assert not wait_for(plugin)["ok"] and any("not a raster" in item.text() for item in bar.items())
    dialog = plugin.set_up_backend()

    class Finished:
        cli, error = "/usr/bin/rsprune", None

    dialog._done(True, Finished())
    assert "ready" in dialog.status.text()
    assert not any("not a raster" in item.text() for item in bar.items())
    dialog.close()


def test_the_message_bar_counts_in_words_that_agree():
    from rsprune import backend

    assert backend.run_message({"counts": {"kept": 1, "nodata": 2}, "output": "x.gpkg"}) == \
        "1 tile kept, 2 pruned; written to x.gpkg"
    assert backend.counted(0, "tile") == "0 tiles" and backend.counted(2, "tile") == "2 tiles"
