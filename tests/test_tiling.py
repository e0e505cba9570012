"""Tiling: grids, footprints against the raster transform, ids, area of interest."""

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from rasterio.windows import bounds

from rsprune_geo.errors import InputError
from rsprune_geo.reading.sources import open_source
from rsprune_geo.reading.tiling import (
    clip_to_aoi,
    grid_offsets,
    group_tiles,
    make_tiles,
    read_aoi,
    tile_windows,
    union_window,
)

from .conftest import shared


def test_grid_offsets_drop_pad_and_overlap():
    assert grid_offsets(1000, 256, 256, "drop").tolist() == [0, 256, 512]
    assert grid_offsets(1000, 256, 256, "pad").tolist() == [0, 256, 512, 768]
    assert grid_offsets(1024, 256, 256, "pad").tolist() == [0, 256, 512, 768]
    assert grid_offsets(600, 256, 128, "drop").tolist() == [0, 128, 256]
    assert grid_offsets(600, 256, 128, "pad").tolist() == [0, 128, 256, 384]
    with pytest.raises(InputError):
        grid_offsets(100, 0, 10)
    with pytest.raises(InputError):
        grid_offsets(100, 10, 10, "wrap")


def test_tile_count_and_footprints_equal_window_bounds_exactly():
    src = open_source(shared("rasterio-tests/RGB.byte.tif"))
    tiles = make_tiles(src, tile_size=100, stride=100)
    assert len(tiles) == (718 // 100) * (791 // 100)
    assert tiles.crs == src.crs
    for window, geom in zip(tile_windows(tiles), tiles.geometry):
        left, bottom, right, top = bounds(window, src.transform)
        xs, ys = shapely.get_coordinates(geom).T
        assert set(xs) == {left, right} and set(ys) == {bottom, top}
        assert geom.equals(shapely.box(left, bottom, right, top))


def test_overlapping_stride_and_padded_edges():
    src = open_source(shared("rasterio-tests/RGB.byte.tif"))
    overlapping = make_tiles(src, tile_size=256, stride=128)
    assert len(overlapping) == len(grid_offsets(718, 256, 128)) * len(grid_offsets(791, 256, 128))
    padded = make_tiles(src, tile_size=256, edge="pad")
    assert len(padded) == 3 * 4
    last = padded.iloc[-1]
    assert last.row_off + last.height > src.height and last.col_off + last.width > src.width
    assert padded.geometry.union_all().contains(shapely.box(*rasterio.open(src.path).bounds))


def test_tile_ids_are_stable_unique_and_name_source_and_window():
    src = open_source(shared("rasterio-tests/RGB.byte.tif"))
    a = make_tiles(src, tile_size=128)
    b = make_tiles(open_source(shared("rasterio-tests/RGB.byte.tif")), tile_size=128)
    assert a.tile_id.tolist() == b.tile_id.tolist()
    assert a.tile_id.is_unique
    assert a.tile_id.iloc[1] == f"{src.key}-r0-c128-128"
    other = make_tiles(open_source(shared("rasterio-tests/rgb1.tif"), allow_no_crs=True), tile_size=128)
    assert not set(a.tile_id) & set(other.tile_id)


def test_tile_larger_than_raster_is_a_clear_error():
    src = open_source(shared("deepforest/OSBS_029.tif"))  # 400 x 400
    with pytest.raises(InputError, match="larger than the raster.*`tile_size`"):
        make_tiles(src, tile_size=512)
    assert len(make_tiles(src, tile_size=512, edge="pad")) == 1


def test_aoi_in_another_crs_restricts_tiles(tmp_path):
    src = open_source(shared("rasterio-tests/RGB.byte.tif"))
    tiles = make_tiles(src, tile_size=128)
    # a polygon over the upper-left quarter, written in EPSG:4326
    left, bottom, right, top = rasterio.open(src.path).bounds
    quarter = shapely.box(left, (bottom + top) / 2, (left + right) / 2, top).buffer(-1000)
    aoi = gpd.GeoSeries([quarter], crs=src.crs).to_crs(4326)
    path = tmp_path / "aoi.geojson"
    gpd.GeoDataFrame(geometry=aoi).to_file(path)
    clipped = make_tiles(src, tile_size=128, aoi=read_aoi(str(path)))
    assert 0 < len(clipped) < len(tiles)
    expected = tiles[tiles.intersects(quarter)]
    assert sorted(clipped.tile_id) == sorted(expected.tile_id)
    assert len(clip_to_aoi(tiles, gpd.GeoSeries([shapely.box(0, 0, 1, 1)], crs=4326))) == 0


def test_read_aoi_errors(tmp_path):
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="cannot read the area of interest"):
        read_aoi(str(bad))
    points = tmp_path / "points.geojson"
    gpd.GeoDataFrame(geometry=[shapely.Point(0, 0)], crs=4326).to_file(points)
    with pytest.raises(InputError, match="must hold polygons"):
        read_aoi(str(points))


def test_groups_cover_every_tile_once_with_bounded_windows():
    src = open_source(shared("localtileserver/landsat7_r0c0.tif"))
    tiles = make_tiles(src, tile_size=128, stride=96)
    groups = group_tiles(tiles, group_px=512)
    positions = np.concatenate(groups)
    assert sorted(positions.tolist()) == list(range(len(tiles)))
    for g in groups:
        w = union_window(tiles, g)
        assert w.width <= 512 + 128 and w.height <= 512 + 128
