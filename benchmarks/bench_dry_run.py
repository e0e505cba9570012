"""How far a dry run's estimate (`rsprune run --dry-run`) is from the run it plans, on the real
mosaic of bench_real (303 Mpx, 4624 tiles of 256 px), on this machine.

For each command (the bank rule with the shipped profile; the paper's rule with a second pass;
stage 1 alone) the dry run's estimate, then the real run timed REPEATS times (the embedding cache
emptied before each: every tile encoded, as on a first run), as whole commands. Writes
benchmarks/results/dry_run.json and dry_run.md. Run with `make bench`.
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_real import DATA, RESULTS, RSPRUNE, build_mosaic  # noqa: E402

REPEATS = 3
COMMANDS = {
    "bank rule, shipped profile, keep 0.15": ["--keep", "0.15"],
    "paper rule, stage-1 keep 0.5, keep 0.15": ["--keep", "0.15", "--stage1", "paper", "--stage1-keep", "0.5"],
    "stage 1 alone (no prior bank)": ["--prior-bank", "none", "--stage1", "paper"],
}


def seconds_of(text: str) -> float:
    """The estimate a dry run printed, in seconds."""
    value, unit = re.search(r"estimate: ([\d.]+) (s|min|h) on this machine", text).groups()
    return float(value) * {"s": 1, "min": 60, "h": 3600}[unit]


def main() -> None:
    mosaic = build_mosaic(DATA / "real-mosaic.tif")
    work = DATA / "dry-run"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    results = []
    for label, extra in COMMANDS.items():
        cache = work / "cache"
        base = [RSPRUNE, "run", str(mosaic), *extra, "--cache-dir", str(cache)]
        subprocess.run([*base, "-o", str(work / "warm.gpkg"), "--overwrite", "-q"], check=True)  # exports, centroids
        planned = subprocess.run([*base, "--dry-run"], check=True, capture_output=True, text=True).stdout
        event = subprocess.run([*base, "--dry-run", "--progress-json"], check=True, capture_output=True, text=True)
        estimate = json.loads(event.stderr.strip().splitlines()[-1])["seconds"]
        times = []
        for _ in range(REPEATS):
            shutil.rmtree(cache / "embeddings", ignore_errors=True)
            t0 = time.perf_counter()
            subprocess.run([*base, "-o", str(work / "out.gpkg"), "--overwrite", "-q"], check=True)
            times.append(time.perf_counter() - t0)
        real = statistics.median(times)
        results.append({"command": label, "estimate_s": estimate, "printed_s": seconds_of(planned),
                        "real_s": real, "real_range": [min(times), max(times)], "error": estimate / real - 1,
                        "plan": planned})
        print(f"{label}: estimate {estimate:.1f} s, real {real:.1f} s ({estimate / real - 1:+.0%})", flush=True)
    md = ["# A dry run's estimate against the run it plans (bench_real's mosaic, this machine)", "",
          f"Whole commands; real: median (min–max) of {REPEATS} runs, the embedding cache emptied before each.", "",
          "| command | estimate (s) | real (s) | estimate off by |", "|---|---|---|---|"]
    md += [f"| {r['command']} | {r['estimate_s']:.1f} | {r['real_s']:.1f} ({r['real_range'][0]:.1f}–"
           f"{r['real_range'][1]:.1f}) | {r['error']:+.0%} |" for r in results]
    md += ["", "The dry run of the first command, as printed:", "", "```", results[0]["plan"].strip(), "```"]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dry_run.json").write_text(json.dumps(results, indent=1))
    (RESULTS / "dry_run.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
