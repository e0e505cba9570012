"""Tile embeddings in the window pass: every window read once, the tiles stage 1 passes encoded from
the pixels already in memory and assigned where they are encoded, cached window by window (a
second run encodes nothing); the paper's rule reads the candidates' windows a second time."""

import numpy as np
import pytest

import rsprune_geo
import rsprune_geo.engine.window as window_module
from rsprune_geo.engine.columns import TileColumns
from rsprune_geo.engine.embedding import embed_tiles
from rsprune_geo.engine.passes import run_pass
from rsprune_geo.engine.window import Encode, PassSpec, resize_tile
from rsprune_geo.features import get_encoder
from rsprune_geo.features.base import Encoder
from rsprune_geo.reading.grid import plan_grid
from rsprune_geo.reading.ground import ground_grid
from rsprune_geo.reading.pixels import read_window, source_scaling
from rsprune_geo.reading.sources import open_source
from rsprune_geo.runs.vocabulary import Status, status_code
from rsprune_geo.stages.clustering import assign_to_centroids, fit_scene_centroids

from .conftest import UCMERCED, shared


@pytest.fixture
def landsat():
    source = open_source(shared("rasterio-tests/RGB.byte.tif"))
    grid = plan_grid([source], 128, group_px=256, min_task_tiles=1)  # several windows, several tasks
    encoder = get_encoder("rcf-gaussian")
    centroids = fit_scene_centroids(np.random.default_rng(0).normal(size=(8, encoder.dim)),
                                    np.array(list("aabbccdd")), k_per_class=2, images_per_centroid=1)
    return source, grid, encoder, centroids


def _spec(grid, encoder, cache, folder=None, what=Encode.PASSED, vectors=False):
    crs = grid.sources[0].source.crs
    return PassSpec(folder, crs, ground_grid(grid, crs), 0.25, None, None, what,
                    encoder.input_size, encoder.cache_key, str(cache), vectors=vectors)


def test_every_window_is_read_once_and_its_survivors_encoded_from_memory(landsat, tmp_path, monkeypatch):
    source, grid, encoder, centroids = landsat
    reads = []
    real_read = window_module.read_for_scoring
    monkeypatch.setattr(window_module, "read_for_scoring", lambda src, w: reads.append(w) or real_read(src, w))
    columns = TileColumns.empty(grid.size)
    kept = {}
    run_pass(grid, [source_scaling(source)], _spec(grid, encoder, tmp_path / "cache", tmp_path / "parts",
                                                  vectors=True), columns, encoder, centroids,
             on_vectors=lambda positions, vectors: kept.update(zip(positions.tolist(), vectors)))
    windows = [w for task in grid.tasks for member in grid.task_tiles(task) for w, *_ in member.iter_windows()]
    assert len(reads) == len(windows) == 9 and {str(w) for w in reads} == {str(w) for w in windows}
    passed = np.flatnonzero(columns.status == status_code(Status.KEPT))
    assert passed.size and set(kept) == set(passed.tolist())  # only the tiles stage 1 passed were encoded
    others = columns.status != status_code(Status.KEPT)
    assert (columns.cluster[passed] >= 0).all() and (columns.cluster[others] < 0).all()
    # the same vectors as reading each tile on its own, at full size, and resizing it
    sample = passed[:5]
    row_off, col_off = grid.sources[0].offsets(sample)
    from rasterio.windows import Window

    images = np.stack([resize_tile(read_window(source, Window(c, r, 128, 128))[0], 64, np.empty((64, 64, 3), np.uint8))
                       for r, c in zip(row_off, col_off)])
    expected = encoder.encode(images)
    assert np.allclose(np.stack([kept[p] for p in sample.tolist()]), expected, atol=1e-5)
    ids, dist = assign_to_centroids(expected, centroids)
    assert np.array_equal(columns.cluster[sample], ids) and np.allclose(columns.distance[sample], dist, atol=1e-5)
    assert len(list((tmp_path / "parts").glob("part-*.parquet"))) == len(grid.tasks)


