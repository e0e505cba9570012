"""How fast a running `rsprune run` stops when the QGIS plugin cancels it.

The plugin interrupts the command (SIGINT) when Cancel is pressed (it polls every 0.1 s). Here the
same command runs on the ten NAIP rasters of ../shared/data with 32-px tiles and the UC Merced
prior bank, and is interrupted once it is inside each stage (stage 1, prior bank, encoding); the
figure is the time from the signal to the process's exit (3 runs, min/median/max), and whether
it left any file. Writes benchmarks/results/cancel.json and cancel.md.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = Path(os.environ.get("RSPRUNE_SHARED_DATA", REPO.parent / "shared" / "data"))
STAGES = ("stage1", "prior_bank", "encoding")


def interrupt_in(stage: str, rasters: list[str], work: Path, cache: Path) -> tuple[float, bool]:
    cli = Path(sys.executable).with_name("rsprune")
    out = work / "run.gpkg"
    process = subprocess.Popen([str(cli), "run", *rasters, "-o", str(out), "--tile-size", "32", "--prior-bank",
                                str(SHARED / "scenes" / "ucmerced"), "--cache-dir", str(cache), "--progress-json"],
                               stderr=subprocess.PIPE, text=True)
    for line in process.stderr:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event.get("stage") == stage and event.get("done", 0) > 0:
            break
    start = time.perf_counter()
    process.send_signal(signal.SIGINT)
    process.wait()
    seconds = time.perf_counter() - start
    clean = not out.exists() and not list(work.glob(".rsprune-*"))
    return seconds, clean


def main() -> None:
    rasters = sorted(str(p) for p in (SHARED / "geotiff" / "opengeos-data" / "naip").glob("*.tif"))
    if len(rasters) != 10:
        sys.exit(f"missing the NAIP stack under {SHARED}")
    rows = {}
    for stage in STAGES:
        times, clean = [], True
        for _ in range(3):
            work = Path(tempfile.mkdtemp(prefix="rsprune-cancel-"))
            try:  # a fresh cache each time, so every stage really runs
                seconds, ok = interrupt_in(stage, rasters, work, work / "cache")
            finally:
                shutil.rmtree(work, ignore_errors=True)
            times.append(seconds)
            clean &= ok
        times.sort()
        rows[stage] = {"min s": round(times[0], 2), "median s": round(times[1], 2), "max s": round(times[2], 2),
                       "no file left": clean}
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "cancel.json").write_text(json.dumps(rows, indent=2))
    lines = ["# Cancel: from SIGINT to exit (benchmarks/bench_cancel.py)", "",
             "| interrupted in | min s | median s | max s | no file left |", "|---|---|---|---|---|"]
    lines += [f"| {stage} | {r['min s']} | {r['median s']} | {r['max s']} | {r['no file left']} |"
              for stage, r in rows.items()]
    (out / "cancel.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
