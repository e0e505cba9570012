"""The bank's scene metric against the raw cosine, and right-angle views, on held-out real scenes.

UC Merced (../shared/data): fit on 14 images of each class, judge the other 6, over ten seeded
splits. Assignment as a run makes it: the run's centroids (k-means per class, at least 10 images
a centroid) fitted on the training images in the space in question; each held-out image takes
its nearest centroid's scene. The encoder as runs use it: EfficientNet-Lite0, int8 on
onnxruntime (the shipped profile's network), 224 px. Speed: images a second at 1, 2 and 4 views,
and as a share of the floor measured in the same run (the network alone, one view).

Writes benchmarks/results/scene_metric.json and scene_metric.md. Run with `make bench`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = Path(os.environ.get("RSPRUNE_SHARED_DATA", REPO.parent / "shared" / "data"))
SPLITS = 10
HELD_OUT = 6
VIEWS = (1, 2, 4)


def encode_all(encoder, images: np.ndarray) -> tuple[np.ndarray, float]:
    """Every image's vector and the images a second."""
    t0 = time.perf_counter()
    vectors = np.concatenate([encoder.encode(images[i:i + 32]) for i in range(0, len(images), 32)])
    return vectors, len(images) / (time.perf_counter() - t0)


def judge(vectors: np.ndarray, labels: np.ndarray, splits: list[np.ndarray]) -> dict:
    """Accuracy and per-class recall of nearest-centroid scenes, raw and with the bank metric."""
    from rsprune_geo.bank.metric import SceneMetric
    from rsprune_geo.stages.clustering import assign_to_centroids, fit_scene_centroids

    classes = np.unique(labels)
    out = {}
    for name in ("raw", "bank"):
        accuracy, recall = [], {c: [] for c in classes}
        for test in splits:
            train = ~test
            space = SceneMetric.fit(vectors[train], labels[train]).apply if name == "bank" else (lambda v: v)
            centroids = fit_scene_centroids(space(vectors[train]), labels[train], k_per_class=4,
                                            images_per_centroid=10, seed=0)
            nearest, _ = assign_to_centroids(space(vectors[test]), centroids)
            said = centroids.labels[nearest]
            accuracy.append(float((said == labels[test]).mean()))
            for c in classes:
                recall[c].append(float((said[labels[test] == c] == c).mean()))
        out[name] = {"accuracy": float(np.mean(accuracy)), "accuracy_sd": float(np.std(accuracy)),
                     "accuracy_range": [float(min(accuracy)), float(max(accuracy))],
                     "recall": {str(c): float(np.mean(v)) for c, v in recall.items()}}
    return out


def ucmerced_bank():
    """The UC Merced scenes of ../shared/data as a prior bank, and their labels."""
    from rsprune_geo.bank.priorbank import find_prior_bank

    scenes = SHARED / "scenes" / "ucmerced"
    if not scenes.is_dir():
        sys.exit(f"missing {scenes} (see ../shared/data/CATALOG.md)")
    bank = find_prior_bank([str(scenes)])
    return bank, np.asarray(bank.labels).astype(str)


def held_out_splits(labels: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """:data:`SPLITS` masks of the images judged, :data:`HELD_OUT` of each class, drawn with ``rng``."""
    splits = []
    for _ in range(SPLITS):
        test = np.zeros(labels.size, dtype=bool)
        for c in np.unique(labels):
            test[rng.choice(np.flatnonzero(labels == c), HELD_OUT, replace=False)] = True
        splits.append(test)
    return splits


def main() -> None:
    from rsprune_geo.bank.metric import ViewsEncoder
    from rsprune_geo.bank.priorbank import CentroidSpec
    from rsprune_geo.bank.profile import load_profile, profile_model
    from rsprune_geo.config import DEFAULT_ENCODER
    from rsprune_geo.reading.pixels import read_images

    bank, labels = ucmerced_bank()
    encoder, _ = profile_model(load_profile("default"), DEFAULT_ENCODER, None, CentroidSpec(4, 10, None, None, 0),
                               "cpu", "auto", None, "raw", 1)
    images = read_images(bank.paths, encoder.input_size)
    encode_all(encoder, images[:64])  # warm up
    splits = held_out_splits(labels, np.random.default_rng(0))
    results: dict = {"encoder": encoder.cache_key, "images": int(labels.size), "splits": SPLITS,
                     "held_out_per_class": HELD_OUT, "views": {}}
    floor = None
    for views in VIEWS:
        vectors, speed = encode_all(ViewsEncoder(encoder, views) if views > 1 else encoder, images)
        floor = floor or speed
        judged = judge(vectors, labels, splits)
        results["views"][views] = {"images_per_s": speed, "share_of_floor": speed / floor, **judged}
        print(f"views {views}: {speed:.0f} images/s; raw {judged['raw']['accuracy']:.3f}, "
              f"bank {judged['bank']['accuracy']:.3f}", flush=True)
    md = ["# The bank's scene metric and right-angle views on held-out real scenes", "",
          f"UC Merced, {labels.size} images of 21 classes: fit on {20 - HELD_OUT} a class, judge {HELD_OUT}, "
          f"{SPLITS} splits. Encoder `{encoder.cache_key}` (int8, onnxruntime, as runs use it). Speed share: "
          "of the network alone at one view, measured in the same run.", "",
          "| views | metric | nearest-scene accuracy (sd; range) | lowest class recall | classes below 0.5 | "
          "images/s | share of the floor |", "|---|---|---|---|---|---|---|"]
    for views, row in results["views"].items():
        for name in ("raw", "bank"):
            r = row[name]
            low = min(r["recall"].values())
            md.append(f"| {views} | {name} | {r['accuracy']:.3f} ({r['accuracy_sd']:.3f}; {r['accuracy_range'][0]:.3f}"
                      f"–{r['accuracy_range'][1]:.3f}) | {low:.2f} | {sum(v < 0.5 for v in r['recall'].values())} | "
                      f"{row['images_per_s']:.0f} | {row['share_of_floor']:.2f} |")
    one = results["views"][1]
    md += ["", "Per class, one view (recall over the splits):", "", "| class | raw | bank |", "|---|---|---|"]
    md += [f"| {c} | {one['raw']['recall'][c]:.2f} | {one['bank']['recall'][c]:.2f} |"
           for c in sorted(one["raw"]["recall"])]
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "scene_metric.json").write_text(json.dumps(results, indent=1))
    (out / "scene_metric.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
