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
- what the driver holds a chip before any pixel is read: the growth of a process's resident
  memory over scanning chips, planning their grid and dating them (a table of columns), for
  SMALL and for LARGE chips, the difference over the chips between (what a scan fills once, its
  processes' pipes and Arrow's memory pool, cancels);
- what a whole run holds a chip at its peak: the run's peak resident memory (``ru_maxrss``) over
  SMALL and over LARGE chips of 32 px cut from the same mosaic (each its own chips, in folders of
  a few thousand), the difference over the chips between (small chips, so that what grows with
  the number of chips is not hidden by what grows with their pixels; two runs, so that what any
  run fills once, the encoder's arena, the readers' memory pools, the write phase's passing
  memory, is in both and cancels).

Writes benchmarks/results/chips.json and chips.md. Run with `make bench`. With
``BENCH_CHIPS_HUGE=N`` (``make bench-huge``: a million chips) it measures only the last two figures,
over SMALL, LARGE and N chips, into chips_huge.json and chips_huge.md; with
``BENCH_CHIPS_HUGE_WORKERS=W`` too, the runs go to a LocalCluster of W workers (``--workers W``) and
the peak is the driver's alone, into chips_huge_workers.json and .md.
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
LARGE = 200_000
REPEATS = 3
#: BENCH_CHIPS_HUGE=N (e.g. 1000000): instead of the figures above, a whole run's peak and the
#: driver before pixels over SMALL, LARGE and N chips of 32 px (``make bench-huge``; N = 1M: 4 GB
#: of PNG and about an hour here), written to chips_huge.json and chips_huge.md
HUGE = int(os.environ.get("BENCH_CHIPS_HUGE", "0"))
#: BENCH_CHIPS_HUGE_WORKERS=W: those runs on W local workers, the driver's peak (chips_huge_workers.*)
HUGE_WORKERS = int(os.environ.get("BENCH_CHIPS_HUGE_WORKERS", "0"))
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
import resource, subprocess, sys, time
run = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
anon = 0
while run.poll() is None:  # the anonymous part of its resident memory, every 20 ms
    try:
        status = open(f"/proc/{run.pid}/status").read()
        anon = max(anon, int(status.split("RssAnon:")[1].split()[0]))
    except (OSError, IndexError):
        pass
    time.sleep(0.02)
assert run.returncode == 0, run.returncode
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, anon)
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


DRIVER = """
import gc, os, sys, warnings
warnings.simplefilter("ignore")
from rsprune_geo.pipeline import dates_and_ground
from rsprune_geo.reading.grid import plan_grid
from rsprune_geo.reading.scan import scan_sources
from rsprune_geo.engine.scaleout import release_freed_memory
def resident():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0])
folder = sys.argv[1]
scan_sources([folder + "/" + sorted(os.listdir(folder))[0]], chips=True)  # imports and GDAL's drivers loaded first
gc.collect()
before = resident()
sources, _ = scan_sources([folder], chips=True)
grid = plan_grid(sources, 32, chips=True)
grid.dates, _ = dates_and_ground(grid, None)
gc.collect()
grown = resident() - before
release_freed_memory()  # as a run does before stage 1
print(len(sources), grown * 1024, (resident() - before) * 1024)
"""


def driver_growth(folder: Path) -> tuple[int, int, int]:
    """Bytes of resident memory the driver grows by as it scans, plans and dates a folder of chips
    (in a process of its own), how many chips, and the growth once the memory freed meanwhile is
    given back (as a run does before stage 1)."""
    done = subprocess.run([sys.executable, "-c", DRIVER, str(folder)], check=True, capture_output=True, text=True)
    chips, grown, released = map(int, done.stdout.split()[-3:])
    return grown, chips, released


