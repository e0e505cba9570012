"""Whole commands on a real-imagery mosaic: stage 1 and the full run against their floors.

The mosaic (about 300 Mpx, deflate, 512² blocks, uint8 RGB, UTM, 0.3 m as the bank) is assembled from the real
rasters in ../shared/data (each in its eight flips and rotations, tiled on a grid) and kept in
benchmarks/.data. Each figure is a whole command, as a user runs it, timed REPEATS times
(min / median / max):

- floor, read: a plain rasterio read of the whole file with GDAL's decoding threads on
  (``GDAL_NUM_THREADS=ALL_CPUS``), Python start-up included;
- stage 1: ``rsprune run MOSAIC -o OUT.gpkg --stage1 paper`` (no prior bank), start-up included;
- end to end: ``rsprune run MOSAIC -o OUT.gpkg --prior-bank UCMERCED --keep 0.15`` (every tile
  above the bank's floor is encoded; the bank's centroids and the encoder's export are cached by
  a first, untimed run; tile embeddings are not: each timed run has a fresh embedding cache);
- floor, encoder: the default encoder alone (its runtime as the run chooses it) on as many
  images as the run encodes, through ``encoder.encode``;
- in process (fixed costs apart): the same plain read and stage 1's scoring (``score_tiles``)
  inside one warmed-up Python process.

Writes benchmarks/results/real.json and real.md. Run with `make bench`.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data"
RESULTS = HERE / "results"
SHARED = HERE.parent.parent / "shared" / "data"
UCMERCED = SHARED / "scenes" / "ucmerced"
REPEATS = 3
CELL = 1024
CELLS = 17  # 17 × 1024 = 17408 px a side: 303 Mpx, 4624 tiles of 256 px
RSPRUNE = str(Path(sys.executable).with_name("rsprune"))


def real_images() -> list[np.ndarray]:
    """The real uint8 RGB rasters of ../shared/data (uint16 ones stretched 2–98%), (3, H, W)."""
    import rasterio

    from rsprune_geo.reading.pixels import Scaling, choose_bands, to_rgb8

    out = []
    for path in sorted((SHARED / "geotiff").rglob("*.tif")):
        with rasterio.open(path) as src:
            if src.width < 256 or src.height < 256:
                continue
            data = src.read(list(choose_bands(src)))
        if data.shape[0] == 1:
            data = np.repeat(data, 3, axis=0)
        if data.dtype != np.uint8:
            valid = data.reshape(3, -1)
            data = to_rgb8(data, Scaling.from_values([b[b > 0] for b in valid])).transpose(2, 0, 1)
        out.append(np.ascontiguousarray(data))
    return out


def build_mosaic(path: Path) -> Path:
    """Tile the real images (their eight flips and rotations) on a CELLS × CELLS grid of CELL px."""
    import rasterio
    from rasterio.transform import from_origin

    if path.exists():
        return path
    images = real_images()
    variants = []
    for img in images:
        for k in range(4):
            rotated = np.rot90(img, k, axes=(1, 2))
            variants += [rotated, rotated[:, :, ::-1]]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(variants))
    size = CELL * CELLS
    tmp = path.with_suffix(".tmp.tif")
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8",
               "crs": "EPSG:32633", "transform": from_origin(400000, 5400000, 0.3, 0.3), "tiled": True,
               "blockxsize": 512, "blockysize": 512, "compress": "deflate", "photometric": "RGB"}
    with rasterio.open(tmp, "w", **profile) as dst:
        for i in range(CELLS * CELLS):
            img = variants[order[i % len(order)]]
            cell = np.zeros((3, CELL, CELL), dtype=np.uint8)
            h, w = min(CELL, img.shape[1]), min(CELL, img.shape[2])
            cell[:, :h, :w] = img[:, :h, :w]
            if h < CELL or w < CELL:  # smaller images repeat to fill the cell
                cell = np.tile(cell[:, :h, :w], (1, -(-CELL // h), -(-CELL // w)))[:, :CELL, :CELL]
            r, c = divmod(i, CELLS)
            dst.write(cell, window=rasterio.windows.Window(c * CELL, r * CELL, CELL, CELL))
    os.replace(tmp, path)
    return path


def command_times(args: list[str], env: dict | None = None, before=None, repeats: int = REPEATS) -> list[float]:
    """Wall times of a whole command, ``repeats`` times (``before()`` runs untimed before each)."""
    times = []
    for _ in range(repeats):
        if before is not None:
            before()
        t0 = time.perf_counter()
        subprocess.run(args, check=True, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return times


IN_PROCESS = """
import json, statistics, sys, time
import rasterio
from rsprune_geo.stages.information import score_tiles
from rsprune_geo.reading.sources import open_source
from rsprune_geo.reading.tiling import make_tiles
path = sys.argv[1]
source = open_source(path)
tiles = make_tiles(source, 256)
score_tiles([source], [tiles])  # warm-up: the compiled kernel is loaded
out = {"read": [], "score": []}
for _ in range(REPEATS):
    t0 = time.perf_counter()
    with rasterio.open(path) as src:
        src.read()
    out["read"].append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    score_tiles([source], [tiles])
    out["score"].append(time.perf_counter() - t0)
