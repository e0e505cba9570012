"""The command line's `rio` habits: -v/-q wired to logging, `rsprune info`, `--footprints -`,
`--progress-json` on every long command (on the real NAIP run of conftest)."""

from __future__ import annotations

import json
import os
import re

import geopandas as gpd
import pyogrio
import pytest
from click.testing import CliRunner

from rsprune_geo.cli import main
from rsprune_geo.runs.runfile import describe_run

from .conftest import NAIP, UCMERCED, shared

LONG_COMMANDS = ("run", "select", "evaluate", "export", "report", "demo", "labelled-pool")


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def json_events(stderr: str) -> list[dict]:
    lines = [line for line in stderr.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # fails on any line that is not JSON


def test_describe_run_and_rsprune_info(naip_run):
    info = describe_run(naip_run["gpkg"])
    statuses = pyogrio.read_dataframe(naip_run["gpkg"], layer="tiles", columns=["status"], read_geometry=False)
    truth = statuses["status"].value_counts().to_dict()
    assert info["tiles"] == len(statuses) and info["counts"] == truth and truth["kept"] > 0
    assert info["parameters"]["tile_size"] == 128 and len(info["inputs"]) == 2
    assert {"tiles", "runs", "clusters"} <= set(info["layers"]) and "rsprune_geo" in info["versions"]
    assert info["stage2"]["encoder"] == "rcf-empirical"

    as_json = invoke("info", naip_run["gpkg"], "--json")
    assert as_json.exit_code == 0 and json.loads(as_json.output)["counts"] == info["counts"]
    text = invoke("info", naip_run["gpkg"])
    assert text.exit_code == 0
    shown = {m.group(1): (int(m.group(2)), float(m.group(3)))
             for m in re.finditer(r"^ +(\w+) +(\d+) +([\d.]+)%$", text.output, re.MULTILINE)}
    assert shown == {s: (n, round(100 * n / len(statuses), 1)) for s, n in truth.items()}, text.output
    assert "stage 1: rule bank" in text.output and "stage 2: encoder rcf-empirical" in text.output
    assert all(os.path.basename(p) in text.output for p in NAIP) and "tile_size = 128" in text.output


def test_info_on_a_file_that_is_not_a_run(tmp_path):
    result = invoke("info", shared("rasterio-tests/RGB.byte.tif"))
    assert result.exit_code == 1 and "Error:" in result.output


def _bank_run_args(naip_run, out):
    return ["run", str(naip_run["folder"] / os.path.basename(NAIP[0])), "-o", out, "--tile-size", "128",
            "--prior-bank", naip_run["root"] / "bank", "--encoder", "rcf-empirical",
            "--cache-dir", naip_run["root"] / "cache"]


def test_verbose_and_quiet_set_the_log_level(naip_run, tmp_path):
    default = invoke(*_bank_run_args(naip_run, tmp_path / "a.gpkg"))
    assert default.exit_code == 0
    assert "WARNING: the tiles are 5 m/pixel" in default.stderr and "INFO:" not in default.stderr
    verbose = invoke("-v", *_bank_run_args(naip_run, tmp_path / "b.gpkg"))
    assert "INFO: tiling: 35 tiles of 128 px" in verbose.stderr and "INFO: stage 1 (rule bank" in verbose.stderr
    quiet = invoke("-q", *_bank_run_args(naip_run, tmp_path / "c.gpkg"))
    assert quiet.exit_code == 0 and quiet.stderr == ""  # no warning line, no progress bar
    assert "kept" in quiet.stdout  # the result is still printed
    failing = invoke("-qq", "run", tmp_path / "missing.tif", "-o", tmp_path / "d.gpkg")
    assert failing.exit_code == 1 and "Error:" in failing.stderr  # errors that stop a command still show


def test_footprints_to_standard_output(naip_run, tmp_path):
    result = invoke("export", naip_run["gpkg"], "--footprints", "-", "--to", tmp_path / "chips", "--format", "png")
    assert result.exit_code == 0
    collection = json.loads(result.stdout)  # nothing else on standard output
    kept = naip_run["result"].kept
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == len(kept)
    frame = gpd.GeoDataFrame.from_features(collection["features"], crs=4326)
    assert sorted(frame["tile_id"]) == sorted(kept["tile_id"])
    assert frame.total_bounds == pytest.approx(kept.to_crs(4326).total_bounds)
    assert "chips:" in result.stderr and len(list((tmp_path / "chips").glob("*.png"))) == len(kept)


def test_every_long_command_speaks_progress_json(naip_run, tmp_path):
    for name in LONG_COMMANDS:
        assert any(p.name == "progress_json" for p in main.commands[name].params), name
    gpkg = naip_run["gpkg"]
    calls = {
        "select": ["select", gpkg, "-o", tmp_path / "s.gpkg", "--keep", "0.5"],
        "export": ["export", gpkg, "--to", tmp_path / "chips", "--footprints", tmp_path / "k.fgb"],
        "report": ["report", gpkg, "-o", tmp_path / "r.html"],
        "evaluate": ["evaluate", gpkg, "-o", tmp_path / "e.gpkg"],
        "labelled-pool": ["labelled-pool", UCMERCED, tmp_path / "pool"],
    }
    for name, args in calls.items():
        result = invoke(*args, "--progress-json")
        assert result.exit_code == 0, (name, result.output)
        events = json_events(result.stderr)
        assert result.stdout == "", name
        assert events[-1]["event"] == "ok", name
        if name in ("export", "evaluate", "report"):
            assert any(e["event"] == "progress" for e in events), name
    bad = invoke("select", gpkg, "-o", tmp_path / "s.gpkg", "--keep", "0.5", "--progress-json")
    assert json_events(bad.stderr)[-1]["event"] == "error" and bad.exit_code == 1


def test_a_progress_bar_says_a_rate_only_once_it_means_something(capsys):
    """No rate in a stage's first second (tqdm's own first rates divide by almost no time:
    "5368709.12tile/s"); then the average, in words that agree."""
    from rsprune_geo.cli.progress import TqdmProgress, rate_text

    with TqdmProgress() as bars:
        bars("stage1", 10, 100)
        first = capsys.readouterr().err
        bars.bar.start_t -= 5.0  # five seconds into the stage, whatever the machine's speed
        bars("stage1", 50, 100)
        later = capsys.readouterr().err
    assert "/s" not in first and "10/100" in first
    assert re.search(r"\b\d+\.\d tiles/s\]", later), later  # about 10, however busy the machine
    assert rate_text(1, 4.0, "tile") == "4.0 s/tile" and rate_text(3000, 2.0, "chip") == "1,500.0 chips/s"
