"""A folder of chips, the other shape of a training corpus, as a whole command against its floor.

The folder (CHIPS PNG chips of 256 px in eight sub-folders) is cut from the real-imagery mosaic of
``bench_real.py`` (assembled from ../shared/data) and kept in benchmarks/.data. Each figure is a
whole command, start-up included, timed REPEATS times (min / median / max):

- floor, read: every chip decoded once by rasterio on as many threads as cores, Python start-up
  included;
- floor, encoder: the run's encoder alone on as many images already at its input size
  (``bench_real.encoder_probe``, the faster of its batch sizes);
- ``rsprune run CHIPS --chips --keep 0.15`` (the shipped UC Merced profile; a fresh embedding cache
  each time), as it runs: small sources are joined into window tasks of at least
  ``TASK_MIN_TILES`` tiles, so the tile table has a few parts, not one per chip;
- the same with a task per chip (``TASK_MIN_TILES = 1``: how runs planned chips before), once;
- what the driver holds a chip before any pixel is read: the growth of this process's resident
  memory over scanning the folder and planning its grid (a source and a grid object per chip);
- what a whole run holds a chip at its peak: the run's peak resident memory (``ru_maxrss``) over
  SMALL chips of 32 px cut from the same mosaic (ten sub-folders), on half the sub-folders and on
  all of them, the difference over the chips between (small chips, so that what grows with the
  number of chips is not hidden by what grows with their pixels; half, not one sub-folder, so that
  what a run's first few thousand chips fill once, the encoder's arena and the readers' memory
  pools, is in both and cancels).

Writes benchmarks/results/chips.json and chips.md. Run with `make bench`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_real import DATA, RESULTS, RSPRUNE, build_mosaic, command_times, encoder_probe, summary  # noqa: E402

CHIPS = 2048
SIZE = 256
SMALL = 20_000
REPEATS = 3
READ = """
import sys
import warnings
warnings.simplefilter("ignore")  # chips carry no georeferencing
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import rasterio
def read(path):
    with rasterio.open(path) as src:
        return src.read().sum()
with ThreadPoolExecutor(%d) as pool:
    list(pool.map(read, sorted(Path(sys.argv[1]).rglob("*.png"))))
"""
PEAK = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""
APART = """
import sys
import rsprune_geo.reading.grid as grid
grid.TASK_MIN_TILES = 1
from rsprune_geo.cli import main
sys.argv[0] = "rsprune"
main()
"""


def build_chips(folder: Path) -> Path:
    """CHIPS chips of SIZE px cut from the real mosaic at spread-out tile positions, as PNG."""
    import rasterio
    from PIL import Image
    from rasterio.windows import Window

    if folder.exists():
        return folder
    mosaic = build_mosaic(DATA / "real-mosaic.tif")
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with rasterio.open(mosaic) as src:
        side = src.width // SIZE
        picks = np.sort(np.random.default_rng(0).choice(side * side, CHIPS, replace=False))
        for k, position in enumerate(picks.tolist()):
            r, c = divmod(position, side)
            pixels = src.read(window=Window(c * SIZE, r * SIZE, SIZE, SIZE)).transpose(1, 2, 0)
            target = tmp / f"group{k % 8}" / f"chip{k:05d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(target)
    os.replace(tmp, folder)
    return folder


def resident_kib() -> int:
    """This process's resident memory (KiB)."""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0])


def driver_bytes_a_chip(folder: Path) -> float:
    """Bytes of resident memory a chip costs the driver once scanned and planned."""
    import gc
    import warnings

    from rsprune_geo.reading.grid import plan_grid
    from rsprune_geo.reading.sources import scan_sources

    warnings.simplefilter("ignore")
    scan_sources([str(folder / "group0")], chips=True)  # imports and GDAL's drivers loaded first
    gc.collect()
    before = resident_kib()
    sources, _ = scan_sources([str(folder)], chips=True)
    grid = plan_grid(sources, SIZE, chips=True)
    gc.collect()
    grown = resident_kib() - before
    assert grid.count == len(sources) == CHIPS
    return grown * 1024 / CHIPS


def build_small_chips(folder: Path) -> Path:
    """SMALL chips of 32 px cut from the real mosaic, in ten sub-folders, as PNG."""
    import rasterio
    from PIL import Image
    from rasterio.windows import Window

    if folder.exists():
        return folder
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with rasterio.open(build_mosaic(DATA / "real-mosaic.tif")) as src:
        side = 32
        block = src.read(window=Window(0, 0, 150 * side, 150 * side)).transpose(1, 2, 0)
    for k in range(SMALL):
        r, c = divmod(k, 150)
        target = tmp / f"group{k % 10}" / f"chip{k:06d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(block[r * side:(r + 1) * side, c * side:(c + 1) * side])).save(target)
    os.replace(tmp, folder)
    return folder


