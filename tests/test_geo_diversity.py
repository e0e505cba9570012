"""Geo-aware diversity: tiles know their ground and date; the selection caps tiles per ground cell
and spreads over space and time with an exact budget; the evaluation and report show it. On the
shared NAIP stack (one quarter-quad at several dates) and single-date mosaics."""

from __future__ import annotations

import json
import os
import shutil

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio

import rsprune_geo as rg
from rsprune_geo.choices import CellPeriod, GeoSpread
from rsprune_geo.errors import InputError
from rsprune_geo.evaluation import geo_metrics, nearest_kept_distance
from rsprune_geo.reading.dates import acquisition_date
from rsprune_geo.reading.tiling import ground_cells
from rsprune_geo.reselect import reselect
from rsprune_geo.stages.geospread import cell_groups, geo_picks, spans_ground_or_time
from rsprune_geo.stages.selection import select_tiles

from .conftest import GEOTIFF, UCMERCED, shared

NAIP_DIR = GEOTIFF / "opengeos-data" / "naip"
NAIP_DATES = r"_(\d{8})\.tif$"


@pytest.fixture(scope="module")
def small_bank(tmp_path_factory):
    bank = tmp_path_factory.mktemp("geo-bank")
    for cls in ("agricultural", "forest", "river", "sparseresidential", "freeway", "golfcourse"):
        (bank / cls).mkdir()
        for f in sorted((UCMERCED / cls).iterdir())[:6]:
            os.symlink(f, bank / cls / f.name)
    return bank


@pytest.fixture(scope="module")
def stack(small_bank, tmp_path_factory):
    """Four NAIP acquisitions (2009, 2010, 2012, 2014), 128-px tiles (35 cells), keep 0.3 (42 of
    140 tiles: more than the cells), one run per setting sharing a cache."""
    files = sorted(NAIP_DIR.glob("*.tif"))[:4]
    assert len(files) == 4, f"real test data missing: {NAIP_DIR}"
    cache = tmp_path_factory.mktemp("geo-cache")

    def run(output=None, **params):
        return rg.run([str(f) for f in files], output, tile_size=128, keep=0.3, prior_bank=(str(small_bank),),
                      encoder="rcf-empirical", cache_dir=str(cache), date_pattern=NAIP_DATES, **params)

    out = cache / "default.gpkg"
    return {"default": run(out), "before": run(max_per_cell=0, geo_spread="off"), "run": run, "gpkg": out,
            "files": files}


# ---- where and when ---------------------------------------------------------------------------


def test_acquisition_date_from_the_name_metadata_or_a_stac_item(make_raster, tmp_path):
    naip = str(sorted(NAIP_DIR.glob("*.tif"))[0])
    date, how = acquisition_date(naip, NAIP_DATES)
    assert str(date)[:10] == "2009-08-18" and how == "file name"
    assert np.isnat(acquisition_date(naip)[0])  # NAIP's files carry no date tag
    tagged = make_raster(np.ones((1, 8, 8), np.uint8), name="tagged.tif")
    import rasterio

    with rasterio.open(tagged, "r+") as dst:
        dst.update_tags(TIFFTAG_DATETIME="2019:07:14 10:30:00")
    date, how = acquisition_date(tagged)
    assert str(date)[:19] == "2019-07-14T10:30:00" and how == "metadata TIFFTAG_DATETIME"
    source = rg.open_source(tagged)  # read once when the raster is opened; the run does not reopen it
    assert source.date_tags == (("TIFFTAG_DATETIME", "2019:07:14 10:30:00"),)
    assert acquisition_date("/nowhere/tagged.tif", tags=source.date_tags)[1] == "metadata TIFFTAG_DATETIME"
    plain = make_raster(np.ones((1, 8, 8), np.uint8), name="scene.tif")
    (tmp_path / "scene.json").write_text(json.dumps({"type": "Feature", "properties": {
        "datetime": "2021-03-02T09:00:00Z"}}))
    date, how = acquisition_date(plain)
    assert str(date)[:10] == "2021-03-02" and how == "STAC item"
    with pytest.raises(InputError, match="regular expression"):
        acquisition_date(plain, "(unclosed")


