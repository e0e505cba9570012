"""Window tasks: small pieces (chips, small rasters, large tiles) are joined into tasks of at least
TASK_MIN_TILES tiles, in the grid's order, so a folder of chips is not a part per chip; mosaics'
row bands that are large enough stand alone as before."""

import numpy as np
import pandas as pd

import rsprune_geo
from rsprune_geo.reading.grid import TASK_MIN_TILES, TASK_TILES, plan_grid
from rsprune_geo.reading.scan import scan_sources
from rsprune_geo.runs.tiletable import part_paths

from .conftest import UCMERCED, shared


def test_a_folder_of_chips_is_gathered_into_few_tasks_in_order():
    sources, _ = scan_sources([str(UCMERCED)], chips=True)
    grid = plan_grid(sources, 256, chips=True)
    sizes = [grid.task_positions(task).size for task in grid.tasks]
    assert len(sources) == 420 and sizes == [TASK_MIN_TILES, 420 - TASK_MIN_TILES]
    assert [t.part for t in grid.tasks] == list(range(len(grid.tasks)))
    order = np.concatenate([grid.task_positions(task) for task in grid.tasks])
    assert np.array_equal(order, np.arange(420))  # the grid's order: the tile table's rows as before
    assert [len(t.members) for t in grid.tasks] == sizes  # a member per chip, each read once
    one_each = plan_grid(sources, 256, chips=True, min_task_tiles=1)
    assert len(one_each.tasks) == 420


def test_row_bands_large_enough_stand_alone_and_no_task_passes_the_maximum():
    sources, _ = scan_sources([shared("rasterio-tests/RGB.byte.tif")])
    large = plan_grid(sources, 16, group_px=256)  # bands of 16 x 49 = 784 tiles
    assert large.tasks == plan_grid(sources, 16, group_px=256, min_task_tiles=1).tasks
    small = plan_grid(sources, 32, group_px=64, task_tiles=300)  # bands of 2 x 24 = 48 tiles
    sizes = [small.task_positions(task).size for task in small.tasks]
    assert all(TASK_MIN_TILES <= n <= 300 for n in sizes[:-1]) and sum(sizes) == small.count
    assert max(sizes) <= TASK_TILES and len(small.tasks) < len(plan_grid(sources, 32, group_px=64,
                                                                          min_task_tiles=1).tasks)


def test_chips_joined_into_one_part_give_the_same_tile_table(tmp_path, monkeypatch):
    chips = [str(UCMERCED / name / "*.png") for name in ("agricultural", "beach", "forest")]
    options = dict(chips=True, keep=0.2, prior_bank="default")
    joined = rsprune_geo.run(chips, tmp_path / "joined", **options)
    monkeypatch.setattr("rsprune_geo.reading.grid.TASK_MIN_TILES", 1)
    apart = rsprune_geo.run(chips, tmp_path / "apart", **options)
    assert len(part_paths(tmp_path / "joined" / "tiles")) == 1 and len(part_paths(tmp_path / "apart" / "tiles")) == 60
    a, b = (pd.DataFrame(r.tiles.drop(columns="geometry")) for r in (joined, apart))
    pd.testing.assert_frame_equal(a, b)
    assert joined.tiles.geometry.equals(apart.tiles.geometry)


def test_a_folder_of_chips_caches_its_embeddings_in_packs_that_a_rerun_reads(tmp_path, monkeypatch):
    from rsprune_geo.engine import passes
    from rsprune_geo.features.cache import EmbeddingCache

    chips = [str(UCMERCED / name / "*.png") for name in ("agricultural", "beach", "forest")]
    options = dict(chips=True, keep=0.2, prior_bank="default", cache_dir=str(tmp_path / "cache"))
    stored, batches = [], []  # what the cache was given, and the packs of each batch encoded
    store_pack, encode_works = EmbeddingCache.store_pack, passes.encode_works

    def counted_store(self, pack, keys, vectors):
        stored.append(list(keys))
        return store_pack(self, pack, keys, vectors)

    def counted_encode(works, *args):
        batches.append({w.pack for w in works if w.pack and w.images is not None and len(w.images)})
        return encode_works(works, *args)

    monkeypatch.setattr(EmbeddingCache, "store_pack", counted_store)
    monkeypatch.setattr(passes, "encode_works", counted_encode)
    first = rsprune_geo.run(chips, tmp_path / "first", **options)
    files = [p for p in (tmp_path / "cache" / "embeddings").rglob("*") if p.is_file()]
    assert files and all("packs" in p.parts for p in files)
    # how reading and encoding interleave decides the batches, not these counts: a shard of two
    # files a task of each batch, every chip encoded stored once
    keys = [key for shard in stored for key in shard]
    assert len(keys) == len(set(keys)) == (first.tiles["cluster"] >= 0).sum()
    assert len(stored) == sum(len(packs) for packs in batches) and len(files) == 2 * len(stored)
    monkeypatch.undo()

    def refuse(*args, **kwargs):
        raise AssertionError("a rerun encoded a chip again")

    monkeypatch.setattr(EmbeddingCache, "store_pack", refuse)
    again = rsprune_geo.run(chips, tmp_path / "again", **options)
    pd.testing.assert_frame_equal(pd.DataFrame(first.tiles.drop(columns="geometry")),
                                  pd.DataFrame(again.tiles.drop(columns="geometry")))
