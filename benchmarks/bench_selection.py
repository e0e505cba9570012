"""Assignment + selection of 1,000,000 tiles x 512-d embeddings to 200 centroids: faiss vs
scikit-learn, time and peak memory, each in a fresh process.

Writes benchmarks/results/selection.json and selection.md. Run with `make bench`.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
N, DIM, K = 1_000_000, 512, 200


def work(method: str, n: int) -> dict:
    rng = np.random.default_rng(0)
    centroids = rng.normal(size=(K, DIM)).astype(np.float32)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    labels = rng.integers(0, K, n)
    x = np.empty((n, DIM), dtype=np.float32)  # points scattered around their centroid
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        x[start:stop] = centroids[labels[start:stop]] + 0.04 * rng.normal(size=(stop - start, DIM)).astype(np.float32)
    t0 = time.perf_counter()
    if method == "faiss":
        from rsprune_geo.stages.clustering import assign_to_centroids

        ids, dist = assign_to_centroids(x, centroids, batch_size=65536)
    else:
        from sklearn.metrics import pairwise_distances_argmin_min

        ids, dist = pairwise_distances_argmin_min(x, centroids, metric="cosine")
    t_assign = time.perf_counter() - t0
    from rsprune_geo.stages.selection import select_tiles

    t0 = time.perf_counter()
    sel = select_tiles(ids, dist, budget=round(0.15 * n), uniformity=1.0, seed=0)
    t_select = time.perf_counter() - t0
    assert sel.kept.sum() == round(0.15 * n)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB on Linux
    return {"method": method, "tiles": n, "dim": DIM, "centroids": K, "assign_s": t_assign,
            "select_s": t_select, "total_s": t_assign + t_select, "peak_rss_mib": peak,
            "embeddings_mib": n * DIM * 4 / 2**20, "agree_with_truth": float((ids == labels).mean())}


def main() -> None:
    if len(sys.argv) == 3:
        print(json.dumps(work(sys.argv[1], int(sys.argv[2]))))
        return
    rows = []
    for method in ("faiss", "sklearn"):
        proc = subprocess.run([sys.executable, __file__, method, str(N)], capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(proc.stderr)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(rows[-1])
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "selection.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [f"{N:,} tiles x {DIM}-d float32 embeddings ({rows[0]['embeddings_mib']:.0f} MiB, part of the peak) "
             f"to {K} centroids, keep 15%, each method in a fresh process:", "",
             "| method | assign (s) | select (s) | total (s) | peak RSS (MiB) | same cluster as generated |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['assign_s']:.1f} | {r['select_s']:.1f} | {r['total_s']:.1f} | "
                     f"{r['peak_rss_mib']:.0f} | {100 * r['agree_with_truth']:.1f}% |")
    text = "\n".join(lines) + "\n"
    (out / "selection.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