def test_ground_cells_are_shared_by_the_same_ground_across_files():
    sources = rg.open_sources([str(f) for f in sorted(NAIP_DIR.glob("*.tif"))[:2]])
    tiles = pd.concat([rg.make_tiles(s, 128) for s in sources], ignore_index=True)
    import geopandas as gpd

    cells, size, origin = ground_cells(gpd.GeoSeries(tiles.geometry, crs=sources[0].crs))
    assert size == 640.0 and origin[0] == 485900.0
    first, second = cells[: len(tiles) // 2], cells[len(tiles) // 2:]
    assert len(set(first)) == len(first) == 35  # within one file, every tile its own cell
    assert list(first) == list(second)  # 2009 and 2010 (2 m apart) share their ground
    no_crs, _, _ = ground_cells(gpd.GeoSeries(list(tiles.geometry)))  # pixel footprints, no CRS
    assert set(no_crs) == {""}


def test_ground_cells_across_rasters_on_other_grids_and_crss(tmp_path):
    """The same ground in a raster on another pixel grid (shifted by a third of a tile) and in
    one reprojected to another CRS falls in the same cells: the cell is the one holding the
    footprint's centre, in the run's output CRS."""
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    naip = sorted(NAIP_DIR.glob("*.tif"))[0]
    with rasterio.open(naip) as src:
        profile, data = src.profile, src.read()
        shifted = tmp_path / "shifted.tif"  # the same ground, its grid 40 m (8 px, a fifth of a tile) east
        moved = dict(profile, transform=src.transform * rasterio.Affine.translation(8, 0))
        with rasterio.open(shifted, "w", **moved) as dst:
            dst.write(data)
        transform, width, height = calculate_default_transform(src.crs, "EPSG:4326", src.width, src.height,
                                                               *src.bounds)
        geographic = tmp_path / "geographic.tif"
        with rasterio.open(geographic, "w", **dict(profile, crs="EPSG:4326", transform=transform, width=width,
                                                   height=height)) as dst:
            for band in range(1, src.count + 1):
                reproject(rasterio.band(src, band), rasterio.band(dst, band), resampling=Resampling.nearest)
    sources = rg.open_sources([str(naip), str(shifted)])
    tiles = pd.concat([rg.make_tiles(s, 128) for s in sources], ignore_index=True)
    cells, size, _ = ground_cells(gpd.GeoSeries(tiles.geometry, crs=sources[0].crs))
    first, second = cells[: len(tiles) // 2], cells[len(tiles) // 2:]
    assert size == 640.0 and list(first) == list(second)  # shifted by 40 m: centres in the same cells

    run = rg.run([str(naip), str(geographic)], tile_size=128, out_crs=str(sources[0].crs), max_per_cell=0)
    by_source = {path: part for path, part in run.tiles.groupby("source")}
    utm, wgs = by_source[str(naip)], by_source[str(geographic)]
    shared = set(utm.ground_cell) & set(wgs.ground_cell)
    assert len(shared) >= 0.5 * min(len(utm), len(wgs))  # most reprojected tiles land on the same ground


def _same_groups(codes: np.ndarray) -> list[list[int]]:
    """Which tiles share a group (each group's members, in order), whatever its code."""
    return sorted({tuple(np.flatnonzero(codes == c).tolist()) for c in set(codes.tolist()) if c >= 0})


def test_cell_groups_by_period():
    cells = np.array([[0, 0], [0, 0], [0, 0], [0, 1], [-1, -1]])  # the last tile has no ground cell
    dates = np.array(["2019-07-01", "2019-12-24", "2020-07-01", "2019-07-01", "2020-01-01"], dtype="datetime64[ns]")
    assert _same_groups(cell_groups(cells, dates, "all")) == [(0, 1, 2), (3,)]
    assert _same_groups(cell_groups(cells, dates, "year")) == [(0, 1), (2,), (3,)]
    assert _same_groups(cell_groups(cells, dates, "season")) == [(0, 2), (1,), (3,)]  # JJA, DJF
    assert cell_groups(cells, dates, "year")[-1] == -1
    undated = np.array(["NaT"] * 5, dtype="datetime64[ns]")
    assert _same_groups(cell_groups(cells, undated, "season")) == [(0, 1, 2), (3,)]  # one unknown period
    with pytest.raises(InputError, match="cell_period"):
        cell_groups(cells, dates, "decade")


# ---- selection --------------------------------------------------------------------------------


def _stack_of(n_cells: int, n_dates: int, seed: int = 0, piled: bool = False):
    """n_cells ground cells seen at n_dates dates; two clusters; random distances, or (``piled``)
    distances that put every date of a cell next to each other (a cell's dates are
    near-duplicates), so centroid-first picks without a cap pile up on the same ground."""
    rng = np.random.default_rng(seed)
    cells = np.array([[0, c] for _ in range(n_dates) for c in range(n_cells)])
    dates = np.repeat(np.datetime64("2010-01-01") + np.arange(n_dates) * np.timedelta64(40, "D"), n_cells)
    labels = rng.integers(0, 2, len(cells))
    distances = rng.random(len(cells))
    if piled:
        distances = np.tile(np.arange(n_cells), n_dates) + 0.01 * distances
    return labels, distances, cells, dates.astype("datetime64[ns]")


def _per_cell(cells: np.ndarray) -> pd.Series:
    """Tiles per ground cell ((N, 2) row and column)."""
    return pd.Series([tuple(c) for c in np.asarray(cells).tolist()]).value_counts()


@pytest.mark.parametrize("budget", [5, 12, 20, 37, 47])
def test_the_cap_keeps_the_budget_exact_and_spreads_any_excess(budget):
    labels, distances, cells, dates = _stack_of(12, 5, piled=True)
    uncapped = select_tiles(labels, distances, budget, cells=cells, dates=dates, max_per_cell=0, geo_spread="off")
    assert _per_cell(cells[uncapped.kept]).max() > int(np.ceil(budget / 12))  # the cap has work
    for spread in ("off", "on"):
        chosen = select_tiles(labels, distances, budget, cells=cells, dates=dates, max_per_cell=1, geo_spread=spread)
        assert chosen.kept.sum() == budget
        per_cell = _per_cell(cells[chosen.kept])
        assert per_cell.max() == int(np.ceil(budget / 12))  # at most one per cell while the cells allow
        again = select_tiles(labels, distances, budget, cells=cells, dates=dates, max_per_cell=1, geo_spread=spread)
        assert np.array_equal(chosen.kept, again.kept)  # reproducible


def test_a_cap_above_one_and_a_cap_per_period():
    labels, distances, cells, dates = _stack_of(6, 6, piled=True)  # dates 40 days apart: 2010-01-01 to 2010-07-20
    two = select_tiles(labels, distances, 12, cells=cells, dates=dates, max_per_cell=2, geo_spread="off")
    assert two.kept.sum() == 12 and _per_cell(cells[two.kept]).max() == 2
    assert _per_cell(cells[two.kept]).size == 6
    # per season: one tile of a cell in each season (two dates each of DJF, MAM, JJA here)
    seasonal = select_tiles(labels, distances, 6, cells=cells, dates=dates, max_per_cell=1, cell_period="season",
                            geo_spread="off")
    keys = pd.Series(cell_groups(cells, dates, "season")[seasonal.kept])
    assert seasonal.kept.sum() == 6 and keys.value_counts().max() == 1
    assert _per_cell(cells[seasonal.kept]).max() > 1  # the nearest cell again, in another season
    whole = select_tiles(labels, distances, 6, cells=cells, dates=dates, max_per_cell=1, cell_period="all",
                         geo_spread="off")
    assert _per_cell(cells[whole.kept]).max() == 1


def test_geo_spread_prefers_ground_away_from_kept_tiles():
    """The spatial half of the spread: with no dates, among a cluster's next tiles it takes the one
    whose 3x3 cell neighbourhood holds the fewest kept tiles."""
    side = 12
    rows, cols = np.divmod(np.arange(side * side), side)
    cells = np.column_stack([rows, cols])
    labels = np.zeros(side * side, dtype=int)
    distances = (rows + cols) + 0.001 * np.random.default_rng(0).random(side * side)  # nearest: one corner
    off = select_tiles(labels, distances, 8, cells=cells, max_per_cell=0, geo_spread="off")
    on = select_tiles(labels, distances, 8, cells=cells, max_per_cell=0, geo_spread="on")

    def neighbours(kept: np.ndarray) -> int:
        r, c = rows[kept], cols[kept]
        return int(sum(((abs(r - r[i]) <= 1) & (abs(c - c[i]) <= 1)).sum() - 1 for i in range(r.size)))

    assert on.kept.sum() == off.kept.sum() == 8
    assert neighbours(on.kept) < neighbours(off.kept)


def test_without_shared_ground_the_cap_and_auto_spread_change_nothing():
    rng = np.random.default_rng(3)
    labels, distances = rng.integers(0, 4, 200), rng.random(200)
    cells = np.array([[i // 20, i % 20] for i in range(200)])
    plain = select_tiles(labels, distances, 30)
    capped = select_tiles(labels, distances, 30, cells=cells, max_per_cell=1, geo_spread="auto")
    assert np.array_equal(plain.kept, capped.kept) and capped.capped is None
    assert not spans_ground_or_time(cells, None)
    assert spans_ground_or_time(np.array([[3, 4], [3, 4]]), None)
    assert not spans_ground_or_time(np.array([[-1, -1], [-1, -1]]), None)  # no ground: never shared


def test_geo_spread_prefers_dates_with_fewer_kept_tiles():
    labels, distances, cells, dates = _stack_of(30, 6, seed=1)
    distances = distances + (dates == dates.min()) * -1.0  # the first date is nearest every centroid
    off = select_tiles(labels, distances, 24, cells=cells, dates=dates, max_per_cell=0, geo_spread="off")
    on = select_tiles(labels, distances, 24, cells=cells, dates=dates, max_per_cell=0, geo_spread="on")
    share = lambda kept: pd.Series(dates[kept]).value_counts(normalize=True).max()  # noqa: E731
    assert share(off.kept) == 1.0 and share(on.kept) < 0.8  # within a window of the next 8 by rank
    assert pd.Series(dates[on.kept]).nunique() > 1
    assert on.kept.sum() == off.kept.sum() == 24


def test_geo_picks_reports_tiles_the_cap_passed_over():
    rank = np.array([0, 1, 0, 1])
    inverse = np.array([0, 0, 1, 1])
    groups = np.array([0, 1, 0, 2])  # both clusters' first tiles stand on ground 0
    kept, capped = geo_picks(rank, inverse, np.array([1, 1]), 2, seed=0, groups=groups, cap=1)
    assert kept.sum() == 2 and capped.sum() == 1 and groups[kept].tolist().count(0) == 1


# ---- runs on the NAIP stack --------------------------------------------------------------------


def test_tiles_carry_ground_cell_and_date_into_the_geopackage(stack):
    tiles, record = rg.read_run(stack["gpkg"])
    assert {"ground_cell", "date"} <= set(tiles.columns)
    assert tiles["ground_cell"].nunique() == 35
    assert sorted(tiles["date"].dt.year.unique()) == [2009, 2010, 2012, 2014]
    assert record.ground.cell_size == 640.0 and record.ground.cells == 35
    assert {how for _, how in record.ground.dates.values()} == {"file name"}
    assert "ground: 35 cells" in stack["default"].summary()


def test_the_default_keeps_one_tile_per_ground_cell_and_spreads_dates(stack):
    before, after = stack["before"].kept, stack["default"].kept
    assert len(before) == len(after) == 42
    assert before["ground_cell"].value_counts().max() > 2  # the same field kept at several dates
    assert after["ground_cell"].nunique() == 35 and after["ground_cell"].value_counts().max() == 2
    share = lambda kept: kept["date"].value_counts(normalize=True).max()  # noqa: E731
    assert share(after) <= share(before)
    assert after["scene"].nunique() >= before["scene"].nunique() - 1
    reasons = stack["default"].tiles["reason"]
    assert reasons.str.contains("already holds 1 kept tile").any()


def test_reselect_applies_changes_and_removes_the_cap(stack, tmp_path):
    removed = reselect(stack["gpkg"], tmp_path / "nocap.gpkg", keep=0.3, max_per_cell=0, geo_spread="off")
    kept = removed.tiles[removed.tiles["status"] == "kept"]
    assert sorted(kept["tile_id"]) == sorted(stack["before"].kept["tile_id"])  # as the run without a cap
    again = reselect(stack["gpkg"], tmp_path / "same.gpkg", keep=0.3)
    assert sorted(again.tiles.loc[again.tiles["status"] == "kept", "tile_id"]) == sorted(
        stack["default"].kept["tile_id"])
    seasonal = reselect(stack["gpkg"], tmp_path / "season.gpkg", keep=0.3, cell_period="season")
    assert seasonal.record.parameters.cell_period is CellPeriod.SEASON


def test_rsprune_select_geo_flags_reach_the_selection(stack, tmp_path):
    """``rsprune select`` with --max-per-cell, --cell-period and --geo-spread: the same tiles as
    the API's re-selection with those values, recorded as the new run's parameters."""
    from click.testing import CliRunner

    from rsprune_geo.cli import main

    out = tmp_path / "cli.gpkg"
    cli = CliRunner().invoke(main, ["select", str(stack["gpkg"]), "-o", str(out), "--keep", "0.3",
                                    "--max-per-cell", "0", "--geo-spread", "off"])
    assert cli.exit_code == 0, cli.output
    tiles, record = rg.read_run(out)
    assert sorted(tiles.loc[tiles.status == "kept", "tile_id"]) == sorted(stack["before"].kept["tile_id"])
    assert (record.parameters.max_per_cell, record.parameters.geo_spread) == (0, GeoSpread.OFF)
    yearly = tmp_path / "yearly.gpkg"
    cli = CliRunner().invoke(main, ["select", str(stack["gpkg"]), "-o", str(yearly), "--keep", "0.3",
                                    "--cell-period", "year"])
    assert cli.exit_code == 0, cli.output
    tiles, record = rg.read_run(yearly)
    api = reselect(stack["gpkg"], tmp_path / "api.gpkg", keep=0.3, cell_period="year")
    assert record.parameters.cell_period is CellPeriod.YEAR
    assert sorted(tiles.loc[tiles.status == "kept", "tile_id"]) == sorted(api.kept["tile_id"])
    kept = tiles[tiles.status == "kept"]
    assert kept.groupby([kept.ground_cell, kept.date.dt.year]).size().max() == 1  # one per cell and year


def test_evaluation_and_report_show_where_and_when(stack, tmp_path):
    evaluated = stack["run"](tmp_path / "evaluated.gpkg", evaluate=True)
    table = evaluated.evaluation
    assert {"cells_kept", "max_per_cell", "nn_distance", "dates_kept", "max_date_share"} <= set(table.columns)
    assert table.loc["rs-prune", "cells_kept"] == 35 and table.loc["rs-prune", "max_per_cell"] == 2
    assert table.loc["rs-prune", "nn_distance"] > table.loc["random", "nn_distance"] * 0.9
    from rsprune_geo.outputs.report import make_plots

    plots = make_plots(tmp_path / "evaluated.gpkg", tmp_path / "plots")
    assert {"dates", "cells"} <= set(plots) and all(p.stat().st_size > 5000 for p in plots.values())


def test_geo_metrics_by_hand():
    kept = np.array([True, True, True, False])
    cells = np.array(["a", "a", "b", "c"], dtype=object)
    dates = np.array(["2020-01-01", "2020-01-01", "2021-01-01", "NaT"], dtype="datetime64[ns]")
    centres = np.array([[0, 0], [0, 3], [4, 0], [100, 100]], dtype=float)
    row = geo_metrics(kept, cells, dates, centres)
    assert row == {"cells_kept": 2, "max_per_cell": 2, "nn_distance": pytest.approx((3 + 3 + 4) / 3),
                   "dates_kept": 2, "max_date_share": pytest.approx(2 / 3)}
    assert np.isnan(nearest_kept_distance(centres[:1]))


def test_a_single_date_mosaic_is_selected_as_before(small_bank, tmp_path):
    raster = shared("rasterio-tests/RGB.byte.tif")
    common = dict(tile_size=64, keep=0.2, prior_bank=(str(small_bank),), encoder="rcf-empirical",
                  cache_dir=str(tmp_path / "cache"))
    default = rg.run([raster], **common)
    before = rg.run([raster], max_per_cell=0, geo_spread="off", **common)
    assert default.tiles["status"].tolist() == before.tiles["status"].tolist()
    assert default.tiles["date"].isna().all()


def test_date_pattern_that_matches_nothing_warns(small_bank, tmp_path, caplog):
    copy = tmp_path / "naip.tif"
    shutil.copy(sorted(NAIP_DIR.glob("*.tif"))[0], copy)
    result = rg.run([str(copy)], tile_size=256, date_pattern=NAIP_DATES)
    assert result.tiles["date"].isna().all()
    assert "1 of 1 raster without a date" in caplog.text