def run_peak(args: list[str]) -> int:
    """Peak resident memory (bytes) of one whole command."""
    done = subprocess.run([sys.executable, "-c", PEAK, *args], check=True, capture_output=True, text=True)
    return int(done.stdout.split()[-1]) * 1024


def main() -> None:
    from rsprune_geo.runfile import read_run

    folder = build_chips(DATA / f"chips-{CHIPS}")
    held = driver_bytes_a_chip(folder)
    work = Path(tempfile.mkdtemp(prefix="bench-chips-"))
    try:
        read = command_times([sys.executable, "-c", READ % (os.cpu_count() or 1), str(folder)])
        out, cache = work / "run", work / "cache"

        def fresh() -> None:
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(cache / "embeddings", ignore_errors=True)

        args = ["-q", "run", str(folder), "--chips", "--keep", "0.15", "-o", str(out), "--cache-dir", str(cache)]
        command_times([RSPRUNE, *args], repeats=1, after=fresh)  # the profile's network unpacked, untimed
        joined = command_times([RSPRUNE, *args], before=fresh)
        parts_joined = len(list((out / "tiles").glob("part-*.parquet")))
        tiles, record = read_run(out)
        apart = command_times([sys.executable, "-c", APART, *args], before=fresh, repeats=1)
        parts_apart = len(list((out / "tiles").glob("part-*.parquet")))
        small = build_small_chips(DATA / f"small-chips-{SMALL}")
        peaks = {}
        half = [small / f"group{k}" for k in range(5)]
        for name, where in (("part", half), ("whole", [small])):
            fresh()
            peaks[name] = (run_peak([RSPRUNE, *args[:2], *map(str, where), *args[3:]]),
                           sum(len(list(w.rglob("*.png"))) for w in where))
        run_bytes = (peaks["whole"][0] - peaks["part"][0]) / (peaks["whole"][1] - peaks["part"][1])
        batches, rate = encoder_probe(record, cache, n_images=CHIPS)
        encoder = max(rate(batch) for batch in batches for _ in range(REPEATS))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    encoded = int((tiles["cluster"] >= 0).sum())
    floor = min(read) + encoded / encoder
    result = {"chips": CHIPS, "size": SIZE, "cores": os.cpu_count(), "floor_read": summary(read),
              "encoder_images_per_s": encoder, "encoded": encoded, "joined": summary(joined),
              "parts_joined": parts_joined, "apart": summary(apart), "parts_apart": parts_apart,
              "floor_s": floor, "driver_bytes_a_chip": held,
              "run_peak_bytes_a_chip": run_bytes, "run_peaks": peaks,
              "when": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime())}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "chips.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / "chips.md").write_text(report(result))
    print(report(result))


def report(r: dict) -> str:
    def row(what: str, s: dict, ratio: str) -> str:
        return f"| {what} | {s['median']:.2f} ({s['min']:.2f}–{s['max']:.2f}) | {ratio} |"

    ms = 1000 / r["chips"]
    return "\n".join([
        f"# A folder of chips ({r['chips']} PNG chips of {r['size']} px cut from the real mosaic; "
        f"{r['cores']} cores)", "",
        "Whole commands, start-up included; seconds, median (min–max); embeddings never cached.", "",
        "| what | seconds | vs the floor |",
        "|---|---|---|",
        row("floor: every chip decoded (rasterio, a thread a core)", r["floor_read"], "—"),
        f"| floor: the encoder alone on {r['encoded']} images at its input size | "
        f"{r['encoded'] / r['encoder_images_per_s']:.2f} | {r['encoder_images_per_s']:.0f} images/s |",
        row(f"`rsprune run CHIPS --chips --keep 0.15`: small sources joined into tasks, "
            f"{r['parts_joined']} part(s)", r["joined"],
            f"{r['joined']['median'] / r['floor_s']:.2f}× (read + encoder); "
            f"{r['joined']['median'] * ms:.1f} ms a chip"),
        row(f"the same with a task (and a part) per chip (`TASK_MIN_TILES = 1`), {r['parts_apart']} parts",
            r["apart"],
            f"{r['apart']['median'] / r['floor_s']:.2f}×; {r['apart']['median'] * ms:.1f} ms a chip"),
        "",
        f"The driver holds about {r['driver_bytes_a_chip']:,.0f} bytes a chip once the folder is scanned and "
        "its grid planned (a source and a grid object per chip), before any pixel is read; a whole run's peak "
        f"grows by about {r['run_peak_bytes_a_chip']:,.0f} bytes a chip (32-px chips; {r['run_peaks']['part'][1]}: "
        f"{r['run_peaks']['part'][0] / 2**20:.0f} MiB, {r['run_peaks']['whole'][1]}: "
        f"{r['run_peaks']['whole'][0] / 2**20:.0f} MiB).",
        "",
    ])


if __name__ == "__main__":
    main()