print(json.dumps(out))
""".replace("REPEATS", str(REPEATS))


def summary(times: list[float]) -> dict:
    return {"min": min(times), "median": statistics.median(times), "max": max(times), "runs": len(times)}


def main() -> None:
    import rasterio

    DATA.mkdir(exist_ok=True)
    RESULTS.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    mosaic = build_mosaic(DATA / "real-mosaic.tif")
    print(f"mosaic {mosaic} ({time.perf_counter() - t0:.0f} s)")
    with rasterio.open(mosaic) as src:
        megapixels = src.width * src.height / 1e6
    work = DATA / "real-run"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    out = work / "out.gpkg"
    read_code = (f"import rasterio; src = rasterio.open({str(mosaic)!r}); src.read()")
    floor_read = command_times([sys.executable, "-c", read_code], env={"GDAL_NUM_THREADS": "ALL_CPUS"})
    print("floor read", floor_read)
    stage1 = command_times([RSPRUNE, "run", str(mosaic), "-o", str(out), "--overwrite", "-q", "--stage1", "paper",
                            "--cache-dir", str(work / "cache")])
    print("stage 1", stage1)
    proc = subprocess.run([sys.executable, "-c", IN_PROCESS, str(mosaic)], check=True, capture_output=True, text=True,
                          env={**os.environ, "GDAL_NUM_THREADS": "ALL_CPUS"})
    in_process = json.loads(proc.stdout.strip().splitlines()[-1])
    print("in process", in_process)
    run_args = [RSPRUNE, "run", str(mosaic), "-o", str(out), "--overwrite", "-q", "--prior-bank", str(UCMERCED),
                "--keep", "0.15", "--cache-dir", str(work / "cache")]
    subprocess.run(run_args, check=True, stdout=subprocess.DEVNULL)  # untimed: bank centroids, ONNX export

    def fresh_embeddings() -> None:
        shutil.rmtree(work / "cache" / "embeddings", ignore_errors=True)

    end_to_end = command_times(run_args, before=fresh_embeddings)
    print("end to end", end_to_end)
    from rsprune_geo import read_run

    tiles, record = read_run(out)
    encoded = int(record.stage2.stage1_candidates)
    runtime = record.stage2.encoder_runtime
    from rsprune_geo.features.runtime import CALIBRATION_IMAGES
    from rsprune_geo.stages.priorbank import find_prior_bank
    from rsprune_geo.stages.stage2 import bank_encoder

    bank = find_prior_bank([UCMERCED])
    encoder = bank_encoder(record.stage2.encoder, bank.paths, cache_dir=str(work / "cache"))
    images = np.random.default_rng(0).integers(0, 256, (256, encoder.input_size, encoder.input_size, 3),
                                               dtype=np.uint8)
    encoder.encode(images[:32])
    rates = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        for i in range(0, len(images), 32):
            encoder.encode(images[i : i + 32])
        rates.append(len(images) / (time.perf_counter() - t0))
    encoder_floor = [encoded / r for r in rates]
    record_out = {
        "mosaic": {"path": str(mosaic), "megapixels": megapixels, "tiles": len(tiles), "tile_size": 256,
                   "blocks": 512, "compress": "deflate"},
        "cores": os.cpu_count(),
        "floor_read_s": summary(floor_read),
        "stage1_s": summary(stage1),
        "end_to_end_s": summary(end_to_end),
        "encoded_tiles": encoded,
        "encoder": record.stage2.encoder, "encoder_runtime": runtime, "calibration_images": CALIBRATION_IMAGES,
        "encoder_images_per_s": summary(rates),
        "floor_encoder_s": summary(encoder_floor),
        "stage1_over_read": statistics.median(stage1) / statistics.median(floor_read),
        "in_process_read_s": summary(in_process["read"]),
        "in_process_stage1_s": summary(in_process["score"]),
        "in_process_stage1_over_read": statistics.median(in_process["score"]) / statistics.median(in_process["read"]),
        "end_to_end_over_floors": statistics.median(end_to_end)
        / (statistics.median(floor_read) + statistics.median(encoder_floor)),
        "counts": record.counts,
    }
    (RESULTS / "real.json").write_text(json.dumps(record_out, indent=2) + "\n")

    def cell(s: dict) -> str:
        return f"{s['median']:.2f} ({s['min']:.2f}–{s['max']:.2f})"

    r = record_out
    text = "\n".join([
        f"Real-imagery mosaic from ../shared/data: {megapixels:.0f} Mpx, {len(tiles)} tiles of 256 px, deflate, "
        f"512² blocks; {os.cpu_count()} cores; whole commands, start-up included; seconds, median (min–max) of "
        f"{REPEATS} runs.",
        "",
        "| what | seconds | vs its floor |",
        "|---|---|---|",
        f"| floor: plain read of the whole file, GDAL_NUM_THREADS=ALL_CPUS | {cell(r['floor_read_s'])} | 1.00× |",
        f"| stage 1: `rsprune run --stage1 paper` (no bank) | {cell(r['stage1_s'])} | "
        f"{r['stage1_over_read']:.2f}× the read |",
        f"| in process: plain read, GDAL_NUM_THREADS=ALL_CPUS | {cell(r['in_process_read_s'])} | 1.00× |",
        f"| in process: stage 1's scoring (`score_tiles`), warmed up | {cell(r['in_process_stage1_s'])} | "
        f"{r['in_process_stage1_over_read']:.2f}× the read |",
        f"| floor: the encoder alone ({r['encoder']}, {runtime}) on {encoded} images | {cell(r['floor_encoder_s'])} "
        "| |",
        f"| end to end: `rsprune run --prior-bank UCMERCED --keep 0.15`, {encoded} tiles encoded | "
        f"{cell(r['end_to_end_s'])} | {r['end_to_end_over_floors']:.2f}× (read + encoder) |",
        "",
    ])
    (RESULTS / "real.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
