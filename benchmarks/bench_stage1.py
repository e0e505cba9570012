"""Stage-1 throughput on the demo mosaic against the floor of one plain rasterio read, in process.

A small mosaic (16 Mpx, 4 windows): per-call fixed costs weigh here; `bench_real.py` measures a
300 Mpx real mosaic as whole commands. Writes benchmarks/results/stage1.json and stage1.md. Run
with `make bench`.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from rsprune_geo.fixtures.demo import DemoSpec, write_demo_mosaic
from rsprune_geo.reading.pixels import source_scaling
from rsprune_geo.reading.sources import open_source
from rsprune_geo.reading.tiling import make_tiles
from rsprune_geo.stages.information import score_tiles

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DATA = HERE / ".data"
REPEATS = 5


def timed(func, repeats=REPEATS):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        func()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def plain_read(path):
    with rasterio.open(path) as src:
        src.read([1, 2, 3])


def blockwise_read(path):
    with rasterio.open(path) as src:
        for _, window in src.block_windows(1):
            src.read([1, 2, 3], window=window)


def naive_per_tile(path, tile_size):
    """The obvious way: one rasterio read per tile, float luma, np.histogram entropy."""
    with rasterio.open(path) as src:
        for row in range(0, src.height - tile_size + 1, tile_size):
            for col in range(0, src.width - tile_size + 1, tile_size):
                data = src.read([1, 2, 3], window=Window(col, row, tile_size, tile_size)).astype(float)
                luma = 0.299 * data[0] + 0.587 * data[1] + 0.114 * data[2]
                valid = (data != 0).any(axis=0)
                hist, _ = np.histogram(luma[valid], bins=256, range=(0, 256))
                p = hist[hist > 0] / max(hist.sum(), 1)
                _ = -(p * np.log2(p)).sum()


def naive_skimage(path, tile_size):
    """The textbook way: one rasterio read per tile and skimage.measure.shannon_entropy."""
    from skimage.color import rgb2gray
    from skimage.measure import shannon_entropy

    with rasterio.open(path) as src:
        for row in range(0, src.height - tile_size + 1, tile_size):
            for col in range(0, src.width - tile_size + 1, tile_size):
                data = src.read([1, 2, 3], window=Window(col, row, tile_size, tile_size))
                grey = (rgb2gray(np.moveaxis(data, 0, -1)) * 255).astype(np.uint8)
                shannon_entropy(grey)


def main() -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    mosaic = DATA / "demo-mosaic-4096.tif"
    if not mosaic.exists():
        print("generating the demo mosaic ...")
        write_demo_mosaic(mosaic, DemoSpec(size=4096))
    tile_size = 256
    source = open_source(str(mosaic))
    tiles = make_tiles(source, tile_size)
    scaling = source_scaling(source)
    megapixels = source.width * source.height / 1e6

    plain_read(mosaic)  # warm the page cache so every figure reads from memory
    floor_full, full_times = timed(lambda: plain_read(mosaic))
    floor_blocks, block_times = timed(lambda: blockwise_read(mosaic))
    floor = min(floor_full, floor_blocks)
    floor_times = full_times if floor_full <= floor_blocks else block_times
    results, spread = {}, {"floor": floor_times}
    for scheduler in ("threads", "sync"):
        t, times = timed(lambda s=scheduler: score_tiles([source], [tiles], [scaling], scheduler=s))
        results[scheduler], spread[scheduler] = t, times
    naive, _ = timed(lambda: naive_per_tile(mosaic, tile_size), repeats=3)
    try:
        naive_sk, _ = timed(lambda: naive_skimage(mosaic, tile_size), repeats=3)
    except ImportError:
        naive_sk = float("nan")

    record = {
        "mosaic": {"path": str(mosaic.relative_to(HERE.parent)), "width": source.width,
                   "height": source.height, "bands": 3, "dtype": "uint8", "block": list(source.block_shape),
                   "compression": "deflate", "megapixels": megapixels, "tiles": len(tiles),
                   "tile_size": tile_size},
        "seconds": {
            "plain_read_full": floor_full,
            "plain_read_blockwise": floor_blocks,
            "stage1_threads": results["threads"],
            "stage1_sync": results["sync"],
            "naive_per_tile": naive,
            "naive_skimage": naive_sk,
        },
        "megapixels_per_s": {
            "plain_read": megapixels / floor,
            "stage1_threads": megapixels / results["threads"],
            "stage1_sync": megapixels / results["sync"],
            "naive_per_tile": megapixels / naive,
            "naive_skimage": megapixels / naive_sk,
        },
        "ratio_stage1_to_read": {
            "threads": results["threads"] / floor,
            "sync": results["sync"] / floor,
        },
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "processor": platform.machine()},
        "repeats": REPEATS,
        "seconds_all_runs": spread,
        "note": "median of repeats, page cache warm (decompression, not disk, is the floor)",
    }
    (RESULTS / "stage1.json").write_text(json.dumps(record, indent=2) + "\n")
    mp = record["megapixels_per_s"]
    ratio = record["ratio_stage1_to_read"]
    table = "\n".join([
        f"Stage 1 on the demo mosaic ({source.width}x{source.height} px, 3 x uint8, deflate COG, "
        f"{len(tiles)} tiles of {tile_size} px), {os.cpu_count()} cores, in process, page cache warm; seconds as "
        f"median (min–max) of {REPEATS}:",
        "",
        "| what | seconds | megapixels/s | vs plain read |",
        "|---|---|---|---|",
        f"| plain rasterio read (floor) | {floor:.3f} ({min(floor_times):.3f}–{max(floor_times):.3f}) | "
        f"{mp['plain_read']:.1f} | 1.00x |",
        f"| stage 1, local threads | {results['threads']:.3f} ({min(spread['threads']):.3f}–"
        f"{max(spread['threads']):.3f}) | {mp['stage1_threads']:.1f} | {ratio['threads']:.2f}x |",
        f"| stage 1, one thread | {results['sync']:.3f} ({min(spread['sync']):.3f}–{max(spread['sync']):.3f}) | "
        f"{mp['stage1_sync']:.1f} | {ratio['sync']:.2f}x |",
        f"| naive per-tile read + np.histogram | {naive:.3f} | {mp['naive_per_tile']:.1f} | {naive / floor:.2f}x |",
        f"| naive per-tile read + skimage shannon_entropy | {naive_sk:.3f} | {mp['naive_skimage']:.1f} "
        f"| {naive_sk / floor:.2f}x |",
        "",
    ])
    (RESULTS / "stage1.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
