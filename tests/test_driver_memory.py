"""What the driver holds a source: a folder of chips is a run of as many sources as tiles, so what
a run keeps for each (its description, grid, task and record entry) is held once where the chips
share it, and writing the run's record never copies its inputs."""

import gc
import json
import tracemalloc
import warnings

import numpy as np

from rsprune_geo.pipeline import dates_and_ground, input_entries
from rsprune_geo.reading.grid import plan_grid
from rsprune_geo.reading.pixels import IDENTITY, redact, source_scaling
from rsprune_geo.reading.sources import scan_sources
from rsprune_geo.schema import RUN_RECORD, GroundRecord, RunRecord

from .conftest import UCMERCED


def test_a_chip_costs_the_driver_about_a_kilobyte_of_python_objects():
    warnings.simplefilter("ignore")
    scan_sources([str(UCMERCED / "beach")], chips=True)  # imports and GDAL's drivers loaded first
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        sources, _ = scan_sources([str(UCMERCED)], chips=True)
        grid = plan_grid(sources, 256, chips=True)
        entries = input_entries(sources, [source_scaling(s) for s in sources])
        dates = dates_and_ground(grid, None)
        gc.collect()
        held = (tracemalloc.get_traced_memory()[0] - before) / len(sources)
    finally:
        tracemalloc.stop()
    assert len(entries) == len(dates[0]) == grid.count == 420
    assert held < 1800, f"{held:.0f} bytes a chip"  # 2,550 when each chip held its own of everything


def test_consecutive_sources_share_equal_values_and_keep_them():
    sources, _ = scan_sources([str(UCMERCED / "beach"), str(UCMERCED / "forest")], chips=True)
    first, other = sources[0], sources[-1]
    for name in ("dtype", "crs", "transform", "bands", "mask_mode", "block_shape", "overviews", "date_tags"):
        assert getattr(first, name) is getattr(other, name)
    assert other.bands == (1, 2, 3) and other.shape == (256, 256) and other.path.endswith("forest19.png")
    grid = plan_grid(sources, 256, chips=True)
    assert grid.sources[0].rows is grid.sources[-1].rows and not grid.sources[0].rows.flags.writeable
    assert source_scaling(first) is IDENTITY
    entries = input_entries(sources, [IDENTITY] * len(sources))
    assert entries[0]["bands"] is entries[-1]["bands"] == [1, 2, 3]
    assert entries[-1]["path"] is other.path and entries[-1]["scaling"] is None


def test_redact_gives_back_the_same_text_when_there_is_nothing_to_hide():
    path = "/data/chips/a.png"
    assert redact(path) is path
    assert redact("https://user:pw@host/a.tif?sig=abc") == "https://REDACTED@host/a.tif?sig=REDACTED"


def test_a_record_is_written_without_copying_its_inputs(tmp_path):
    inputs = [{"path": f"/chips/{k}.png", "bands": [1, 2, 3], "scaling": None} for k in range(3)]
    record = RunRecord(run_id="r", inputs=inputs, counts={"kept": 1},
                       ground=GroundRecord(dates={"/chips/0.png": [None, None]}))
    data = record.to_dict()
    assert data["inputs"] is inputs and data["ground"]["dates"] is record.ground.dates
    assert data["counts"] == record.counts and data["counts"] is not record.counts
    record.write_json(tmp_path)
    text = (tmp_path / RUN_RECORD).read_text()
    assert json.loads(text) == json.loads(json.dumps(data, default=str))
    again = RunRecord.read(tmp_path)
    assert again.inputs == inputs and again.ground == record.ground and again.counts == {"kept": 1}
    assert np.array_equal(again.input_paths, [i["path"] for i in inputs])
