"""What the driver holds a source: a folder of chips is a run of as many sources as tiles, so its
sources are a table of columns (a few tens of bytes a chip), its grid and tasks are computed, not
listed, its dates and stretch are codes, and the record's entries are built when written."""

import gc
import json
import platform
import tracemalloc
import warnings

import numpy as np
import pyarrow as pa
import pytest
import rasterio
from PIL import Image
from rasterio.windows import Window

from rsprune_geo.engine.scaleout import release_freed_memory
from rsprune_geo.pipeline import dates_and_ground, input_entries
from rsprune_geo.reading.grid import plan_grid
from rsprune_geo.reading.pixels import IDENTITY
from rsprune_geo.reading.remote import redact
from rsprune_geo.reading.scan import scan_sources
from rsprune_geo.runs.inputs import SourceInputs
from rsprune_geo.runs.record import RUN_RECORD, GroundRecord, RunRecord
from rsprune_geo.stages.stage1 import Repeated

from .conftest import UCMERCED, shared


def _held(folders: list[str]) -> tuple[int, int]:
    """Bytes the driver holds (Python objects and Arrow buffers) for the chips of ``folders`` once
    scanned, planned, dated and given their record entries; and how many chips."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0] + pa.total_allocated_bytes()
        sources, _ = scan_sources(folders, chips=True)
        grid = plan_grid(sources, 256, chips=True)
        grid.dates, _ = dates_and_ground(grid, None)
        inputs = SourceInputs(sources, Repeated(IDENTITY, len(sources)), grid.dates)
        inputs[0], sources[-1]  # noqa: B018 - an entry and a source built, as a run builds them
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] + pa.total_allocated_bytes() - before
    finally:
        tracemalloc.stop()
    assert len(inputs) == len(grid.dates) == grid.count == len(sources)
    return held, len(sources)


def _small_chips(folder, count: int) -> list[str]:
    """``count`` PNG chips of 16 px cut from the real RGB.byte.tif, in three sub-folders."""
    with rasterio.open(shared("rasterio-tests/RGB.byte.tif")) as src:
        image = src.read(window=Window(100, 40, 640, 640)).transpose(1, 2, 0)
    for k in range(count):
        r, c = (k // 40) % 40, k % 40
        target = folder / f"group{k % 3}" / f"chip{k:06d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(image[16 * r:16 * (r + 1), 16 * c:16 * (c + 1)])).save(target)
    return [str(folder / f"group{k}") for k in range(3)]


def test_a_chip_costs_the_driver_tens_of_bytes_before_any_pixel_is_read(tmp_path):
    warnings.simplefilter("ignore")
    few, many = _small_chips(tmp_path / "few", 600), _small_chips(tmp_path / "many", 3000)
    _held(many)  # imports, GDAL's drivers and the libraries' bounded caches (paths, PNG chunks) filled first
    held = [_held(few), _held(many)]
    per_chip = (held[1][0] - held[0][0]) / (held[1][1] - held[0][1])
    # 2,550 bytes when each chip held its own of everything, 1,319 with the values chips share
    # held once; as columns, its name, fingerprint, key and codes: 40 or so
    assert held[1][1] == 3000 and per_chip < 80, f"{per_chip:.0f} bytes a chip"


def test_the_entries_of_a_table_of_chips_share_their_values():
    sources, _ = scan_sources([str(UCMERCED / "beach"), str(UCMERCED / "forest")], chips=True)
    first, other = sources[0], sources[-1]
    assert other.bands == (1, 2, 3) and other.shape == (256, 256) and other.path.endswith("forest19.png")
    for name in ("dtype", "crs", "bands", "mask_mode", "block_shape", "overviews"):
        assert getattr(first, name) is getattr(other, name)
    grid = plan_grid(sources, 256, chips=True)
    assert grid.sources[0].rows is grid.sources[-1].rows and not grid.sources[0].rows.flags.writeable
    entries = input_entries(sources, [IDENTITY] * len(sources))
    assert entries[0]["bands"] is entries[-1]["bands"] == [1, 2, 3]
    assert entries[-1]["path"] == other.path and entries[-1]["scaling"] is None


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


def _anonymous_kib() -> int:
    with open("/proc/self/status") as status:
        return int(status.read().split("RssAnon:")[1].split()[0])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_freed_memory_is_given_back_to_the_system():
    """Memory freed among blocks still held stays resident until it is given back: 120 MB of
    2 KB blocks, one in fifty kept."""
    blocks = [bytes(2000) + bytes([k % 256]) for k in range(60_000)]
    kept = blocks[::50]
    del blocks
    gc.collect()
    before = _anonymous_kib()
    release_freed_memory()
    given_back = before - _anonymous_kib()
    assert given_back > 40 * 1024, f"{given_back} KiB given back"
    assert len(kept) == 1200


def test_a_run_gives_freed_memory_back_between_its_phases(tmp_path, monkeypatch):
    from rsprune_geo import pipeline

    phases: list[str] = []
    monkeypatch.setattr(pipeline, "release_freed_memory", lambda: phases.append("released"))
    _small_run(tmp_path / "o.gpkg", tmp_path / "cache",
               on_progress=lambda stage, done, total: phases.append(stage) if phases[-1:] != [stage] else None)
    released = [k for k, p in enumerate(phases) if p == "released"]
    assert len(released) == 3, phases
    assert phases[: released[0]] == ["tiling"], phases  # the scan's, before stage 1
    assert "stage1" in phases[released[0]: released[1]] and phases[released[2] - 1] == "writing", phases


def test_a_pass_gives_freed_memory_back_now_and_then(tmp_path, monkeypatch):
    from rsprune_geo.engine import passes

    calls: list[int] = []
    monkeypatch.setattr(passes, "release_freed_memory", lambda: calls.append(1))
    for every, out in ((1e9, "never"), (0.0, "always")):
        monkeypatch.setattr(passes, "RELEASE_EVERY_S", every)
        calls.clear()
        _small_run(tmp_path / f"{out}.gpkg", tmp_path / "cache")
        assert (len(calls) > 0) == (every == 0.0), (every, len(calls))


def _small_run(out, cache, **options):
    from rsprune_geo import pipeline

    return pipeline.run([shared("rio-tiler/pix4d_alpha_nodata.tif")], out, tile_size=64, keep=0.15,
                        prior_bank="default", cache_dir=str(cache), **options)


def test_the_release_period_starts_again_each_time_it_is_due():
    """A clock that moves one second a look, a period of 2.5 s: due at the 3rd, 6th and 9th
    look after the start, not at every look once the first period has passed."""
    from rsprune_geo.engine.scaleout import Periodic

    ticks = iter(range(100))
    period = Periodic(2.5, clock=lambda: float(next(ticks)))
    assert [k for k in range(1, 11) if period.due()] == [3, 6, 9]
