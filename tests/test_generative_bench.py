"""The generative benchmark (benchmarks/bench_generative.py) cannot rot: its whole pipeline on a
tiny setting, from the pool built from real scenes to the judged samples, the results and the
figure. Its figures are the benchmark's (`make bench-generative`), not this test's."""

import importlib.util
import json
import sys

from .conftest import REPO


def test_the_generative_benchmark_runs_whole_on_a_tiny_setting(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_generative", REPO / "benchmarks" / "bench_generative.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_generative", bench)  # its dataclasses look their module up
    spec.loader.exec_module(bench)
    assert bench.main(["--smoke", "--out", str(tmp_path / "out"), "--figure", str(tmp_path / "figure.png"),
                       "--work", str(tmp_path / "work")]) == 0
    results = json.loads((tmp_path / "out" / "generative.json").read_text())
    assert results["pool"]["shared_sources"] == 0  # the bank, the pool and the held-out set
    arms = {row["arm"] for row in results["runs"]}
    assert arms == {"rs-prune", "random", "full"}
    subsets = {row["arm"]: row["subset"] for row in results["runs"]}
    # the two pruned arms the same size; every arm judged at the same steps (the same compute)
    assert subsets["rs-prune"]["tiles"] == subsets["random"]["tiles"] < subsets["full"]["tiles"]
    for row in results["runs"]:
        steps = [c["step"] for c in row["checkpoints"]]
        assert steps == list(results["settings"]["checkpoints"])
        for checkpoint in row["checkpoints"]:
            assert {"frechet", "precision", "recall", "density", "coverage", "classes", "evenness",
                    "junk_like"} <= set(checkpoint)
    assert "At step" in (tmp_path / "out" / "generative.md").read_text()
    assert (tmp_path / "figure.png").stat().st_size > 1000
