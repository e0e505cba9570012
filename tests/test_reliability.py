"""Reliability: unusable files in multi-file runs, interrupted runs that resume, reproducibility
across schedulers, input fingerprints, and property tests of the tiling."""

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.transform import from_origin
from rasterio.windows import bounds

import rsprune_geo
from rsprune_geo.errors import InputError
from rsprune_geo.features.base import Encoder
from rsprune_geo.fixtures.demo import DemoSpec, write_demo_mosaic, write_prior_bank
from rsprune_geo.reading.pixels import MaskMode
from rsprune_geo.reading.sources import RasterSource
from rsprune_geo.reading.tiling import grid_offsets, make_tiles, tile_windows

from .conftest import shared
from .gates import gated_cli, open_gate


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("rel")
    mosaic = write_demo_mosaic(root / "mosaic.tif", DemoSpec(size=1024, seed=5))
    bank = write_prior_bank(root / "bank", per_class=4)
    return {"root": root, "mosaic": mosaic, "bank": bank}


def rsprune(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "rsprune_geo.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=600, **kwargs)


def test_unusable_files_are_skipped_and_listed_or_fatal_with_strict(demo_files, tmp_path):
    truncated = tmp_path / "truncated.tif"  # a COG cut short: the header reads, the pixels do not
    data = Path(demo_files["mosaic"]).read_bytes()
    truncated.write_bytes(data[: len(data) * 6 // 10])
    (tmp_path / "notes.tif").write_text("not a raster")
    good = tmp_path / "good.tif"
    shutil.copy(shared("rasterio-tests/RGB.byte.tif"), good)
    out = tmp_path / "run.gpkg"
    proc = rsprune("run", good, truncated, tmp_path / "notes.tif", "-o", out, "--tile-size", "128")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("skipped: ") == 2 and "truncated or corrupt" in proc.stdout
    _, record = rsprune_geo.read_run(out)
    assert {Path(s["path"]).name for s in record.skipped} == {"truncated.tif", "notes.tif"}
    assert [Path(i["path"]).name for i in record.inputs] == ["good.tif"]
    strict = rsprune("run", good, truncated, "-o", tmp_path / "strict.gpkg", "--strict")
    assert strict.returncode == 1 and "truncated or corrupt" in strict.stderr and "Traceback" not in strict.stderr
    assert not (tmp_path / "strict.gpkg").exists()
    alone = rsprune("run", truncated, "-o", tmp_path / "alone.gpkg")
    assert alone.returncode == 1 and "truncated or corrupt" in alone.stderr


def test_all_nodata_raster_gives_a_clear_message(make_raster, tmp_path):
    path = make_raster(np.zeros((3, 300, 300), dtype=np.uint8), nodata=0)
    proc = rsprune("run", path, "-o", tmp_path / "o.gpkg", "--tile-size", "100")
    assert proc.returncode == 1 and "no tile passed stage 1 (9 nodata)" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "o.gpkg").exists()


def test_mixed_band_counts_and_float_nan(make_raster, tmp_path):
    one = make_raster(np.random.default_rng(0).integers(1, 255, (1, 128, 128), dtype=np.uint8), name="one.tif")
    three = make_raster(np.random.default_rng(1).integers(1, 255, (3, 128, 128), dtype=np.uint8), name="three.tif")
    with pytest.raises(InputError, match="mix one-band and three-band"):
        rsprune_geo.run([one, three], tile_size=64)
    assert len(rsprune_geo.run([one, three], tile_size=64, bands="1").tiles) == 8
    data = np.random.default_rng(2).normal(0, 1, (1, 128, 128)).astype(np.float32)
    data[0, :64] = np.nan
    data[0, 70, 70] = np.inf
    result = rsprune_geo.run([make_raster(data, name="f.tif")], tile_size=64, keep=1.0)
    assert result.tiles.nodata_fraction.tolist()[:2] == [1.0, 1.0]
    assert np.isfinite(result.tiles.loc[result.tiles.status == "kept", "b1_mean"]).all()


def _cache_shards(cache: Path) -> list[Path]:
    return list((cache / "embeddings").glob("*/*/shard-*.ids.npy"))


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_an_interrupted_run_resumes_from_the_cache_and_matches_a_clean_run(demo_files, tmp_path, sig):
    args = ["run", demo_files["mosaic"], "--tile-size", "64", "--keep", "0.1", "--stage1-keep", "0.5",
            "--prior-bank", demo_files["bank"], "--group-px", "128", "-q"]  # 64 windows, cached one by one
    cache = tmp_path / "cache"
    out = tmp_path / "resumed.gpkg"
    flag = tmp_path / "go-on"  # the run waits before its fourth shard until then: it cannot end before the signal
    command = gated_cli("rsprune_geo.features.cache:EmbeddingCache.store", 3, flag)
    proc = subprocess.Popen([*command, *map(str, args), "-o", str(out), "--cache-dir", str(cache)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while len(_cache_shards(cache)) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    proc.send_signal(sig)
    open_gate(flag)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode in (-signal.SIGKILL, 130), stderr  # it was stopped mid-encoding
    if sig == signal.SIGINT:
        assert b"Interrupted" in stderr and b"Traceback" not in stderr
    assert not out.exists()
    before = {p: p.stat().st_mtime_ns for p in _cache_shards(cache)}
    done_before = len(before)
    assert 3 <= done_before < 64
    again = rsprune(*args, "-o", out, "--cache-dir", cache)
    assert again.returncode == 0, again.stderr
    after = _cache_shards(cache)
    # the resumed run encoded only what was left: every finished batch kept untouched, new ones added
    assert all(p.stat().st_mtime_ns == mtime for p, mtime in before.items())
    assert len(after) > done_before
    if sig == signal.SIGINT:
        return  # the comparison with a clean run is made once, after SIGKILL
    clean = rsprune(*args, "-o", tmp_path / "clean.gpkg", "--cache-dir", tmp_path / "fresh-cache")
    assert clean.returncode == 0, clean.stderr
    a, _ = rsprune_geo.read_run(out)
    b, _ = rsprune_geo.read_run(tmp_path / "clean.gpkg")
    columns = ["tile_id", "status", "cluster", "scene", "cluster_rank"]
    assert a[columns].equals(b[columns])
    assert np.allclose(a.centroid_distance.fillna(-1), b.centroid_distance.fillna(-1), atol=1e-6)


def test_the_processes_scheduler_works_in_other_processes(demo_files, monkeypatch):
    """``scheduler="processes"`` reaches the task runner, which runs each task in a process of
    its own (a task's pid is not the run's)."""
    import os

    import rsprune_geo.engine.passes as passes
    from rsprune_geo.engine.scaleout import map_tasks

    pids = dict(map_tasks(os.getpid, [()] * 4, processes=True))
    assert len(pids) == 4 and os.getpid() not in pids.values()
    asked = []
    real = passes.map_tasks
    monkeypatch.setattr(passes, "map_tasks", lambda *a, **k: asked.append(k.get("processes")) or real(*a, **k))
    rsprune_geo.run([str(demo_files["mosaic"])], tile_size=256, scheduler="processes")
    rsprune_geo.run([str(demo_files["mosaic"])], tile_size=256, scheduler="sync")
    assert asked == [True, False]
    rsprune_geo.run([str(demo_files["mosaic"])], tile_size=256, scheduler="threads")
    assert asked == [True, False]  # threads read windows for the run's thread, without a task pool


def test_same_selection_on_every_scheduler(demo_files):
    # one cache per scheduler: every run encodes its own tiles, so stage 2 is compared, not reused
    runs = [rsprune_geo.run([str(demo_files["mosaic"])], tile_size=64, keep=0.1, prior_bank=(str(demo_files["bank"]),),
                            encoder="rcf-empirical", cache_dir=str(demo_files["root"] / f"cache-{scheduler}"),
                            scheduler=scheduler)
            for scheduler in ("sync", "threads", "processes")]
    for scheduler in ("sync", "threads", "processes"):
        assert _cache_shards(demo_files["root"] / f"cache-{scheduler}")
    kept = [r.tiles.loc[r.tiles.status == "kept", "tile_id"].tolist() for r in runs]
    assert kept[0] == kept[1] == kept[2]
    stats = [r.tiles[["entropy", "nodata_fraction", "b1_mean", "b3_std"]].to_numpy() for r in runs]
    assert np.array_equal(stats[0], stats[1], equal_nan=True) and np.array_equal(stats[0], stats[2], equal_nan=True)


def test_a_changed_input_invalidates_only_its_own_embeddings(demo_files, tmp_path, monkeypatch):
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    shutil.copy(demo_files["mosaic"], a)
    shutil.copy(shared("rasterio-tests/cogeo.tif"), b)
    options = dict(tile_size=128, keep=0.1, prior_bank=(str(demo_files["bank"]),), encoder="rcf-empirical",
                   cache_dir=str(tmp_path / "cache"), out_crs="EPSG:3857")
    first = rsprune_geo.run([str(a), str(b)], **options)
    encoded = []
    real = Encoder.encode
    monkeypatch.setattr(Encoder, "encode", lambda self, imgs: encoded.append(len(imgs)) or real(self, imgs))
    with rasterio.open(b) as src:  # rewrite b with other pixels: a new fingerprint
        profile, data = src.profile, src.read()
    with rasterio.open(b, "w", **profile) as dst:
        dst.write(255 - data)
    second = rsprune_geo.run([str(a), str(b)], **options)
    survivors_b = second.tiles[(second.tiles.source == str(b)) & second.tiles.status.isin(["kept", "not_selected"])]
    assert sum(encoded) == len(survivors_b) > 0  # only b's tiles, none of a's
    assert first.record.inputs[1]["fingerprint"] != second.record.inputs[1]["fingerprint"]


def fake_source(height, width, transform):
    return RasterSource(path="mem", width=width, height=height, count=1, dtype="uint8", crs=None,
                        transform=transform, bands=(1,), nodata=None, mask_mode=MaskMode.NONE, alpha_band=None,
                        block_shape=(1, width), overviews=(), fingerprint="x", key="k")


@settings(max_examples=150, deadline=None)
@given(
    height=st.integers(8, 300), width=st.integers(8, 300), tile=st.integers(8, 64),
    stride_ratio=st.floats(0.25, 1.5), edge=st.sampled_from(["drop", "pad"]),
    x0=st.floats(-1e6, 1e6), y0=st.floats(-1e6, 1e6), res=st.floats(0.1, 100),
)
def test_tiling_covers_every_pixel_as_expected(height, width, tile, stride_ratio, edge, x0, y0, res):
    stride = max(1, int(tile * stride_ratio))
    transform = from_origin(x0, y0, res, res)
    source = fake_source(height, width, transform)
    if edge == "drop" and (tile > height or tile > width):
        with pytest.raises(InputError):
            make_tiles(source, tile, stride, edge)
        return
    tiles = make_tiles(source, tile, stride, edge)
    cover = np.zeros((height + tile, width + tile), dtype=np.int32)
    for window in tile_windows(tiles):
        cover[window.row_off:window.row_off + tile, window.col_off:window.col_off + tile] += 1
    rows = grid_offsets(height, tile, stride, edge)
    cols = grid_offsets(width, tile, stride, edge)
    assert len(tiles) == rows.size * cols.size and tiles.tile_id.is_unique
    expected = np.zeros_like(cover)
    for r in rows:
        for c in cols:
            expected[r:r + tile, c:c + tile] += 1
    assert np.array_equal(cover, expected)
    inner = cover[:height, :width]
    if stride <= tile:  # (a stride larger than the tile samples with gaps, by design)
        # every pixel is covered; in drop mode, all but the remainder no whole tile reaches
        reach_r = height if edge == "pad" else rows[-1] + tile
        reach_c = width if edge == "pad" else cols[-1] + tile
        assert (inner[:reach_r, :reach_c] >= 1).all()
    for window, geom in zip(tile_windows(tiles), tiles.geometry):
        assert geom.equals(shapely.box(*bounds(window, transform)))


def test_moving_the_mosaic_does_not_change_its_selection(demo_files, tmp_path):
    """Tile ids carry a hash of the path; nothing that decides may depend on it."""
    import shutil

    runs = []
    for folder in ("here", "elsewhere/deeper"):
        target = tmp_path / folder / "renamed-mosaic.tif"
        target.parent.mkdir(parents=True)
        shutil.copy(demo_files["mosaic"], target)
        result = rsprune_geo.run([str(target)], tile_size=64, keep=0.1, prior_bank=(demo_files["bank"],),
                                 encoder="rcf-gaussian", cache_dir=str(tmp_path / "cache"))
        tiles = result.tiles.sort_values(["row_off", "col_off"])
        runs.append((tiles.tile_id.tolist(), tiles[["row_off", "col_off", "status", "cluster"]].to_numpy().tolist()))
    assert runs[0][0] != runs[1][0]  # the ids differ with the path …
    assert runs[0][1] == runs[1][1]  # … and no decision does


def test_two_runs_sharing_a_cache_at_once_agree(demo_files, tmp_path):
    args = ["run", demo_files["mosaic"], "--tile-size", "64", "--keep", "0.1", "--prior-bank", demo_files["bank"],
            "--encoder", "rcf-empirical", "--cache-dir", tmp_path / "shared-cache", "-q"]
    command = [sys.executable, "-m", "rsprune_geo.cli", *map(str, args)]
    procs = [subprocess.Popen([*command, "-o", str(tmp_path / f"{i}.gpkg")], stderr=subprocess.PIPE)
             for i in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    a, _ = rsprune_geo.read_run(tmp_path / "0.gpkg")
    b, _ = rsprune_geo.read_run(tmp_path / "1.gpkg")
    assert a[["tile_id", "status", "cluster"]].equals(b[["tile_id", "status", "cluster"]])


def test_a_full_cache_disk_is_a_clear_error_and_leaves_no_partial_shard(demo_files, tmp_path, monkeypatch):
    import errno

    from rsprune_geo.errors import OutputError

    real_save = np.save
    calls = {"n": 0}

    def filling(path, array, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:  # the first batch fits, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(path, array, *args, **kwargs)

    monkeypatch.setattr(np, "save", filling)
    cache = tmp_path / "cache"
    out = tmp_path / "full.gpkg"
    with pytest.raises(OutputError, match="cannot write the embedding cache .No space left on device"):
        rsprune_geo.run([str(demo_files["mosaic"])], out, tile_size=64, keep=0.1, group_px=256,
                        prior_bank=(str(demo_files["bank"]),), encoder="rcf-gaussian", cache_dir=str(cache))
    assert not out.exists()
    vec = list((cache / "embeddings").glob("*/*/shard-*.vec.npy"))
    ids = list((cache / "embeddings").glob("*/*/shard-*.ids.npy"))
    assert len(vec) == len(ids) and not list((cache / "embeddings").glob("*/*/.tmp-*"))


def _with_a_damaged_block(source: str, target: Path, block: tuple[int, int]) -> Path:
    """``source`` rewritten as a tiled, deflated GeoTIFF (blocks of 128 px) whose ``block`` (row,
    column) holds zeros instead of its compressed bytes: its first and last pixels read, that
    block does not."""
    with rasterio.open(source) as src:
        profile = dict(src.profile, driver="GTiff", tiled=True, blockxsize=128, blockysize=128, compress="deflate")
        with rasterio.open(target, "w", **profile) as dst:
            dst.write(src.read())
    with rasterio.open(target) as src:
        offset = int(src.get_tag_item(f"BLOCK_OFFSET_{block[1]}_{block[0]}", "TIFF", bidx=1))
        size = int(src.get_tag_item(f"BLOCK_SIZE_{block[1]}_{block[0]}", "TIFF", bidx=1))
    raw = bytearray(target.read_bytes())
    raw[offset + 8 : offset + size - 8] = bytes(size - 16)
    target.write_bytes(bytes(raw))
    return target


def test_a_damaged_block_makes_its_tile_nodata_not_the_run_fail(tmp_path):
    real = shared("rasterio-tests/RGB.byte.tif")
    intact = tmp_path / "intact.tif"
    shutil.copy(real, intact)
    damaged = _with_a_damaged_block(real, tmp_path / "damaged.tif", (2, 3))
    with rasterio.open(damaged) as src:
        src.read(1, window=rasterio.windows.Window(0, 0, 1, 1))  # what a scan checks still reads
        with pytest.raises(rasterio.errors.RasterioIOError):
            src.read(1, window=rasterio.windows.Window(3 * 128, 2 * 128, 128, 128))
    proc = rsprune("run", damaged, "-o", tmp_path / "d", "--tile-size", "128")  # the shipped profile: bank rule
    assert proc.returncode == 0, proc.stderr
    assert "1 window of 1 file could not be read" in proc.stdout + proc.stderr
    assert "(--strict stops the run instead)" in proc.stdout + proc.stderr
    described = rsprune("info", tmp_path / "d")  # the record's warning, as the run said it
    assert "could not be read" in described.stdout and "(--strict stops the run instead)" in described.stdout
    tiles, record = rsprune_geo.read_run(tmp_path / "d")
    bad = tiles[tiles["reason"].str.contains("cannot be read")]
    assert list(zip(bad["row_off"], bad["col_off"], bad["status"])) == [(256, 384, "nodata")]
    assert any("damaged.tif" in w and "could not be read" in w for w in record.warnings)
    good, _ = rsprune_geo.read_run(rsprune_geo.run([str(intact)], tmp_path / "i", tile_size=128,
                                                   prior_bank="default").output)
    others = tiles.drop(bad.index).set_index(["row_off", "col_off"])
    same = good.set_index(["row_off", "col_off"]).loc[others.index]
    assert np.allclose(others["entropy"], same["entropy"]) and (others["status"] == same["status"]).all()
    strict = rsprune("run", damaged, "-o", tmp_path / "s", "--tile-size", "128", "--strict")
    assert strict.returncode == 1 and "damaged.tif: reading failed" in strict.stderr
    assert "Traceback" not in strict.stderr and not (tmp_path / "s").exists()


def test_a_window_is_read_again_tile_by_tile_only_while_its_file_still_answers(tmp_path):
    from rsprune_geo.engine.window import _read_tolerant
    from rsprune_geo.reading.grid import plan_grid
    from rsprune_geo.reading.pixels import read_window
    from rsprune_geo.reading.sources import open_source

    damaged = _with_a_damaged_block(shared("rasterio-tests/RGB.byte.tif"), tmp_path / "damaged.tif", (1, 1))
    source = open_source(str(damaged))
    grid = plan_grid([source], 128, group_px=256)
    tiles = grid.task_tiles(grid.tasks[0])[0]
    window, _, row_off, col_off = next(w for w in tiles.iter_windows() if w[0].row_off == 0 and w[0].col_off == 0)
    rows_in, cols_in = row_off - int(window.row_off), col_off - int(window.col_off)
    (data, valid, _, _), unreadable, error = _read_tolerant(tiles, window, rows_in, cols_in, strict=False)
    assert list(zip(row_off[unreadable], col_off[unreadable])) == [(128, 128)] and "damaged.tif" in error[1]
    intact_data, intact_valid = read_window(open_source(shared("rasterio-tests/RGB.byte.tif")), window)
    assert not valid[128:, 128:].any() and valid[:128].any()
    assert np.array_equal(valid[:128], intact_valid[:128]) and np.array_equal(data[:, :128], intact_data[:, :128])
    assert np.array_equal(data[:, 128:, :128], intact_data[:, 128:, :128])  # the others read as ever
    with pytest.raises(InputError, match="damaged.tif"):
        _read_tolerant(tiles, window, rows_in, cols_in, strict=True)
    damaged.unlink()  # gone since it was scanned: the run stops, not a window of nodata after another
    with pytest.raises(InputError, match="damaged.tif"):
        _read_tolerant(tiles, window, rows_in, cols_in, strict=False)
