"""A folder of chips held as columns: the scan streams the folder into a SourceTable (each chip a
few tens of bytes), the grid of chips is computed, not listed, and a run's inputs beyond
INLINE_INPUTS are a table of their own, written and read back a batch at a time."""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.transform import from_origin

import rsprune_geo
from rsprune_geo.cli import main
from rsprune_geo.errors import InputError
from rsprune_geo.reading.dates import source_dates
from rsprune_geo.reading.grid import ChipRange, RunGrid, plan_grid
from rsprune_geo.reading.ground import ground_grid
from rsprune_geo.reading.scan import SourceTable, scan_sources
from rsprune_geo.reading.sources import CHIP_SUFFIXES, iter_paths, open_source
from rsprune_geo.runs.inputs import INPUTS_FILE, INPUTS_LAYER, InputDates, TableInputs, first_position
from rsprune_geo.runs.record import RunRecord

from .conftest import UCMERCED

CHIPS = [str(UCMERCED / name / "*.png") for name in ("agricultural", "beach", "forest")]


def test_a_table_of_chips_gives_each_chip_as_opening_it_alone_would():
    sources, _ = scan_sources([str(UCMERCED)], chips=True)
    assert isinstance(sources, SourceTable) and len(sources) == 420
    for index in (0, 1, 199, 419, -1):
        assert sources[index] == open_source(sources[index].path, allow_no_crs=True, chip=True)
    assert list(sources.paths()) == [s.path for s in sources]
    assert sources.nbytes / len(sources) < 72  # its own columns; the shared description held once
    assert len(sources.profiles) < 10 and sources.transforms is None  # a few chip sizes among 420


def _georeferenced_chips(folder, moved: bool) -> list[str]:
    """Five GeoTIFF chips dated in their names, side by side (``moved``) or on the same ground
    (a place seen on five dates), one of them 20 px, not 16."""
    folder.mkdir()
    for k in range(5):
        side = 20 if k == 3 else 16
        where = from_origin(500000 + (160 * k if moved else 0), 4e6, 10, 10)
        with rasterio.open(folder / f"chip_2020010{k + 1}.tif", "w", driver="GTiff", width=side, height=side,
                           count=3, dtype="uint8", crs="EPSG:32633", transform=where) as dst:
            dst.write(np.full((3, side, side), 40 * k, np.uint8))
    return [str(folder)]


@pytest.mark.parametrize("moved", [True, False])
def test_georeferenced_chips_keep_each_its_own_transform_ground_and_date(tmp_path, moved):
    sources, _ = scan_sources(_georeferenced_chips(tmp_path / "chips", moved), chips=True)
    assert isinstance(sources, SourceTable) and (sources.transforms is not None) == moved
    for index in range(5):
        assert sources[index] == open_source(sources[index].path, chip=True)
    dates = source_dates(sources, r"_(\d{8})\.tif$")
    assert [str(dates.of(i))[:10] for i in range(5)] == [f"2020-01-0{k + 1}" for k in range(5)]
    assert dates.how_of(0) == "file name" and dates.dated() == 5
    grid = plan_grid(sources, 16, chips=True)
    crs = sources[0].crs
    assert ground_grid(grid, crs) == ground_grid(RunGrid(list(grid.sources)), crs)  # the general path, grid by grid
    assert ground_grid(grid, crs).origin == (500000.0, 4e6) and ground_grid(grid, crs).size == 160


