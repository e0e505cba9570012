"""The input-size benchmark's measures (benchmarks/bench_input_size.py) on known answers; its figures
are the benchmark's (`make bench`), not this test's."""

import importlib.util
import sys

import numpy as np

from .conftest import REPO


def _bench():
    sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_input_size", REPO / "benchmarks" / "bench_input_size.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_one_nn_counts_each_image_against_the_others_only():
    bench = _bench()
    vectors = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    assert bench.one_nn(vectors, np.array(["a", "a", "b", "b"])) == 1.0  # itself never counts
    assert bench.one_nn(vectors, np.array(["a", "b", "a", "b"])) == 0.0


def test_speeds_times_every_configuration_in_turns_and_keeps_its_fastest_pass():
    bench = _bench()
    calls = []

    class Counting:
        def __init__(self, name):
            self.name = name

        def encode(self, images):
            calls.append(self.name)
            return np.zeros((len(images), 2), dtype=np.float32)

    encoders = {(128, 1): Counting("a"), (224, 1): Counting("b")}
    images = {128: np.zeros((64, 4, 4, 3), np.uint8), 224: np.zeros((64, 4, 4, 3), np.uint8)}
    measured = bench.speeds(encoders, images, rounds=2, count=64)
    assert set(measured) == set(encoders) and all(v > 0 for v in measured.values())
    per_pass = 64 // bench.BATCH
    assert calls == ["a"] * per_pass + ["b"] * per_pass + ["a"] * per_pass + ["b"] * per_pass  # in turns


def test_the_fast_point_bench_states_each_size_against_the_default_of_its_round(tmp_path, monkeypatch):
    sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_fast_point", REPO / "benchmarks" / "bench_fast_point.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0}
    monkeypatch.setattr(bench, "RESULTS", tmp_path)
    row = {"input_size": 128, "seconds": bench.spread([10.0]), "windows_s": bench.spread([8.0]), "tiles": 4624,
           "encoded": 4414, "kept": 700, "encoder_key": "k", "tiles_per_s": bench.spread([462.4]),
           "encoded_per_s": bench.spread([551.75]), "speed_vs_default": bench.spread([2.0]),
           "pass_speed_vs_default": bench.spread([2.25])}
    bench.write_results(tmp_path / "m.tif", [row])
    table = (tmp_path / "fast_point.md").read_text()
    assert "| 128 | 10.0 (10.0–10.0) | 462 (462–462) | 8.0 (8.0–8.0) | 4,414 | 552 (552–552) | 2.00 (2.00–2.00)× |" in (
        table)
