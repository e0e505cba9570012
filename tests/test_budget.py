"""The budget: counts from fractions, never zero while tiles have data, the same with and without
a prior bank (issue 24, point 4)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rsprune_geo
from rsprune_geo.choices import Stage1Rule
from rsprune_geo.config import RunConfig
from rsprune_geo.runs.vocabulary import Status
from rsprune_geo.stages.budget import Budget, tiles_with_data

from .conftest import UCMERCED, shared


def test_tiles_with_data_leaves_out_the_nodata_collar_only():
    statuses = np.array([Status.NODATA, Status.KEPT, Status.LOW_INFORMATION, Status.NODATA], dtype=object)
    assert tiles_with_data(statuses) == 2


def test_counts_round_and_never_vanish():
    budget = Budget(1000, stage1_fraction=0.3, keep_fraction=0.15, rule=Stage1Rule.PAPER, stage2=True)
    assert (budget.stage1_count, budget.keep_count, budget.paper_stage1_count) == (300, 150, 300)
    assert not budget.rounded_up and budget.notes() == []
    small = budget.counted(3)
    assert small.tiles_with_data == 3 and small.keep_count == 1 and small.stage1_count == 1
    assert small.rounded_up and "rounds to none; keeping 1" in small.notes()[0]
    assert budget.counted(0).keep_count == 0 and not budget.counted(0).rounded_up
    assert budget.count(0.0) == 0


def test_stage1_share_and_cuts_follow_the_rule():
    paper = Budget(100, 0.3, 0.15, Stage1Rule.PAPER, stage2=True)
    assert paper.stage1_share == 0.3 and paper.stage1_cut == 30 and paper.scene_cut is None
    alone = Budget(100, 0.3, 0.15, Stage1Rule.PAPER, stage2=False)
    assert alone.stage1_share == 0.15 and alone.stage1_kept == 15
    bank = Budget(100, 0.3, 0.4, Stage1Rule.BANK, stage2=True)
    assert bank.stage1_cut is None and bank.scene_cut == 40


def test_budget_of_a_config_then_counted():
    config = RunConfig(keep=0.2, stage1_keep=0.5)
    planned = Budget.of(config)
    assert planned.tiles_with_data == 0 and planned.keep_fraction == config.effective_keep
    assert planned.counted(50).keep_count == round(config.effective_keep * 50)


@pytest.fixture(scope="module")
def small_bank(tmp_path_factory):
    bank = tmp_path_factory.mktemp("bank")
    for cls in ("agricultural", "forest", "river", "denseresidential"):
        (bank / cls).mkdir()
        for f in sorted((UCMERCED / cls).iterdir())[:4]:
            os.symlink(f, bank / cls / f.name)
    return bank


def test_a_handful_of_tiles_keeps_one_with_and_without_a_bank(small_bank, tmp_path):
    """The issue's case: RGB.byte.tif at tile 256 keeps 0.15 of a handful of tiles with data. It
    used to fail without a bank and keep nothing with one; both now keep one tile and warn."""
    raster = shared("rasterio-tests/RGB.byte.tif")
    common = dict(tile_size=256, keep=0.15, encoder="rcf-empirical", cache_dir=str(tmp_path / "cache"))
    plain = rsprune_geo.run([raster], tmp_path / "plain.gpkg", **common)
    banked = rsprune_geo.run([raster], tmp_path / "bank.gpkg", prior_bank=(str(small_bank),), **common)
    for result in (plain, banked):
        assert (result.tiles.status == "kept").sum() == 1
        assert any("rounds to none; keeping 1" in w for w in result.record.warnings)


def test_a_reselection_too_small_for_its_run_keeps_one_and_says_so(tmp_path):
    from rsprune_geo.reselect import reselect

    raster = shared("rasterio-tests/RGB.byte.tif")
    run = rsprune_geo.run([raster], tmp_path / "run.gpkg", tile_size=128, keep=0.3)
    assert not any("rounds to none" in w for w in run.record.warnings)
    tiny = reselect(run.output, tmp_path / "tiny.gpkg", keep=0.001)
    assert tiny.record.counts["kept"] == 1 and sum("rounds to none" in w for w in tiny.record.warnings) == 1
    back = reselect(tiny.output, tmp_path / "back.gpkg", keep=0.3)  # the note leaves with its budget
    assert back.record.counts == run.record.counts and not any("rounds to none" in w for w in back.record.warnings)


@settings(max_examples=300, deadline=None)
@given(tiles=st.integers(0, 2_000_000), fraction=st.floats(0, 1))
def test_a_count_is_the_fraction_rounded_to_nearest_and_never_none(tiles, fraction):
    count = Budget(tiles, fraction, fraction, Stage1Rule.PAPER, stage2=True).keep_count
    expected = round(fraction * tiles)
    assert count == (max(expected, 1) if fraction > 0 and tiles else expected)
    assert abs(count - fraction * tiles) <= 0.5 or count == 1


def test_a_run_keeps_its_fraction_rounded_to_nearest_not_down(small_bank, tmp_path):
    """0.28 of the tiles with data here is a whole number and nine tenths or more: rounding down
    would keep one fewer."""
    raster = shared("rasterio-tests/RGB.byte.tif")
    common = dict(tile_size=64, keep=0.28, encoder="rcf-empirical", cache_dir=str(tmp_path / "cache"))
    for name, bank in (("plain", ()), ("bank", (str(small_bank),))):
        tiles = rsprune_geo.run([raster], tmp_path / f"{name}.gpkg", prior_bank=bank, **common).tiles
        with_data = int((tiles.status != Status.NODATA).sum())
        assert 0.5 <= (0.28 * with_data) % 1 < 1, with_data  # the case where down and nearest differ
        assert (tiles.status == Status.KEPT).sum() == round(0.28 * with_data), name
