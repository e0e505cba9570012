"""Outputs: the QGIS style, reading a run back, and the PNG map."""

import xml.etree.ElementTree as ET

import numpy as np
from PIL import Image

from rsprune_geo import plot_map, read_run, run
from rsprune_geo.outputs.geopackage import check_output_path, tiles_style_qml
from rsprune_geo.schema import STATUS_COLORS

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


def test_check_output_path(tmp_path):
    import pytest

    from rsprune_geo.errors import OutputError

    with pytest.raises(OutputError, match=".gpkg"):
        check_output_path(tmp_path / "x.shp")
    with pytest.raises(OutputError, match="';'"):
        check_output_path(tmp_path / "a;b.gpkg")
    assert check_output_path(tmp_path / "x.gpkg") == tmp_path / "x.gpkg"