def chip_origins(width: int, height: int, side: int = 32, step: int = 8):
    """The pixel origins (x, y) of chips of ``side`` px: the mosaic's grid row by row, then the
    same grid shifted by ``step``, 2 ``step``, … px on both axes (each shift its own chips), so a
    mosaic of 17,408 px holds 1,180,483 distinct chips of 32 px."""
    for shift in range(0, side, step):
        for r in range((height - shift) // side):
            for c in range((width - shift) // side):
                yield shift + c * side, shift + r * side


def build_small_chips(folder: Path, count: int, first: int = 0, per_folder: int = 2000) -> Path:
    """``count`` chips of 32 px cut from the real mosaic (from its ``first`` in
    :func:`chip_origins`' order), in folders of ``per_folder``, as PNG."""
    import itertools

    import rasterio
    from PIL import Image
    from rasterio.windows import Window

    if folder.exists():
        return folder
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    side = 32
    with rasterio.open(build_mosaic(DATA / "real-mosaic.tif")) as src:
        origins = list(itertools.islice(chip_origins(src.width, src.height, side), first, first + count))
        assert len(origins) == count, "the mosaic holds fewer chips"
        top, band = -1, None
        for k, (x, y) in enumerate(origins):
            if y != top:
                top, band = y, src.read(window=Window(0, y, src.width, side)).transpose(1, 2, 0)
            target = tmp / f"group{k // per_folder:03d}" / f"chip{k:06d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.ascontiguousarray(band[:, x:x + side])).save(target)
    os.replace(tmp, folder)
    return folder


def run_peak(args: list[str]) -> tuple[int, int]:
    """Peak resident memory (bytes) of one whole command, and the peak of its anonymous part
    (sampled every 20 ms: what the process holds, not the pages of the files it maps, such as the
    embeddings' scratch file, which the kernel can write back and drop)."""
    done = subprocess.run([sys.executable, "-c", PEAK, *args], check=True, capture_output=True, text=True)
    rss, anon = map(int, done.stdout.split()[-2:])
    return rss * 1024, anon * 1024


def main() -> None:
    from rsprune_geo.runs.runfile import read_run

    folder = build_chips(DATA / f"chips-{CHIPS}")
    small = build_small_chips(DATA / f"chips32-{SMALL}", SMALL)
    large = build_small_chips(DATA / f"chips32-{LARGE}", LARGE, first=SMALL, per_folder=5000)
    growth = {"small": driver_growth(small), "large": driver_growth(large)}
    held = (growth["large"][0] - growth["small"][0]) / (growth["large"][1] - growth["small"][1])
    released = (growth["large"][2] - growth["small"][2]) / (growth["large"][1] - growth["small"][1])
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
        peaks = {}
        for name, where, count in (("small", small, SMALL), ("large", large, LARGE)):
            fresh()
            peaks[name] = (*run_peak([RSPRUNE, *args[:2], str(where), *args[3:]]), count)
        run_bytes = (peaks["large"][0] - peaks["small"][0]) / (LARGE - SMALL)
        anon_bytes = (peaks["large"][1] - peaks["small"][1]) / (LARGE - SMALL)
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
              "driver_bytes_a_chip_released": released, "driver_growth": growth,
              "run_peak_bytes_a_chip": run_bytes, "run_peak_anon_bytes_a_chip": anon_bytes, "run_peaks": peaks,
              "when": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime())}
    write_results("chips", result, report)


def write_results(name: str, result: dict, render) -> None:
    """``result`` as results/NAME.json and, rendered, results/NAME.md (and printed)."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / f"{name}.md").write_text(render(result))
    print(render(result))


def main_huge(count: int, workers: int = 0) -> None:
    """The driver before pixels and a whole run's peak over SMALL, LARGE and ``count`` chips of
    32 px: whether what a run holds a chip flattens or keeps its slope towards a million. With
    ``workers``, the runs' window tasks go to as many local worker processes, and the peak sampled
    is the driver's (its process's anonymous memory; ``ru_maxrss`` is the largest process's)."""
    folders = {"small": (build_small_chips(DATA / f"chips32-{SMALL}", SMALL), SMALL),
               "large": (build_small_chips(DATA / f"chips32-{LARGE}", LARGE, first=SMALL, per_folder=5000), LARGE),
               "huge": (build_small_chips(DATA / f"chips32-{count}", count, per_folder=5000), count)}
    growth = {name: driver_growth(where) for name, (where, _) in folders.items()}
    work = Path(tempfile.mkdtemp(prefix="bench-chips-huge-"))
    peaks, seconds = {}, {}
    try:
        out, cache = work / "run", work / "cache"

        def args(where: Path) -> list[str]:
            return [RSPRUNE, "-q", "run", str(where), "--chips", "--keep", "0.15", "-o", str(out), "--cache-dir",
                    str(cache), *(["--workers", str(workers)] if workers else [])]

        # a first run unpacks the profile's network into the cache, untimed
        subprocess.run(args(folders["small"][0] / "group000"), check=True, stdout=subprocess.DEVNULL)
        for name, (where, chips) in folders.items():
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(cache / "embeddings", ignore_errors=True)
            t0 = time.perf_counter()
            peaks[name] = (*run_peak(args(where)), chips)
            seconds[name] = time.perf_counter() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def slope(values: dict, a: str, b: str, at: int) -> float:
        return (values[b][at] - values[a][at]) / (folders[b][1] - folders[a][1])

    result = {"cores": os.cpu_count(), "workers": workers,
              "chips": {name: chips for name, (_, chips) in folders.items()}, "driver_growth": growth,
              "run_peaks": peaks, "seconds": seconds,
              "driver_bytes_a_chip": {"small_large": slope(growth, "small", "large", 0),
                                      "large_huge": slope(growth, "large", "huge", 0)},
              "driver_bytes_a_chip_released": {"small_large": slope(growth, "small", "large", 2),
                                               "large_huge": slope(growth, "large", "huge", 2)},
              "run_peak_anon_bytes_a_chip": {"small_large": slope(peaks, "small", "large", 1),
                                             "large_huge": slope(peaks, "large", "huge", 1)},
              "run_peak_bytes_a_chip": {"small_large": slope(peaks, "small", "large", 0),
                                        "large_huge": slope(peaks, "large", "huge", 0)},
              "when": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime())}
    write_results("chips_huge_workers" if workers else "chips_huge", result, report_huge)


