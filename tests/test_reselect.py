"""rsprune select on a stage-1-only run (no stage 2): the entropy ranking decides."""

import geopandas as gpd
import pytest
from click.testing import CliRunner

import rsprune_geo
from rsprune_geo.cli import main
from rsprune_geo.errors import InputError
from rsprune_geo.reselect import reselect

from .conftest import shared


def test_reselect_stage1_run_matches_a_fresh_run(tmp_path):
    path = shared("rasterio-tests/RGB.byte.tif")
    first = rsprune_geo.run([path], tmp_path / "a.gpkg", tile_size=64, keep=0.3)
    again = reselect(first.output, tmp_path / "b.gpkg", keep=0.1)
    fresh = rsprune_geo.run([path], tile_size=64, keep=0.1)
    assert again.tiles.status.tolist() == fresh.tiles.status.tolist()
    with pytest.raises(InputError, match="`overwrite`"):
        reselect(first.output, None, keep=0.2)
    with pytest.raises(InputError, match="must be in"):
        reselect(first.output, tmp_path / "c.gpkg", keep=0)
    result = CliRunner().invoke(main, ["select", str(first.output), "--keep", "0.2", "--overwrite"])
    assert result.exit_code == 0, result.output
    tiles = gpd.read_file(first.output, layer="tiles")
    assert (tiles.status == "kept").sum() == round(0.2 * (tiles.status != "nodata").sum())


def test_the_seed_is_stored_once_and_a_reselection_with_another_seed_records_it(tmp_path):
    path = shared("rasterio-tests/RGB.byte.tif")
    first = rsprune_geo.run([path], tmp_path / "a.gpkg", tile_size=64, keep=0.3, seed=3)
    assert first.record.seed == 3
    runs = gpd.read_file(first.output, layer="runs")
    assert "seed" not in runs.columns  # the parameters hold it
    again = reselect(first.output, tmp_path / "b.gpkg", keep=0.1, seed=7)
    _, record = rsprune_geo.read_run(again.output)
    assert record.seed == record.parameters.seed == 7


def test_a_record_written_with_the_seed_beside_its_parameters_still_reads(tmp_path):
    path = shared("rasterio-tests/RGB.byte.tif")
    first = rsprune_geo.run([path], tile_size=64, keep=0.3, seed=3)
    data = {**first.record.to_dict(), "seed": 3}  # as records before this version stored it
    assert rsprune_geo.RunRecord.from_dict(data).seed == 3
