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
