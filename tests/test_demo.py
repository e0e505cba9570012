"""The embedded demo: the generated mosaic and the end-to-end `rsprune demo`."""

import geopandas as gpd
import numpy as np
import rasterio
from click.testing import CliRunner
from PIL import Image

from rsprune_geo.cli import main
from rsprune_geo.fixtures.demo import DemoSpec, land_cover_map, render_mosaic, write_demo_mosaic


def test_render_mosaic_has_collar_water_clouds_and_texture():
    spec = DemoSpec(size=512, seed=3)
    img = render_mosaic(spec)
    assert img.shape == (3, 512, 512) and img.dtype == np.uint8
    nodata = (img == 0).all(axis=0)
    assert 0.1 < nodata.mean() < 0.5 and nodata[0, 0] and not nodata[256, 256]
    assert ((img[:, ~nodata] >= 240).all(axis=0)).mean() > 0.02  # clouds
    assert np.array_equal(img, render_mosaic(spec))  # seeded
    cover = land_cover_map((256, 256), np.random.default_rng(0))
    assert set(np.unique(cover)) >= {0, 1}


def test_write_demo_mosaic_is_a_georeferenced_cog(tmp_path):
    path = write_demo_mosaic(tmp_path / "m.tif", DemoSpec(size=1024))
    with rasterio.open(path) as src:
        assert src.crs.to_epsg() == 32633
        assert src.res == (10.0, 10.0)
        assert src.nodata == 0
        assert src.block_shapes[0] == (512, 512)
        assert src.overviews(1)
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"


def test_demo_command_end_to_end(tmp_path):
    result = CliRunner().invoke(main, ["demo", "--out", str(tmp_path), "--size", "1024"])
    assert result.exit_code == 0, result.output
    tiles = gpd.read_file(tmp_path / "demo.gpkg", layer="tiles")
    assert len(tiles) == 16
    assert {"kept", "nodata"} <= set(tiles.status)
    with Image.open(tmp_path / "demo-map.png") as png:
        assert png.size[0] >= 800
    assert "geopackage:" in result.output and "map:" in result.output
    # the default encoder ran on onnxruntime in int8, calibrated on the demo bank, and the run says so
    from rsprune_geo.schema import RunRecord

    assert RunRecord.read(tmp_path / "demo.gpkg").stage2.encoder_runtime == "onnx-int8"
    assert "runtime onnx-int8" in result.output
