"""Scale figures: 10M-tile selection from memory-mapped float16 embeddings, reading through
overviews, end-to-end tiles/s locally and on 2 Dask workers, growth from 1x to 4x the mosaic
(the driver's memory on a LocalCluster up to a million tiles is `bench_million.py`).

Memory peaks are measured as peaks: the kernel's high-water mark of resident memory (VmHWM),
and, where memory-mapped files would count their page cache, the highest anonymous memory seen
by a thread sampling /proc every 20 ms. Writes benchmarks/results/scale.json and scale.md. Run
with `make bench` (needs ~11 GB of free disk for the 10M-tile file, kept in benchmarks/.data).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data"
N_BIG, DIM, K = 10_000_000, 512, 200


def rss_mib() -> dict:
    """Peak RSS and current anonymous memory (MiB) of this process, from /proc."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "RssAnon"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


class AnonPeak:
    """The highest anonymous resident memory (MiB) of this process while the block runs,
    sampled every 20 ms (file pages of memory-mapped arrays are not counted)."""

    def __enter__(self) -> AnonPeak:
        import threading

        self.peak, self.stop = rss_mib()["RssAnon"], threading.Event()

        def sample() -> None:
            while not self.stop.wait(0.02):
                self.peak = max(self.peak, rss_mib()["RssAnon"])

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, rss_mib()["RssAnon"])


def big_selection() -> dict:
    """Assign and select 10M tiles whose 512-d float16 embeddings are memory-mapped."""
    from rsprune_geo.stages.clustering import assign_to_centroids
    from rsprune_geo.stages.selection import select_tiles

    DATA.mkdir(exist_ok=True)
    path = DATA / f"embeddings-{N_BIG}x{DIM}-f16.npy"
    rng = np.random.default_rng(0)
    centroids = rng.normal(size=(K, DIM)).astype(np.float32)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    truth_path = DATA / f"labels-{N_BIG}.npy"
    if not path.exists() or not truth_path.exists():
        labels = rng.integers(0, K, N_BIG)
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(N_BIG, DIM))
        for start in range(0, N_BIG, 250_000):
            stop = min(N_BIG, start + 250_000)
            noise = 0.04 * rng.normal(size=(stop - start, DIM)).astype(np.float32)
            out[start:stop] = (centroids[labels[start:stop]] + noise).astype(np.float16)
        out.flush()
        del out
        np.save(truth_path, labels)
    labels = np.load(truth_path)
    embeddings = np.load(path, mmap_mode="r")
    with AnonPeak() as peak:
        t0 = time.perf_counter()
        ids, dist = assign_to_centroids(embeddings, centroids, batch_size=65536)
        t_assign = time.perf_counter() - t0
        t0 = time.perf_counter()
        sel = select_tiles(ids, dist, budget=round(0.15 * N_BIG), uniformity=1.0, seed=0)
        t_select = time.perf_counter() - t0
    assert sel.kept.sum() == round(0.15 * N_BIG)
    sample = np.arange(0, N_BIG, 10)  # float16 vs float32 on a 1M sample: same clusters?
    ids32, _ = assign_to_centroids(np.asarray(embeddings[sample], dtype=np.float32), centroids)
    mem = rss_mib()
    return {"tiles": N_BIG, "dim": DIM, "centroids": K, "dtype": "float16 memmap",
            "file_gib": path.stat().st_size / 2**30, "assign_s": t_assign, "select_s": t_select,
            "peak_rss_mib_incl_mapped_pages": mem["VmHWM"], "peak_anon_mib": peak.peak,
            "same_cluster_as_generated": float((ids == labels).mean()),
            "float16_vs_float32_agreement": float((ids[sample] == ids32).mean())}


def overview_reads(mosaic: str) -> dict:
    """Reading 256-px tiles for a 64-px encoder: through overviews vs full resolution + resize."""
    import rasterio
    from PIL import Image
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    windows = [Window(c, r, 256, 256) for r in range(0, 4096, 256) for c in range(0, 4096, 256)]
    with rasterio.open(mosaic) as src:
        t0 = time.perf_counter()
        for w in windows:
            src.read([1, 2, 3], window=w, out_shape=(3, 64, 64), resampling=Resampling.bilinear)
        t_overview = time.perf_counter() - t0
        t0 = time.perf_counter()
        for w in windows:
            data = src.read([1, 2, 3], window=w)
            Image.fromarray(np.moveaxis(data, 0, -1)).resize((64, 64), Image.Resampling.BILINEAR)
        t_full = time.perf_counter() - t0
    return {"tiles": len(windows), "overview_s": t_overview, "full_then_resize_s": t_full,
            "saving": 1 - t_overview / t_full}


def end_to_end(mosaic: str, bank: str) -> list[dict]:
    """Both stages, keep 0.15, every tile above the bank's floor encoded, fresh embedding cache
    each time (the encoder's export and the bank's centroids cached by an untimed first run)."""
    import rsprune_geo

    rows = []
    for encoder in ("efficientnet-lite0", "rcf-empirical"):
        with tempfile.TemporaryDirectory() as cache:
            rsprune_geo.run([mosaic], keep=0.15, prior_bank=(bank,), encoder=encoder, cache_dir=cache)
            for workers in (None, 2):
                import shutil

                shutil.rmtree(Path(cache) / "embeddings", ignore_errors=True)
                t0 = time.perf_counter()
                result = rsprune_geo.run([mosaic], keep=0.15, prior_bank=(bank,), encoder=encoder, cache_dir=cache,
                                         workers=workers)
                seconds = time.perf_counter() - t0
                st2 = result.record.stage2
                rows.append({"encoder": encoder, "runtime": st2.encoder_runtime,
                             "workers": workers or "local threads", "tiles": sum(result.record.counts.values()),
                             "encoded": st2.stage1_candidates, "seconds": seconds,
                             "tiles_per_s": sum(result.record.counts.values()) / seconds,
                             "encoding_s": result.timings.get("windows")})
                print(rows[-1], flush=True)
    return rows