def given_back(r: dict) -> str:
    """The driver's bytes a chip before pixels once freed memory is given back, where measured."""
    released = r.get("driver_bytes_a_chip_released")
    if released is None:
        return ""
    said = (f"{released:,.0f}" if not isinstance(released, dict) else
            f"{released['small_large']:,.0f} and {released['large_huge']:,.0f}")
    return f" ({said} once the memory freed meanwhile is given back, as a run does before stage 1)"


def report_huge(r: dict) -> str:
    mib, workers = 2**20, r.get("workers")
    rows = [f"| {chips:,} | {r['driver_growth'][name][0] / mib:.1f} | {r['run_peaks'][name][1] / mib:.0f} | "
            f"{r['run_peaks'][name][0] / mib:.0f} | {r['seconds'][name]:.0f} |" for name, chips in r["chips"].items()]
    driver, anon, rss = r["driver_bytes_a_chip"], r["run_peak_anon_bytes_a_chip"], r["run_peak_bytes_a_chip"]
    small, large, huge = (f"{n:,}" for n in r["chips"].values())
    peak = "the driver's peak" if workers else "a whole run's peak"
    return "\n".join([
        f"# What a run over a folder of chips holds a chip, up to {huge} chips (32-px PNG chips cut from the real "
        f"mosaic; {r['cores']} cores{f'; {workers} local workers' if workers else ''})", "",
        f"`rsprune run CHIPS --chips --keep 0.15{f' --workers {workers}' if workers else ''}` (the shipped UC Merced "
        "profile, embeddings not cached), a process each; the driver before pixels: scanning, planning and dating "
        "alone, a process each.", "",
        f"| chips | driver before pixels (MiB) | {'the driver' if workers else 'the run'}'s peak, anonymous (MiB) | "
        f"{'the largest process' if workers else 'the run'}'s peak, resident (MiB) | run (s) |",
        "|---|---|---|---|---|", *rows, "",
        f"Bytes a chip, {small} → {large} chips and {large} → {huge}: the driver before pixels "
        f"{driver['small_large']:,.0f} and {driver['large_huge']:,.0f}{given_back(r)}; {peak}, anonymous memory, "
        f"{anon['small_large']:,.0f} and {anon['large_huge']:,.0f}"
        + ("." if workers else f"; with the pages of the embeddings' scratch file it maps, {rss['small_large']:,.0f} "
           f"and {rss['large_huge']:,.0f}."), "",
    ])


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
        f"The driver holds about {r['driver_bytes_a_chip']:,.0f} bytes a chip once chips are scanned, their grid "
        f"planned and their dates read (a table of columns){given_back(r)}, before any pixel is read (resident memory, "
        f"{r['driver_growth']['small'][1]:,} chips: {r['driver_growth']['small'][0] / 2**20:.1f} MiB, "
        f"{r['driver_growth']['large'][1]:,}: {r['driver_growth']['large'][0] / 2**20:.1f} MiB); a whole run's "
        f"peak grows by about {r['run_peak_anon_bytes_a_chip']:,.0f} bytes a chip in anonymous memory, "
        f"{r['run_peak_bytes_a_chip']:,.0f} with the pages of the embeddings' scratch file it maps (32-px chips, "
        f"the whole method; {r['run_peaks']['small'][2]:,} chips: {r['run_peaks']['small'][1] / 2**20:.0f} MiB "
        f"anonymous, {r['run_peaks']['small'][0] / 2**20:.0f} MiB resident; {r['run_peaks']['large'][2]:,}: "
        f"{r['run_peaks']['large'][1] / 2**20:.0f} and {r['run_peaks']['large'][0] / 2**20:.0f} MiB).",
        "",
    ])


if __name__ == "__main__":
    main_huge(HUGE, HUGE_WORKERS) if HUGE else main()
