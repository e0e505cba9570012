"""A million tiles through both stages on a 2-worker Dask LocalCluster: the driver's peak memory.

The workers do the per-tile work: each window task reads its window once, scores its tiles,
encodes those above the bank's floor (rcf-gaussian on onnxruntime, the fastest encoder of the
package), assigns them to centroids broadcast once, and writes the window's rows as a part of
the tile table; only compact columns come back. The driver holds those columns (a few tens of
bytes a tile), selects, and sends each part its decisions to write back; the output is a run
folder (GeoParquet parts; a GeoPackage beside them up to a million tiles, written by a worker).
Measured at 16k, 262k and 1,048,576 tiles of 32 px (1, 4 and 16 generated 8192² mosaics, 65,536
tiles each; the first level is one 4096² mosaic), each in a fresh process after a warm-up run on a
small mosaic; the peak is the kernel's high-water mark of resident memory (VmHWM), reset after
the warm-up (``/proc/self/clear_refs``), so it is the run's own peak, not the warm-up's.

Writes benchmarks/results/million.json and million.md. Run with `make bench-million` (about 20
minutes on 2 cores; the 16 mosaics, 1.2 GiB, are generated once into benchmarks/.data/tiles-1m).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench_scale import demo_mosaic, rss_mib  # this folder is on the path when a script runs

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data"
FOLDER = DATA / "tiles-1m"
SIZE, TILE, FILES = 8192, 32, 16
ENCODER = "rcf-gaussian"


def mosaics() -> list[Path]:
    """The 16 generated 8192² mosaics (seeded, side by side on a 4 x 4 grid), written once."""
    FOLDER.mkdir(parents=True, exist_ok=True)
    paths = [FOLDER / f"demo-8192-{i:02d}.tif" for i in range(FILES)]

    def write(i: int) -> None:
        if paths[i].exists():
            return
        east, north = 400000.0 + SIZE * 10.0 * (i % 4), 5300000.0 - SIZE * 10.0 * (i // 4)
        code = ("import sys; from rsprune_geo.fixtures.demo import DemoSpec, write_demo_mosaic; "
                f"write_demo_mosaic(sys.argv[1], DemoSpec(size={SIZE}, seed={100 + i}, origin=({east}, {north})))")
        subprocess.run([sys.executable, "-c", code, str(paths[i])], check=True)

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(write, range(FILES)))
    return paths


def folder_mib(path: Path) -> float:
    """Size of a folder's files (MiB)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def child(files: list[str]) -> None:
    """(child process) warm up, reset the peak, run both stages on ``files`` with 2 workers."""
    import rsprune_geo
    from rsprune_geo.features import encoder_info

    bank = str(DATA / "prior-bank")
    options = dict(tile_size=TILE, keep=0.15, prior_bank=(bank,), encoder=ENCODER)
    with tempfile.TemporaryDirectory(dir=DATA) as tmp:
        rsprune_geo.run([str(demo_mosaic(1024))], Path(tmp) / "warm", cache_dir=f"{tmp}/cache", **options)
        warm_peak = rss_mib()["VmHWM"]
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
        start = rss_mib()["VmHWM"]
        t0 = time.perf_counter()
        result = rsprune_geo.run(files, Path(tmp) / "run", cache_dir=f"{tmp}/cache", workers=2, **options)
        seconds = time.perf_counter() - t0
        peak = rss_mib()["VmHWM"]
        size = folder_mib(Path(tmp) / "run")
        has_gpkg = (Path(tmp) / "run" / "tiles.gpkg").exists()
    record = result.record
    tiles, stage2 = sum(record.counts.values()), record.stage2
    encoded = int(stage2.stage1_candidates)
    print(json.dumps({
        "files": len(files), "tiles": tiles, "encoded": encoded, "kept": record.counts.get("kept", 0),
        "seconds": seconds, "timings": result.timings, "runtime": stage2.encoder_runtime,
        "encoded_per_s": encoded / result.timings["windows"],
        "driver_rss_at_start_mib": start, "driver_peak_rss_mib": peak, "warm_up_peak_mib": warm_peak,
        "growth_mib": peak - start, "growth_bytes_per_tile": (peak - start) * 2**20 / tiles,
        "embedding_matrix_mib": encoded * encoder_info(ENCODER).dim * 4 / 2**20,
        "run_folder_mib": size, "geopackage_in_folder": has_gpkg,
    }))


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "child":
        child(sys.argv[2:])
        return
    from rsprune_geo.fixtures.demo import write_prior_bank

    bank = DATA / "prior-bank"
    if not bank.exists():
        write_prior_bank(bank)
    paths = mosaics()
    levels = [[demo_mosaic(4096)], paths[:4], paths]
    rows = []
    for files in levels:
        proc = subprocess.run([sys.executable, __file__, "child", *map(str, files)], capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(proc.stderr[-4000:])
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    record = {"encoder": ENCODER, "tile_size": TILE, "workers": 2, "cores": os.cpu_count(), "rows": rows}
    (out / "million.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [f"Both stages on a 2-worker LocalCluster ({ENCODER} on {rows[-1]['runtime']}, {TILE}-px tiles, keep "
             f"0.15, a run folder written; {os.cpu_count()} cores): the driver's peak memory (VmHWM reset after a "
             "warm-up run, fresh process each) as the tiles grow:", "",
             "| mosaics | tiles | encoded | seconds | encoded/s | driver at start (MiB) | driver peak (MiB) | "
             "growth (MiB) | bytes per tile | embeddings it did not hold (MiB) | run folder (MiB) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        gpkg = " (with tiles.gpkg)" if row["geopackage_in_folder"] else " (parts only)"
        lines.append(f"| {row['files']} | {row['tiles']:,} | {row['encoded']:,} | {row['seconds']:.0f} | "
                     f"{row['encoded_per_s']:.0f} | {row['driver_rss_at_start_mib']:.0f} | "
                     f"{row['driver_peak_rss_mib']:.0f} | {row['growth_mib']:.0f} | "
                     f"{row['growth_bytes_per_tile']:.0f} | {row['embedding_matrix_mib']:.0f} | "
                     f"{row['run_folder_mib']:.0f}{gpkg} |")
    text = "\n".join(lines) + "\n"
    (out / "million.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