def test_a_second_pass_over_the_same_windows_encodes_nothing(landsat, tmp_path, monkeypatch):
    source, grid, encoder, centroids = landsat
    spec = _spec(grid, encoder, tmp_path / "cache")
    first = TileColumns.empty(grid.size)
    run_pass(grid, [source_scaling(source)], spec, first, encoder, centroids)
    monkeypatch.setattr(Encoder, "encode", lambda self, images: pytest.fail("encoded again"))
    again = TileColumns.empty(grid.size)
    run_pass(grid, [source_scaling(source)], spec, again, encoder, centroids)
    assert np.array_equal(first.cluster, again.cluster)
    assert np.array_equal(first.distance, again.distance, equal_nan=True)


def test_a_second_pass_reads_only_the_windows_that_hold_wanted_tiles(landsat, tmp_path, monkeypatch):
    source, grid, encoder, centroids = landsat
    task = grid.task_tiles(grid.tasks[0])[0]
    window, positions, *_ = next(task.iter_windows())
    reads, events = [], []
    real_read = window_module.read_for_scoring
    monkeypatch.setattr(window_module, "read_for_scoring", lambda src, w: reads.append(w) or real_read(src, w))
    columns = TileColumns.empty(grid.size)
    run_pass(grid, [source_scaling(source)], _spec(grid, encoder, tmp_path / "cache"), columns, encoder, centroids,
             wanted=positions[:1], on_progress=lambda stage, done, total: events.append((stage, done, total)))
    assert [str(w) for w in reads] == [str(window)]  # the task's other windows are not decoded
    assert columns.cluster[positions[0]] >= 0 and (np.delete(columns.cluster, positions[0]) < 0).all()
    # progress counts the tiles of the tasks the pass visits, to the last one
    size = task.positions.size
    assert events[0] == ("encoding", 0, size) and events[-1] == ("encoding", size, size)


def test_the_bank_rule_reads_each_window_once_and_the_papers_twice(tmp_path, monkeypatch):
    bank = tmp_path / "bank"
    for cls in ("forest", "river", "agricultural"):
        (bank / cls).mkdir(parents=True)
        for f in sorted((UCMERCED / cls).iterdir())[:3]:
            (bank / cls / f.name).symlink_to(f)
    reads = []
    real_read = window_module.read_for_scoring
    monkeypatch.setattr(window_module, "read_for_scoring", lambda src, w: reads.append(w) or real_read(src, w))
    common = dict(tile_size=128, keep=0.2, prior_bank=(str(bank),), encoder="rcf-empirical",
                  cache_dir=str(tmp_path / "cache"))
    raster = shared("rasterio-tests/RGB.byte.tif")
    rsprune_geo.run([raster], group_px=256, **common)
    once = len(reads)
    reads.clear()
    rsprune_geo.run([raster], group_px=256, stage1="paper", stage1_keep=0.5, **common)
    assert once == 9 and len(reads) > once  # the paper's rule reads the candidates' windows again


def test_embed_tiles_reads_tiles_at_the_encoders_size(landsat, tmp_path):
    source, grid, encoder, _ = landsat
    tiles = rsprune_geo.make_tiles(source, 128)
    vectors = embed_tiles(tiles.head(4), {source.path: source}, {source.path: source_scaling(source)}, encoder)
    assert vectors.shape == (4, encoder.dim) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_resize_tile_keeps_flat_tiles_flat_and_antialiases_strong_shrinks():
    flat = np.full((3, 256, 256), 77, dtype=np.uint8)
    assert (resize_tile(flat, 224, np.empty((224, 224, 3), np.uint8)) == 77).all()
    checker = (np.indices((256, 256)).sum(axis=0) % 2 * 255).astype(np.uint8)[None]  # one band: grey
    out = resize_tile(checker, 64, np.empty((64, 64, 3), np.uint8))
    assert np.array_equal(out[..., 0], out[..., 2]) and abs(int(out.mean()) - 127) <= 1 and out.std() < 2
    same = np.random.default_rng(0).integers(0, 256, (3, 64, 64), dtype=np.uint8)
    assert np.array_equal(resize_tile(same, 64, np.empty((64, 64, 3), np.uint8)), same.transpose(1, 2, 0))
