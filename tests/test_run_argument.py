"""A wrong RUN argument: every command that opens a run (info, select, report, export, evaluate),
the API (read_run) and the loaders say in one line what was given, what is wrong with it and what
to do; exit code 1; nothing written."""

import json
import shutil

import geopandas as gpd
import pytest
from click.testing import CliRunner
from shapely.geometry import box

import rsprune_geo
from rsprune_geo.cli import main
from rsprune_geo.errors import InputError
from rsprune_geo.runs.record import RECORD_FORMAT
from rsprune_geo.runs.runfile import RUN_IS, check_run, read_record, read_run

from .conftest import shared

RASTER = "deepforest/OSBS_029.tif"


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A small run, as a GeoPackage and as a run folder of several parts (stage 1 alone: quick)."""
    root = tmp_path_factory.mktemp("good-runs")
    options = dict(tile_size=50, keep=0.3)
    with pytest.MonkeyPatch.context() as patch:  # a task per row band: several parts
        patch.setattr("rsprune_geo.reading.grid.TASK_MIN_TILES", 1)
        rsprune_geo.run(shared(RASTER), root / "run.gpkg", group_px=100, **options)
        rsprune_geo.run(shared(RASTER), root / "run", group_px=100, **options)
    assert len(list((root / "run" / "tiles").glob("part-*.parquet"))) > 2
    return root


def _bad(kind: str, good, tmp_path):
    """A wrong RUN of ``kind`` and the words its message must hold."""
    if kind == "missing":
        return tmp_path / "nothing-here.gpkg", ["no such file or folder", RUN_IS]
    if kind == "empty":
        (tmp_path / "empty.gpkg").write_bytes(b"")
        return tmp_path / "empty.gpkg", ["an empty file", RUN_IS]
    if kind == "junk":
        (tmp_path / "junk.gpkg").write_bytes(b"not a database at all\n" * 50)
        return tmp_path / "junk.gpkg", ["not a GeoPackage", RUN_IS]
    if kind == "other-geopackage":
        labels = gpd.GeoDataFrame({"label": ["a"]}, geometry=[box(0, 0, 1, 1)], crs=4326)
        labels.to_file(tmp_path / "labels.gpkg", layer="labels", engine="pyogrio")
        return tmp_path / "labels.gpkg", ["without a run's tiles and runs layer", "it has labels", RUN_IS]
    if kind == "footprints":
        tiles = gpd.read_file(good / "run.gpkg", layer="tiles")
        tiles.to_file(tmp_path / "footprints.gpkg", layer="tiles", engine="pyogrio")
        return tmp_path / "footprints.gpkg", ["without a run's runs layer", "footprints exported", "it has tiles"]
    if kind == "raster":
        return shared(RASTER), ["this is a raster", "`rsprune run"]
    folder = tmp_path / "copy"
    shutil.copytree(good / "run", folder)
    if kind == "no-record":
        (folder / "run.json").unlink()
        return folder, ["a folder without run.json", RUN_IS]
    if kind == "record-not-json":
        (folder / "run.json").write_text('{"run_id": "x", "counts": ', encoding="utf-8")
        return folder, ["run.json: not JSON", "rsprune run` again"]
    if kind == "newer-record":
        data = json.loads((folder / "run.json").read_text(encoding="utf-8"))
        data["record_format"] = RECORD_FORMAT + 1
        (folder / "run.json").write_text(json.dumps(data), encoding="utf-8")
        return folder, [f"format {RECORD_FORMAT + 1}", "upgrade rsprune_geo"]
    parts = sorted((folder / "tiles").glob("part-*.parquet"))
    if kind == "missing-part":
        parts[1].unlink()
        return folder, ["tiles are missing", "where its record counts"]
    if kind == "damaged-part":
        data = parts[1].read_bytes()
        parts[1].write_bytes(data[: len(data) // 2])
        return folder, [parts[1].name, "is damaged"]
    raise AssertionError(kind)


KINDS = ["missing", "empty", "junk", "other-geopackage", "footprints", "raster", "no-record", "record-not-json",
         "newer-record", "missing-part", "damaged-part"]


@pytest.mark.parametrize("kind", KINDS)
def test_the_api_names_what_is_wrong_with_a_run(kind, good, tmp_path):
    path, words = _bad(kind, good, tmp_path)
    for call in (check_run, read_run, read_record):
        with pytest.raises(InputError) as caught:
            call(path)
        message = str(caught.value)
        assert "\n" not in message and str(path) in message, message
        for word in words:
            assert word in message, (word, message)


COMMANDS = {
    "info": lambda run, out: ["info", run],
    "select": lambda run, out: ["select", run, "--keep", "0.1", "-o", out / "new.gpkg"],
    "report": lambda run, out: ["report", run, "-o", out / "report.html"],
    "export": lambda run, out: ["export", run, "--to", out / "chips", "--footprints", out / "kept.gpkg"],
    "evaluate": lambda run, out: ["evaluate", run, "-o", out / "evaluated.gpkg"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("kind", ["missing", "junk", "other-geopackage", "raster", "no-record", "damaged-part"])
def test_every_command_that_opens_a_run_says_so_in_one_line_and_writes_nothing(command, kind, good, tmp_path):
    path, words = _bad(kind, good, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    result = CliRunner().invoke(main, [str(a) for a in COMMANDS[command](path, out)])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "unexpected" not in lines[0] and str(path) in lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not any(out.iterdir()), list(out.iterdir())


def test_the_loaders_check_the_run_first(good, tmp_path):
    from rsprune_geo.loaders import TileDataset

    path, _ = _bad("other-geopackage", good, tmp_path)
    with pytest.raises(InputError, match="without a run's tiles and runs layer"):
        TileDataset(path)


def test_a_good_run_passes_its_check_both_ways(good):
    assert check_run(good / "run.gpkg") == good / "run.gpkg"
    assert check_run(good / "run") == good / "run"
    assert read_record(good / "run").record_format == RECORD_FORMAT