def demo_mosaic(size: int) -> Path:
    """A seed-42 demo mosaic of ``size``² in benchmarks/.data, written once."""
    path = DATA / f"demo-{size}.tif"
    if not path.exists():
        subprocess.run([sys.executable, "-c", "import sys; from rsprune_geo.fixtures.demo import DemoSpec, "
                        f"write_demo_mosaic; write_demo_mosaic(sys.argv[1], DemoSpec(size={size}))", str(path)],
                       check=True)
    return path


def growth_child(size: int) -> None:
    """(child process) stage 1 + GeoPackage on a size x size demo mosaic: time, peak memory.

    A warm-up run on a small mosaic loads the libraries first, so the figures are the run's own."""
    import rsprune_geo

    warm = DATA / "demo-1024.tif"
    with tempfile.TemporaryDirectory() as tmp:
        rsprune_geo.run([str(warm)], Path(tmp) / "warm.gpkg")
        base = rss_mib()["VmHWM"]
        t0 = time.perf_counter()
        result = rsprune_geo.run([str(DATA / f"demo-{size}.tif")], Path(tmp) / "run.gpkg")
        seconds = time.perf_counter() - t0
    print(json.dumps({"size": size, "tiles": sum(result.record.counts.values()), "seconds": seconds,
                      "stage1_s": result.timings["windows"],
                      "peak_rss_mib": rss_mib()["VmHWM"], "rss_after_warmup_mib": base}))


def growth() -> list[dict]:
    rows = []
    for size in (1024, 4096, 5792, 8192):  # the warm-up, then 1x, 2x, 4x the area
        demo_mosaic(size)
    for size in (4096, 5792, 8192):
        proc = subprocess.run([sys.executable, __file__, "growth", str(size)], capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(proc.stderr)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "growth":
        growth_child(int(sys.argv[2]))
        return
    from rsprune_geo.fixtures.demo import DemoSpec, write_demo_mosaic, write_prior_bank

    DATA.mkdir(exist_ok=True)
    mosaic = DATA / "demo-mosaic-4096.tif"
    if not mosaic.exists():
        write_demo_mosaic(mosaic, DemoSpec(size=4096))
    bank = DATA / "prior-bank"
    if not bank.exists():
        write_prior_bank(bank)
    record = {"growth": growth(), "overviews": overview_reads(str(mosaic)),
              "end_to_end": end_to_end(str(mosaic), str(bank)),
              "selection_10m": big_selection()}
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "scale.json").write_text(json.dumps(record, indent=2) + "\n")
    g, o, b = record["growth"], record["overviews"], record["selection_10m"]
    lines = ["Growth with mosaic size (stage 1 + GeoPackage, fresh process each, after a warm-up run):", "",
             "| mosaic | area | tiles | run (s) | ms per tile | peak RSS (MiB) | after warm-up (MiB) |",
             "|---|---|---|---|---|---|---|"]
    for row in g:
        area = (row["size"] / g[0]["size"]) ** 2
        lines.append(f"| {row['size']}² | {area:.0f}x | {row['tiles']} | {row['seconds']:.2f} | "
                     f"{1000 * row['seconds'] / row['tiles']:.2f} | {row['peak_rss_mib']:.0f} | "
                     f"{row['rss_after_warmup_mib']:.0f} |")
    lines += ["", f"Reading {o['tiles']} tiles of 256 px for a 64-px encoder: through overviews "
              f"{o['overview_s']:.2f} s, full resolution then resize {o['full_then_resize_s']:.2f} s "
              f"({100 * o['saving']:.0f}% saved).", "",
              "End to end on the demo mosaic (256 tiles, both stages, keep 0.15, every tile above the bank's "
              "floor encoded, fresh embedding cache):", "",
              "| encoder | runtime | workers | encoded | seconds | tiles/s | encoding (s) |",
              "|---|---|---|---|---|---|---|"]
    for row in record["end_to_end"]:
        lines.append(f"| {row['encoder']} | {row['runtime']} | {row['workers']} | {row['encoded']} | "
                     f"{row['seconds']:.1f} | {row['tiles_per_s']:.1f} | {row['encoding_s']:.1f} |")
    lines += ["", f"10,000,000 tiles x {DIM}-d float16 embeddings memory-mapped ({b['file_gib']:.1f} GiB file) "
              f"to {K} centroids, keep 15%: assign {b['assign_s']:.1f} s, select {b['select_s']:.1f} s, "
              f"peak anonymous memory {b['peak_anon_mib']:.0f} MiB (sampled every 20 ms; the peak RSS of "
              f"{b['peak_rss_mib_incl_mapped_pages']:.0f} MiB counts the mapped file's pages); same cluster as "
              f"generated {100 * b['same_cluster_as_generated']:.1f}%, "
              f"float16 vs float32 assignment agreement {100 * b['float16_vs_float32_agreement']:.2f}%.", ""]
    text = "\n".join(lines)
    (out / "scale.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
