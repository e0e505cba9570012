"""A plan before a long run (`rsprune run --dry-run`): what a run would tile, decode and encode,
counted as the run counts it, an estimate from speeds measured here, and nothing written."""

import json

import numpy as np
import rasterio
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import rsprune_geo
from rsprune_geo.choices import Runtime
from rsprune_geo.cli import main
from rsprune_geo.planning import _covered, _encoder_speed, estimate_run

from .conftest import NAIP, shared


@settings(max_examples=200, deadline=None)
@given(length=st.integers(1, 300), size=st.integers(1, 64), stride=st.integers(1, 80), count=st.integers(0, 12))
def test_covered_pixels_count_overlaps_once_and_gaps_not_at_all(length, size, stride, count):
    offsets = np.arange(count) * stride
    offsets = offsets[offsets < length]
    mask = np.zeros(length, dtype=bool)
    for start in offsets:
        mask[start:start + size] = True
    assert _covered(offsets, size, length) == mask.sum()


def test_a_dry_run_counts_what_the_run_does_and_writes_nothing(tmp_path):
    inputs = [shared(p) for p in NAIP]
    plan = estimate_run(inputs, tile_size=128, keep=0.15, prior_bank=("default",), cache_dir=str(tmp_path / "c"))
    result = rsprune_geo.run(inputs, None, tile_size=128, keep=0.15, prior_bank=("default",),
                             cache_dir=str(tmp_path / "c"))
    assert plan.tiles == len(result.tiles) and plan.inputs == len(inputs)
    assert plan.tiles_to_encode == plan.tiles >= (result.tiles["cluster"] >= 0).sum()  # the bank rule: a bound
    assert plan.encode_bound and "at most" in plan.text()
    expected = 0
    for path in inputs:
        with rasterio.open(path) as src:  # drop edge: whole 128-px tiles; the RGB bands of a 4-band file
            expected += (src.height // 128) * 128 * (src.width // 128) * 128 * 3
    assert plan.bytes_to_decode == expected
    assert plan.images_per_s > 0 and plan.decode_mb_per_s > 0 and plan.seconds > plan.setup_s
    assert plan.hours_on(4) < plan.hours_on(1)
    paper = estimate_run(inputs, tile_size=128, keep=0.15, prior_bank=("default",), stage1="paper",
                         cache_dir=str(tmp_path / "c"))
    assert paper.tiles_to_encode == round(0.30 * paper.tiles)  # the paper's rule: a count
    assert not paper.encode_bound and "at most" not in paper.text()
    alone = estimate_run(inputs, tile_size=128)
    assert alone.tiles_to_encode == 0 and alone.images_per_s is None


def test_the_cli_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    folder = tmp_path / "work"
    folder.mkdir()
    out = folder / "out.gpkg"
    args = ["run", shared(NAIP[0]), "-o", str(out), "--tile-size", "128", "--cache-dir", str(tmp_path / "c"),
            "--dry-run"]
    said = CliRunner().invoke(main, args)
    assert said.exit_code == 0, said.output
    for line in ("inputs: 1", "tiles: ", "to decode: ", "to encode: ", "images/s measured here", "estimate: ",
                 "on 4 workers", "nothing was written"):
        assert line in said.output, line
    assert list(folder.iterdir()) == []
    events = CliRunner().invoke(main, [*args, "--progress-json"])
    last = json.loads(events.output.strip().splitlines()[-1])
    assert last["event"] == "ok" and last["dry_run"] and last["tiles"] > 0 and last["seconds"] > 0
    assert list(folder.iterdir()) == []
    missing = CliRunner().invoke(main, ["run", shared(NAIP[0])])
    assert missing.exit_code == 1 and "give -o OUT.gpkg" in missing.output and "--dry-run" in missing.output


def test_the_encoder_speed_is_its_fastest_batch(monkeypatch):
    import rsprune_geo.planning as planning

    now = [0.0]
    monkeypatch.setattr(planning.time, "perf_counter", lambda: now[0])  # a clock the encoder moves

    class Stepping:  # each batch takes longer than the last: 1, 2, 3, 4 "seconds"
        input_size, batch_size, runtime = 8, 4, Runtime.TORCH  # torch: the run hands it its own batch

        def __init__(self):
            self.calls = 0

        def encode(self, images):
            self.calls += 1
            now[0] += self.calls

    encoder = Stepping()
    assert _encoder_speed(encoder, batches=3) == 4 / 2  # the warm-up uncounted; the fastest timed batch counts
    assert encoder.calls == 4


def test_the_encoder_speed_is_timed_at_the_batch_a_run_hands_it():
    from rsprune_geo.engine.passes import ONNX_BATCH

    class Seen:
        input_size, batch_size, runtime = 8, 4, Runtime.ONNX_INT8

        def __init__(self):
            self.batches = []

        def encode(self, images):
            self.batches.append(len(images))

    encoder = Seen()
    _encoder_speed(encoder, batches=2)
    assert encoder.batches == [ONNX_BATCH] * 3  # onnxruntime: a run hands it ONNX_BATCH images at once