def test_a_folder_is_walked_in_the_order_its_whole_paths_sort(tmp_path):
    for name in ("a/x.png", "a-1.png", "a.png", "b/c/d.png", "b/c.jpg", "B.PNG", "notes.txt", "b/.hidden.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = list(iter_paths([str(tmp_path)], CHIP_SUFFIXES, recursive=True))
    expected = sorted(str(p) for p in Path(tmp_path).rglob("*") if p.suffix.lower() in CHIP_SUFFIXES and p.is_file())
    assert found == [os.path.abspath(p) for p in expected] and len(found) == 7
    top = list(iter_paths([str(tmp_path)], CHIP_SUFFIXES))
    assert top == [str(tmp_path / n) for n in ("B.PNG", "a-1.png", "a.png")]
    twice = list(iter_paths([str(tmp_path / "a"), str(tmp_path / "a" / "x.png")], CHIP_SUFFIXES))
    assert twice == [str(tmp_path / "a" / "x.png")]


def test_the_grid_of_chips_is_computed_and_sorts_as_the_tile_ids():
    sources, _ = scan_sources([str(UCMERCED)], chips=True)
    grid = plan_grid(sources, 256, chips=True)
    assert grid.chips is not None and grid.size == grid.count == 420
    assert all(isinstance(task.members, ChipRange) for task in grid.tasks)
    positions = np.arange(420)
    ids = [grid.sources[p].tile_ids(np.array([p]))[0] for p in positions]
    assert np.array_equal(np.argsort(grid.order_keys(positions), kind="stable"), np.argsort(ids, kind="stable"))
    listed = RunGrid(list(grid.sources))  # the same grids as a plain list: the general path
    assert np.array_equal(listed.order_keys(positions), grid.order_keys(positions))
    assert np.array_equal(listed.source_of(positions), grid.source_of(positions))
    assert listed.size == grid.size and np.array_equal(listed.present(), grid.present())


@pytest.fixture
def few_inline(monkeypatch):
    """Runs whose inputs past ten are a table of their own."""
    monkeypatch.setattr("rsprune_geo.runs.inputs.INLINE_INPUTS", 10)


def test_many_inputs_are_a_table_beside_the_record_and_read_back_the_same(tmp_path, monkeypatch):
    options = dict(chips=True, keep=0.2, prior_bank="default")
    inline = rsprune_geo.run(CHIPS, tmp_path / "inline", **options)
    monkeypatch.setattr("rsprune_geo.runs.inputs.INLINE_INPUTS", 10)
    table = rsprune_geo.run(CHIPS, tmp_path / "table", **options)
    stored = json.loads((tmp_path / "table" / "run.json").read_text())
    assert stored["inputs"] == {"table": INPUTS_LAYER, "count": 60} and (tmp_path / "table" / INPUTS_FILE).is_file()
    assert stored["ground"]["dates"] == {"table": INPUTS_LAYER}
    expected = RunRecord.read(tmp_path / "inline")
    for where in (tmp_path / "table", tmp_path / "table" / "tiles.gpkg"):
        record = RunRecord.read(where)
        assert isinstance(record.inputs, TableInputs) and list(record.inputs) == expected.inputs
        assert isinstance(record.ground.dates, InputDates) and dict(record.ground.dates) == expected.ground.dates
        assert "/nowhere.png" not in record.ground.dates
        assert record.input(expected.inputs[7]["path"]) == expected.inputs[7]
        assert record.has_input(expected.inputs[-1]["path"]) and not record.has_input("/nowhere.png")
    layer = pyogrio.read_dataframe(tmp_path / "table" / "tiles.gpkg", layer=INPUTS_LAYER)
    assert len(layer) == 60 and list(layer["path"]) == [i["path"] for i in expected.inputs]
    pd.testing.assert_frame_equal(pd.DataFrame(inline.tiles.drop(columns="geometry")),
                                  pd.DataFrame(table.tiles.drop(columns="geometry")))
    assert "sources: 60" in table.summary()


def test_a_geopackage_and_a_reselection_carry_the_inputs_table(tmp_path, few_inline):
    out = tmp_path / "run.gpkg"
    rsprune_geo.run(CHIPS, out, chips=True, keep=0.2, prior_bank="default")
    assert len(pyogrio.read_dataframe(out, layer=INPUTS_LAYER)) == 60
    assert len(RunRecord.read(out).inputs) == 60
    result = CliRunner().invoke(main, ["info", str(out)])
    assert result.exit_code == 0, result.output
    assert "… and 40 more" in result.output
    from rsprune_geo.outputs.report import write_report

    page = write_report(out, tmp_path / "report.html").read_text()
    inputs = page[page.index("<h2>Inputs</h2>") : page.index("<h2>Versions</h2>")]
    assert inputs.count("<tr>") == 20 and "… and 40 more" in inputs  # the first 20 rows
    folder = tmp_path / "folder"
    rsprune_geo.run(CHIPS, folder, chips=True, keep=0.2, prior_bank="default")
    again = CliRunner().invoke(main, ["select", str(folder), "-o", str(tmp_path / "again"), "--keep", "0.1"])
    assert again.exit_code == 0, again.output
    assert list(RunRecord.read(tmp_path / "again").inputs) == list(RunRecord.read(folder).inputs)
    regpkg = CliRunner().invoke(main, ["select", str(out), "-o", str(tmp_path / "again.gpkg"), "--keep", "0.1"])
    assert regpkg.exit_code == 0, regpkg.output
    assert len(RunRecord.read(tmp_path / "again.gpkg").inputs) == 60


@pytest.fixture(scope="module")
def cluster_client():
    """A Dask client of two in-process workers."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        yield client


def test_a_large_scan_is_spread_over_the_workers_and_gathered_in_order(tmp_path, monkeypatch, cluster_client):
    from distributed import get_task_stream

    from .test_sources import _damaged_chips

    alone, _ = scan_sources([str(UCMERCED)], chips=True)
    monkeypatch.setattr("rsprune_geo.reading.scan.SCAN_ALONE", 50)
    monkeypatch.setattr("rsprune_geo.reading.scan.SCAN_BATCH", 64)
    with get_task_stream(client=cluster_client) as stream:
        spread, _ = scan_sources([str(UCMERCED)], chips=True, client=cluster_client)
    batches = [task for task in stream.data if task["key"].startswith("_scan_batch")]
    assert len(batches) == 6  # the 370 past the first fifty, on the workers, 64 at a time
    assert list(spread.paths()) == list(alone.paths()) and [s for s in spread] == [s for s in alone]
    assert np.array_equal(spread.fingerprint, alone.fingerprint) and np.array_equal(spread.key, alone.key)
    damaged = _damaged_chips(tmp_path / "damaged")
    monkeypatch.setattr("rsprune_geo.reading.scan.SCAN_ALONE", 0)  # every file on a worker
    monkeypatch.setattr("rsprune_geo.reading.scan.SCAN_BATCH", 2)
    sources, skipped = scan_sources([str(damaged)], chips=True, client=cluster_client)
    assert [os.path.basename(s.path) for s in sources] == ["intact.jpg", "intact.png", "trailing.jpg"]
    assert [os.path.basename(s["path"]) for s in skipped] == ["cut.jpg", "cut.png", "flipped.png"]
    with pytest.raises(InputError, match="cut.jpg: the file is truncated"):
        scan_sources([str(damaged)], chips=True, strict=True, client=cluster_client)


def test_chips_whose_short_keys_collide_keep_distinct_tile_ids(tmp_path):
    import hashlib

    from PIL import Image

    folder = tmp_path / "chips"
    folder.mkdir()
    seen: dict[str, str] = {}
    for i in range(1 << 20):  # two names whose paths share the 4-byte key a mosaic's tile ids start with
        path = str(folder / f"c{i}.png")
        short = hashlib.blake2b(path.encode(), digest_size=4).hexdigest()
        if short in seen:
            pair = [seen[short], path]
            break
        seen[short] = path
    for k, path in enumerate(pair):
        Image.fromarray(np.full((8, 8, 3), 60 * k, np.uint8)).save(path)
    sources, _ = scan_sources([str(folder)], chips=True)
    grid = plan_grid(sources, 8, chips=True)
    ids = [grid.sources[p].tile_ids(np.array([p]))[0] for p in range(2)]
    assert ids[0] != ids[1] and all(len(i.split("-")[0]) == 16 for i in ids)


@pytest.mark.parametrize("chips", ["moved", "in place", "png"])
def test_the_inputs_table_of_chips_is_written_from_columns_as_entry_by_entry(tmp_path, chips):
    """A table of chips writes the inputs' table a column at a time: the same rows, dates and
    stretches as the entries built source by source, batch boundaries included."""
    import pyarrow as pa

    from rsprune_geo.reading.pixels import Scaling
    from rsprune_geo.runs.inputs import SourceInputs

    folders = CHIPS if chips == "png" else _georeferenced_chips(tmp_path / "chips", chips == "moved")
    sources, _ = scan_sources(folders, chips=True)
    assert isinstance(sources, SourceTable) and len(sources.profiles) == (1 if chips == "png" else 2)
    dates = source_dates(sources, r"_(\d{8})\.tif$")
    stretch = Scaling((1.0, 2.0, 3.0), (200.0, 210.0, 220.0))
    scalings = [stretch if k % 3 else Scaling() for k in range(len(sources))]
    by_columns = pa.Table.from_batches(list(SourceInputs(sources, scalings, dates).batches(3)))
    by_entries = pa.Table.from_batches(list(SourceInputs(list(sources), scalings, dates).batches(3)))
    assert by_columns.num_rows == len(sources) == (60 if chips == "png" else 5)
    assert by_columns.equals(by_entries)
    days = [f"2020-01-0{k}T00:00:00" for k in range(1, 6)] if chips != "png" else [None] * 5
    assert by_columns.column("date").to_pylist()[:5] == days
    assert by_columns.column("scaling").to_pylist()[:2] == [None, json.dumps({"low": [1.0, 2.0, 3.0],
                                                                               "high": [200.0, 210.0, 220.0]})]


def test_a_report_draws_no_raster_a_chip_under_the_map_of_a_table_of_chips(tmp_path, monkeypatch):
    """Georeferenced chips as a table of their own: the report's map shows their footprints, not a
    preview read from every chip (a million reads at a corpus's scale)."""
    from rsprune_geo.outputs import report

    drawn: list = []
    monkeypatch.setattr(report, "plot_map", lambda tiles, rasters, *a, **k: drawn.append(list(rasters)))
    monkeypatch.setattr(report, "plot_gallery", lambda *a, **k: None)
    chips = _georeferenced_chips(tmp_path / "chips", moved=True)
    for inline, expected in ((10, 5), (3, 0)):
        monkeypatch.setattr("rsprune_geo.runs.inputs.INLINE_INPUTS", inline)
        out = tmp_path / f"run-{inline}.gpkg"
        rsprune_geo.run(chips, out, chips=True, tile_size=16, keep=0.5)
        report.make_plots(out, tmp_path / f"plots-{inline}")
        assert len(drawn[-1]) == expected


def test_first_position_of_a_path_in_an_index_of_paths():
    unique, repeated = pd.Index(["a.png", "b.png", "c.png"]), pd.Index(["a.png", "b.png", "a.png", "c.png"])
    assert [first_position(unique, p) for p in ("a.png", "b.png", "c.png")] == [0, 1, 2]
    assert first_position(repeated, "a.png") == 0 and first_position(repeated, "c.png") == 3
    assert first_position(pd.Index(["b.png", "a.png", "b.png"]), "b.png") == 0  # unsorted, given twice: the first
    with pytest.raises(KeyError):
        first_position(unique, "d.png")
