"""Selections that grow (``extend``): a new run over new imagery counts what an earlier run kept,
in the scenes' shares and the per-cell cap, as if both were one run; on the real NAIP dates."""

from __future__ import annotations

import os

import geopandas as gpd
import numpy as np
import pytest

import rsprune_geo
from rsprune_geo.errors import InputError
from rsprune_geo.reselect import reselect
from rsprune_geo.stages.quotas import scene_quotas, water_fill_above
from rsprune_geo.stages.selection import HeldBefore, select_tiles

from .conftest import UCMERCED, shared

NAIP_DATES = ("20090818", "20100629", "20120731", "20140720", "20150926", "20160816", "20170827", "20180716",
              "20190904", "20200831")


def naip(dates) -> list[str]:
    return [shared(f"opengeos-data/naip/m_4709963_se_14_1_{d}.tif") for d in dates]


def test_the_budget_goes_first_to_what_the_earlier_selection_holds_least_of():
    assert water_fill_above(np.array([5, 0, 2]), np.array([10, 10, 10]), 6).tolist() == [0, 4, 2]
    assert water_fill_above(np.array([0, 0]), np.array([1, 10]), 5).tolist() == [1, 4]  # capped by what there is
    assert water_fill_above(np.array([3, 3]), np.array([5, 5]), 3).sum() == 3  # exact
    sizes, scenes = np.array([10, 10, 10]), np.array(["a", "b", "c"])
    assert scene_quotas(sizes, scenes, 6).tolist() == [2, 2, 2]
    assert scene_quotas(sizes, scenes, 6, held={"a": 4}).tolist() == [0, 3, 3]
    assert scene_quotas(sizes, scenes, 6, uniformity=0.0, held={"a": 4}).tolist() == [2, 2, 2]  # proportional


def test_the_earlier_tiles_count_against_the_per_cell_cap():
    labels, distances = np.zeros(4, dtype=np.int64), np.array([0.1, 0.2, 0.3, 0.4])
    cells = np.array([[0, 0], [0, 1], [0, 2], [0, 3]])
    plain = select_tiles(labels, distances, 2, cells=cells, max_per_cell=1)
    assert np.flatnonzero(plain.kept).tolist() == [0, 1]
    held = HeldBefore({}, np.array([[0, 0], [0, 1]]), np.full(2, np.datetime64("NaT"), dtype="datetime64[ns]"))
    grown = select_tiles(labels, distances, 2, cells=cells, max_per_cell=1, held=held)
    assert np.flatnonzero(grown.kept).tolist() == [2, 3]  # the cells the earlier selection holds are full


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    root = tmp_path_factory.mktemp("bank")
    for cls in ("agricultural", "forest", "river", "sparseresidential", "freeway", "golfcourse", "beach",
                "denseresidential"):
        (root / cls).mkdir()
        for f in sorted((UCMERCED / cls).iterdir())[:6]:
            os.symlink(f, root / cls / f.name)
    (root / "bank.json").write_text('{"gsd": 0.3}')
    return root


def _kept(path) -> gpd.GeoDataFrame:
    tiles = gpd.read_file(path, layer="tiles")
    return tiles[tiles.status == "kept"]


def test_a_selection_grown_in_two_batches_covers_as_much_as_one_run_and_never_passes_the_cap(bank, tmp_path):
    common = dict(tile_size=128, keep=0.05, prior_bank=(str(bank),), encoder="rcf-empirical",
                  date_pattern=r"_(\d{8})\.tif$", cache_dir=str(tmp_path / "cache"))
    first = rsprune_geo.run(naip(NAIP_DATES[:5]), tmp_path / "first.gpkg", **common)
    second = rsprune_geo.run(naip(NAIP_DATES[5:]), tmp_path / "second.gpkg", extend=str(first.output), **common)
    alone = rsprune_geo.run(naip(NAIP_DATES[5:]), tmp_path / "alone.gpkg", **common)
    whole = rsprune_geo.run(naip(NAIP_DATES), tmp_path / "whole.gpkg", **common)
    assert second.record.stage2.extends == str(first.output) and second.record.stage2.extends_kept == 9
    assert "extends" in second.summary() and second.record.counts["kept"] == 9
    both = [_kept(first.output), _kept(second.output)]
    cells = np.concatenate([k.ground_cell.to_numpy() for k in both])
    assert len(cells) == 18 and len(set(cells)) == 18  # one tile a cell, across both batches
    whole_kept = _kept(whole.output)
    assert len(set(cells)) >= whole_kept.ground_cell.nunique()
    scenes = set(np.concatenate([k.scene.to_numpy() for k in both]))
    assert len(scenes) >= whole_kept.scene.nunique()
    # without extend the second batch knows nothing of the first: it fills ground the first holds
    assert set(_kept(alone.output).ground_cell) & set(both[0].ground_cell)
    # a re-selection of the extension still counts the earlier run
    again = reselect(second.output, tmp_path / "again.gpkg", keep=0.05)
    assert set(_kept(again.output).ground_cell).isdisjoint(both[0].ground_cell)


def test_extend_needs_a_bank_and_an_earlier_run_with_stage_2(bank, tmp_path):
    raster = shared("rasterio-tests/RGB.byte.tif")
    with pytest.raises(InputError, match="extend"):
        rsprune_geo.run([raster], tmp_path / "x.gpkg", tile_size=128, extend=str(tmp_path / "none.gpkg"))
    plain = rsprune_geo.run([raster], tmp_path / "plain.gpkg", tile_size=128)
    with pytest.raises(InputError, match="stage 2"):
        rsprune_geo.run([raster], tmp_path / "y.gpkg", tile_size=128, prior_bank=(str(bank),),
                        encoder="rcf-empirical", extend=str(plain.output), cache_dir=str(tmp_path / "cache"))
