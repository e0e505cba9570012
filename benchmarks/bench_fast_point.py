"""The encoder's two operating points in a real run: tiles a second at 224 px (default) and 128 px (fast).

The real-imagery mosaic of bench_real.py (303 Mpx, 4,624 tiles of 256 px), run end to end as a user
runs it: ``rsprune run MOSAIC -o OUT.gpkg --keep 0.15 --input-size S`` with the profile the package
ships (both sizes in it), start-up included. The two sizes take turns, ROUNDS rounds, each run with a
fresh embedding cache (the profile's network is unpacked by a first, untimed run of each). The floor
is today's default, 224 px, measured in the same round: the fast point's speed is stated as a share
of it, round by round, so this machine's drift slows both alike.

Reports the whole run's seconds and tiles a second (tiles scanned, and tiles encoded), and the
pass over the windows (reading, stage 1 and encoding overlapped) from the run's own timings.

Writes benchmarks/results/fast_point.json and fast_point.md. Run with `make bench`.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_real import DATA, RESULTS, RSPRUNE, build_mosaic  # noqa: E402

SIZES = (224, 128)
ROUNDS = 3


def one_run(mosaic: Path, work: Path, size: int) -> dict:
    """One timed run at ``size`` with a fresh embedding cache: seconds, tiles, encoded, windows' seconds."""
    from rsprune_geo import read_run

    shutil.rmtree(work / "cache" / "embeddings", ignore_errors=True)
    out = work / f"out-{size}.gpkg"
    t0 = time.perf_counter()
    subprocess.run([RSPRUNE, "run", str(mosaic), "-o", str(out), "--overwrite", "-q", "--keep", "0.15",
                    "--input-size", str(size), "--cache-dir", str(work / "cache")], check=True,
                   stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    tiles, record = read_run(out)
    timings = record.timings
    return {"seconds": seconds, "tiles": len(tiles), "encoded": int(record.stage2.stage1_candidates),
            "windows_s": timings["windows"] + timings.get("stage2_encoding", 0.0),
            "kept": int((tiles["status"] == "kept").sum()), "input_size": record.stage2.input_size,
            "encoder_key": record.stage2.encoder_key}


def spread(values: list[float]) -> dict:
    """Median, min and max."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    DATA.mkdir(exist_ok=True)
    RESULTS.mkdir(exist_ok=True)
    mosaic = build_mosaic(DATA / "real-mosaic.tif")
    work = DATA / "fast-point"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for size in SIZES:  # untimed: the network unpacked, the profile's int8 network extracted
        one_run(mosaic, work, size)
    runs: dict[int, list[dict]] = {size: [] for size in SIZES}
    for r in range(ROUNDS):
        for size in SIZES:
            runs[size].append(one_run(mosaic, work, size))
            print(f"round {r + 1}, {size} px: {runs[size][-1]['seconds']:.1f} s", flush=True)
    floor = SIZES[0]
    rows = []
    for size in SIZES:
        ratios = [a["seconds"] / b["seconds"] for a, b in zip(runs[floor], runs[size])]
        window_ratios = [a["windows_s"] / b["windows_s"] for a, b in zip(runs[floor], runs[size])]
        first = runs[size][0]
        rows.append({
            "input_size": size, "seconds": spread([x["seconds"] for x in runs[size]]),
            "windows_s": spread([x["windows_s"] for x in runs[size]]), "tiles": first["tiles"],
            "encoded": first["encoded"], "kept": first["kept"], "encoder_key": first["encoder_key"],
            "tiles_per_s": spread([x["tiles"] / x["seconds"] for x in runs[size]]),
            "encoded_per_s": spread([x["encoded"] / x["windows_s"] for x in runs[size]]),
            "speed_vs_default": spread(ratios), "pass_speed_vs_default": spread(window_ratios)})
    write_results(mosaic, rows)


def write_results(mosaic: Path, rows: list[dict]) -> None:
    """fast_point.json and fast_point.md."""

    def cell(s: dict, fmt: str = ".1f") -> str:
        return f"{s['median']:{fmt}} ({s['min']:{fmt}}–{s['max']:{fmt}})"

    md = ["# The encoder's operating points in a real run", "",
          f"The real-imagery mosaic of bench_real.py ({rows[0]['tiles']:,} tiles of 256 px), `rsprune run MOSAIC "
          "--keep 0.15 --input-size S` with the shipped profile, start-up included; a fresh embedding cache each "
          f"run; median (min–max) of {ROUNDS} rounds, the sizes taking turns. Speed is a share of the default "
          "(224 px) timed in the same round.", "",
          "| input size | whole run, s | tiles/s | its pass over the windows, s | tiles encoded | encoded/s in the "
          "pass | whole run, speed vs 224 px | pass, speed vs 224 px |",
          "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['input_size']} | {cell(r['seconds'])} | {cell(r['tiles_per_s'], '.0f')} | "
                  f"{cell(r['windows_s'])} | {r['encoded']:,} | {cell(r['encoded_per_s'], '.0f')} | "
                  f"{cell(r['speed_vs_default'], '.2f')}× | {cell(r['pass_speed_vs_default'], '.2f')}× |")
    (RESULTS / "fast_point.json").write_text(json.dumps({"mosaic": str(mosaic.name), "rounds": ROUNDS, "rows": rows},
                                                        indent=1))
    (RESULTS / "fast_point.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
