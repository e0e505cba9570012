"""What installing rsprune_geo costs: a fresh virtual environment from the built wheel, without and
with the ``torch`` extra: install time, size on disk, its largest packages, and (default install)
the first run of both stages with the shipped profile.

Installs come from the package index this machine is configured with (pip's cache is warm after
`make env`, so these are the times of a second machine on the same index, not of a cold
download). Writes benchmarks/results/install.json and install.md. Run with `make bench`.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
RASTER = REPO.parent / "shared" / "data" / "geotiff" / "rio-tiler" / "pix4d_alpha_nodata.tif"
REPEATS = int(os.environ.get("BENCH_INSTALL_REPEATS", "2"))
#: the default install, what QGIS's Set up backend installs (the report's figures), and with PyTorch
VARIANTS = {"default": "", "plots": "[plots]", "torch": "[torch]"}


def folder_size(path: Path) -> int:
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout.split()[0])


def largest(site: Path, n: int = 8) -> list[tuple[str, int]]:
    sizes = [(p.name, folder_size(p)) for p in site.iterdir() if p.is_dir() and not p.name.endswith(".dist-info")]
    return sorted(sizes, key=lambda item: -item[1])[:n]


def install(wheel: Path, extra: str, root: Path) -> dict:
    env = root / "env"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    t0 = time.perf_counter()
    subprocess.run([str(env / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q", "-c",
                    str(REPO / "constraints.txt"), f"{wheel}{extra}"], check=True)
    seconds = time.perf_counter() - t0
    site = next((env / "lib").glob("python3*/site-packages"))
    has_torch = subprocess.run([str(env / "bin" / "python"), "-c", "import importlib.util as u; "
                                "print(u.find_spec('torch') is not None)"], capture_output=True, text=True).stdout
    row = {"install_s": seconds, "bytes": folder_size(env), "largest": largest(site),
           "torch": has_torch.strip() == "True"}
    if not extra:
        t0 = time.perf_counter()
        subprocess.run([str(env / "bin" / "rsprune"), "run", str(RASTER), "-o", str(root / "o.gpkg"), "--tile-size",
                        "64", "--keep", "0.15", "--cache-dir", str(root / "cache"), "-q"], check=True)
        row["first_run_s"] = time.perf_counter() - t0
    shutil.rmtree(env)
    return row


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "-q", "--no-deps", "-w",
                        tmp, str(REPO)], check=True)
        wheel = next(Path(tmp).glob("rsprune_geo-*.whl"))
        results: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} cores",
                         "python": platform.python_version(), "wheel_bytes": wheel.stat().st_size, "variants": {}}
        empty = Path(tmp) / "empty"
        subprocess.run([sys.executable, "-m", "venv", str(empty)], check=True)
        results["empty_venv_bytes"] = folder_size(empty)  # pip and setuptools: there before any install
        shutil.rmtree(empty)
        for name, extra in VARIANTS.items():
            rows = []
            for k in range(REPEATS):
                root = Path(tmp) / f"{name}-{k}"
                root.mkdir()
                rows.append(install(wheel, extra, root))
                print(name, k, {key: v for key, v in rows[-1].items() if key != "largest"}, flush=True)
            results["variants"][name] = {
                "install_s": [r["install_s"] for r in rows], "bytes": rows[0]["bytes"], "largest": rows[0]["largest"],
                "torch": rows[0]["torch"], "first_run_s": [r["first_run_s"] for r in rows if "first_run_s" in r],
            }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "install.json").write_text(json.dumps(results, indent=1))
    (RESULTS / "install.md").write_text(report(results))
    print(report(results))


def report(results: dict) -> str:
    def gb(n: float) -> str:  # megabytes to a tenth: the default install sits near its 1 GB budget
        return f"{n / 1e6:,.1f} MB ({n / 2**30:.2f} GiB)"

    lines = [f"# Install cost ({results['machine']}, Python {results['python']})", "",
             f"Wheel: {results['wheel_bytes'] / 1e6:.1f} MB (the default encoder's network and the UC Merced profile "
             "inside). Fresh venv, `pip install -c constraints.txt WHEEL[EXTRA]`, pip's cache warm.", "",
             "| install | torch | size on disk (`du -sb`) | install time, median (range) | first run, both stages |",
             "|---|---|---|---|---|"]
    empty = results.get("empty_venv_bytes")
    for name, row in results["variants"].items():
        times = row["install_s"]
        first = (f"{statistics.median(row['first_run_s']):.1f} s" if row["first_run_s"] else "—")
        lines.append(f"| `rsprune_geo{VARIANTS[name]}` | {'yes' if row['torch'] else 'no'} | {gb(row['bytes'])} | "
                     f"{statistics.median(times):.0f} s ({min(times):.0f}–{max(times):.0f}) | {first} |")
    if empty:
        lines += ["", f"An empty virtual environment (`python -m venv`: pip and setuptools) is {empty / 1e6:.0f} MB of "
                  "each size."]
    lines += ["", "Largest packages:", ""]
    for name, row in results["variants"].items():
        sizes = ", ".join(f"{n} {b / 1e6:.0f} MB" for n, b in row["largest"])
        lines.append(f"- `rsprune_geo{VARIANTS[name]}`: {sizes}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
