"""The embedded demo: the generated mosaic and the end-to-end `rsprune demo`."""

import geopandas as gpd
import numpy as np
import rasterio
from click.testing import CliRunner
from PIL import Image

from rsprune_geo.cli import main
from rsprune_geo.fixtures.demo import (
    DemoSpec,
    land_cover_map,
    render_mosaic,
    render_truth,
    write_demo_labels,
    write_demo_mosaic,
)


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


def test_the_truth_is_what_the_generator_made():
    spec = DemoSpec(size=512, seed=3)
    img = render_mosaic(spec)
    codes, names = render_truth(spec)
    assert codes.shape == (512, 512) and names[-2:] == ["cloud", "nodata"] and names[0] == "open_water"
    nodata = (img == 0).all(axis=0)
    assert np.array_equal(codes == names.index("nodata"), nodata)
    cloud = codes == names.index("cloud")
    # more cloud than ground: at least half of the cloud's 245 in every band, brighter than the land
    assert cloud.any() and (img[:, cloud] >= 122).all()
    assert img[:, cloud].mean() > img[:, ~nodata & ~cloud].mean() + 60
    land = ~nodata & ~cloud
    assert set(np.unique(codes[land])) <= set(range(6)) and len(np.unique(codes[land])) >= 3


def test_the_truth_layer_labels_the_tiles_of_a_run(tmp_path):
    from rsprune_geo.evaluation import JUNK_LABELS, labels_from_vector
    from rsprune_geo.reading.sources import open_source
    from rsprune_geo.reading.tiling import make_tiles

    spec = DemoSpec(size=1024)
    mosaic = write_demo_mosaic(tmp_path / "m.tif", spec, labels=tmp_path / "truth.gpkg")
    alone = write_demo_labels(tmp_path / "alone.gpkg", spec)
    polygons = gpd.read_file(tmp_path / "truth.gpkg", layer="labels")
    assert polygons.crs.to_epsg() == 32633 and polygons.label.is_unique and "nodata" in set(polygons.label)
    assert polygons.geom_equals(gpd.read_file(alone, layer="labels").geometry).all()  # one rendering or two
    tiles = make_tiles(open_source(str(mosaic)), 128)
    labels = labels_from_vector(tiles, str(tmp_path / "truth.gpkg"))
    codes, names = render_truth(spec)
    checked = 0
    for i, (row, col) in enumerate(zip(tiles.row_off, tiles.col_off)):
        cells = codes[row + 8:row + 128:16, col + 8:col + 128:16]  # the 16-px cells' centres
        values, counts = np.unique(cells, return_counts=True)
        if (counts == counts.max()).sum() == 1:  # a strict majority: the tile's label
            assert labels[i] == names[values[counts.argmax()]], (i, labels[i])
            checked += 1
    assert checked > len(tiles) // 2 and len(set(labels)) >= 5
    assert labels[0] == "nodata" and labels[0] in JUNK_LABELS and "open_water" in JUNK_LABELS


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
    from rsprune_geo.runs.record import RunRecord

    assert RunRecord.read(tmp_path / "demo.gpkg").stage2.encoder_runtime == "onnx-int8"
    assert "runtime onnx-int8" in result.output
    # the evaluation judges by what the generator made, true classes first, and says what coverage measures
    table = result.output.split("evaluation (")[1]
    header = table.splitlines()[1].split()
    assert header[:4] == ["kept", "classes_kept", "label_balance", "junk_kept"] and "coverage" in header
    assert "likeness to the tiles' own distribution" in result.output and (tmp_path / "demo-labels.gpkg").exists()
