"""The rsprune CLI: a real run, and one-line errors (no traceback) for bad input."""

import json
import os
import subprocess
import sys

import geopandas as gpd
import pytest
from click.testing import CliRunner

import rsprune_geo
from rsprune_geo.choices import ClusteringMode, EdgeMode, ScalingScope, Stage1Rule
from rsprune_geo.cli import main

from .conftest import shared


def rsprune(*args, cwd=None):
    """Run the CLI as a user would, in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "rsprune_geo.cli", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, timeout=300,
    )


def test_run_writes_the_geopackage_and_prints_a_summary(tmp_path):
    out = tmp_path / "out.gpkg"
    result = CliRunner().invoke(main, [
        "run", shared("rasterio-tests/RGB.byte.tif"), "-o", str(out), "--tile-size", "128",
        "--keep", "0.2", "--max-nodata", "0.5", "--seed", "7",
    ])
    assert result.exit_code == 0, result.output
    assert "kept" in result.output and str(out) in result.output
    tiles = gpd.read_file(out, layer="tiles")
    # --keep counts the tiles with data: the nodata collar is not part of the data
    assert (tiles.status == "kept").sum() == round(0.2 * (tiles.status != "nodata").sum())


def test_a_run_without_keep_says_that_it_kept_everything_past_stage_1(tmp_path):
    """The default keep is stage 1's fraction (all of it under the bank rule): the summary says so
    and names the high ratio, where a run given a keep says nothing of it."""
    runs = {}
    for name, extra in [("default", []), ("given", ["--keep", "0.15"])]:
        result = CliRunner().invoke(main, ["run", shared("rio-tiler/pix4d_alpha_nodata.tif"), "-o",
                                           str(tmp_path / f"{name}.gpkg"), "--tile-size", "64", *extra])
        assert result.exit_code == 0, result.output
        runs[name] = result.output
    assert "keep: not given, so every tile that passed stage 1 is kept; a keep of 0.15 prunes 85%" in runs["default"]
    assert "keep: not given" not in runs["given"]


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda d: ["run", d / "notes.txt", "-o", d / "o.gpkg"], "not a raster GDAL can open"),
        (lambda d: ["run", d / "missing.tif", "-o", d / "o.gpkg"], "no such file"),
        (lambda d: ["run", shared("deepforest/OSBS_029.tif"), "-o", d / "o.gpkg", "--tile-size", "512"],
         "larger than the raster"),
        (lambda d: ["run", shared("deepforest/OSBS_029.tif"), "-o", d / "o.gpkg", "--keep", "0"],
         "must be in (0, 1]"),
        (lambda d: ["run", shared("deepforest/OSBS_029.tif"), "-o", d / "o.gpkg", "--stage1-keep", "1.5"],
         "must be in (0, 1]"),
        (lambda d: ["run", shared("deepforest/OSBS_029.tif"), "-o", d / "no" / "dir" / "o.gpkg"],
         "does not exist"),
    ],
)
def test_bad_input_gives_one_line_and_nonzero_exit(tmp_path, make_args, message):
    (tmp_path / "notes.txt").write_text("hello")
    proc = rsprune(*make_args(tmp_path))
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], proc.stderr
    assert not (tmp_path / "o.gpkg").exists()


def test_unwritable_output_folder(tmp_path):
    if os.geteuid() == 0:
        # root writes anywhere; a path under a regular file is unwritable for everyone
        (tmp_path / "file").write_text("x")
        target = tmp_path / "file" / "o.gpkg"
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = locked / "o.gpkg"
    proc = rsprune("run", shared("deepforest/OSBS_029.tif"), "-o", target, "--tile-size", "100")
    assert proc.returncode == 1 and "Error: " in proc.stderr and "Traceback" not in proc.stderr


def test_no_crs_is_refused_or_allowed_with_option(tmp_path, make_raster, textured):
    raster = make_raster(textured(400, 400), name="nocrs.tif", crs=None)
    out = tmp_path / "pixels.gpkg"
    proc = rsprune("run", raster, "-o", out, "--tile-size", "100")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("Error: ") and "no CRS" in proc.stderr and "--allow-no-crs" in proc.stderr
    assert not out.exists()
    proc = rsprune("run", raster, "-o", out, "--tile-size", "100", "--allow-no-crs", "-q")
    assert proc.returncode == 0, proc.stderr
    tiles = gpd.read_file(out, layer="tiles")
    assert tiles.crs is None and len(tiles) == 16
    assert tiles.geometry.iloc[0].bounds == (500000.0, 3999000.0, 501000.0, 4000000.0)  # its transform


def test_help_lists_the_options():
    result = CliRunner().invoke(main, ["run", "--help"])
    for option in ("--tile-size", "--stride", "--bands", "--aoi", "--max-nodata", "--entropy-min",
                   "--stage1-keep", "--keep", "--out-crs", "--overwrite", "--seed"):
        assert option in result.output


def test_progress_json_protocol(tmp_path):
    """--progress-json: every stderr line is a JSON event; progress, then ok or error."""
    import json

    out = tmp_path / "o.gpkg"
    proc = rsprune("run", shared("rasterio-tests/RGB.byte.tif"), "-o", out, "--tile-size", "64", "--progress-json")
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stderr.splitlines()]
    assert {e["event"] for e in events[:-1]} == {"progress", "warning"}
    # the shipped UC Merced profile is at 0.3 m, this Landsat scene at 300 m: said as a warning event
    assert all("another scale" in e["message"] for e in events if e["event"] == "warning")
    stages = [e["stage"] for e in events if e["event"] == "progress"]
    assert stages[0] == "tiling" and "stage1" in stages and stages[-1] == "writing"
    windows = [e for e in events if e.get("stage") == "stage1"]
    assert windows and windows[-1]["done"] == windows[-1]["total"] == 11 * 12  # counted in tiles
    assert events[-1]["event"] == "ok" and events[-1]["output"] == str(out)
    assert sum(events[-1]["counts"].values()) == events[-1]["tiles"] == 11 * 12
    assert proc.stdout == ""
    bad = rsprune("run", tmp_path / "missing.tif", "-o", tmp_path / "x.gpkg", "--progress-json")
    assert bad.returncode == 1
    last = json.loads(bad.stderr.splitlines()[-1])
    assert last["event"] == "error" and "no such file" in last["message"]


def test_every_run_option_reaches_the_run(tmp_path):
    """Each `rsprune run` flag sets its RunConfig field (wiring), and a run with many of them at
    once records them and shows their effect in the output."""
    from rsprune_geo.cli import run as run_cmd
    from rsprune_geo.config import RunConfig, choices_of, run_options

    samples = {int: "17", float: "0.5", str: "x"}
    for field, opt, kind in run_options():
        if opt.flag == "":
            continue
        flag = "--" + field.name.replace("_", "-")
        if field.type in ("bool",) or field.default is False:
            args, expected = [flag], True
        elif choices_of(kind):
            value = next(c for c in choices_of(kind).words() if c != field.default)
            args, expected = [flag, value], value
        elif field.name == "prior_bank":
            args, expected = [flag, str(tmp_path)], (str(tmp_path),)
        elif field.name == "aoi":
            aoi = tmp_path / "aoi.geojson"
            aoi.write_text('{"type": "FeatureCollection", "features": []}')
            args, expected = [flag, str(aoi)], str(aoi)
        elif field.name == "extend":
            args, expected = [flag, str(tmp_path)], str(tmp_path)
        elif field.name in ("cache_dir",):
            args, expected = [flag, str(tmp_path / "c")], str(tmp_path / "c")
        else:
            base = float if "float" in str(kind) else int if "int" in str(kind) and field.name != "bands" else str
            text = samples[base] if field.name != "bands" else "3,2,1"
            args, expected = [flag, text], base(text) if field.name != "bands" else "3,2,1"
        ctx = run_cmd.command.make_context("run", ["in.tif", "-o", "o.gpkg", *args])
        config = RunConfig(**{k: v for k, v in ctx.params.items()
                              if k not in ("inputs", "output", "overwrite", "quiet", "progress_json", "dry_run")})
        assert getattr(config, field.name) == expected, (flag, getattr(config, field.name), expected)

    out = tmp_path / "many.gpkg"
    proc = rsprune("run", shared("rasterio-tests/RGB.byte.tif"), "-o", out, "--tile-size", "100", "--stride", "150",
                   "--edge", "pad", "--bands", "3,2,1", "--max-nodata", "0.6", "--entropy-min", "1.0",
                   "--stage1-keep", "0.8", "--keep", "0.4", "--out-crs", "EPSG:4326", "--scaling", "run",
                   "--seed", "3", "-q")
    assert proc.returncode == 0, proc.stderr
    tiles, record = rsprune_geo.read_run(out)
    p = record.parameters  # a typed RunConfig, its choices enums
    assert (p.tile_size, p.stride, p.edge, p.bands, p.max_nodata, p.entropy_min, p.stage1_keep,
            p.keep, p.out_crs, p.scaling, p.seed) == (100, 150, EdgeMode.PAD, (3, 2, 1), 0.6, 1.0, 0.8, 0.4,
                                                      "EPSG:4326", ScalingScope.RUN, 3)
    assert p.edge is EdgeMode.PAD and p.scaling is ScalingScope.RUN
    assert tiles.crs.to_epsg() == 4326 and record.inputs[0]["bands"] == [3, 2, 1]
    assert (tiles.col_off % 150 == 0).all() and (tiles.width == 100).all()  # stride and tile size
    assert ((tiles.col_off + tiles.width) > 791).any()  # padded edge tiles reach past the raster
    assert (tiles.status == "nodata").sum() == (tiles.nodata_fraction > 0.6).sum()


def test_progress_json_through_stage_2(tmp_path):
    from rsprune_geo.fixtures.demo import DemoSpec, write_demo_mosaic, write_prior_bank

    mosaic = write_demo_mosaic(tmp_path / "m.tif", DemoSpec(size=1024))
    bank = write_prior_bank(tmp_path / "bank", per_class=4)
    proc = rsprune("run", mosaic, "-o", tmp_path / "o.gpkg", "--tile-size", "128", "--keep", "0.2", "--prior-bank",
                   bank, "--encoder", "rcf-gaussian", "--cache-dir", tmp_path / "cache", "--progress-json")
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stderr.splitlines()]
    stages = [e["stage"] for e in events if e["event"] == "progress"]
    # the bank rule encodes in stage 1's single pass over the windows: no separate encoding stage
    order = ["tiling", "prior_bank", "stage1", "selection", "writing"]
    assert [s for s in dict.fromkeys(stages)] == order
    tiles = gpd.read_file(tmp_path / "o.gpkg", layer="tiles")
    assert events[-1]["event"] == "ok" and events[-1]["counts"]["kept"] == round(0.2 * (tiles.status != "nodata").sum())
    done = [(e["done"], e["total"]) for e in events if e["event"] == "progress" and e["stage"] == "stage1"]
    assert done[-1][0] == done[-1][1] > 0 and [d for d, _ in done] == sorted(d for d, _ in done)
    paper = rsprune("run", mosaic, "-o", tmp_path / "p.gpkg", "--tile-size", "128", "--keep", "0.2", "--stage1",
                    "paper", "--prior-bank", bank, "--encoder", "rcf-gaussian", "--cache-dir", tmp_path / "cache",
                    "--progress-json")
    stages = [json.loads(line)["stage"] for line in paper.stderr.splitlines() if '"progress"' in line]
    assert [s for s in dict.fromkeys(stages)] == ["tiling", "prior_bank", "stage1", "encoding", "selection", "writing"]


def test_library_warnings_reach_the_terminal_as_one_log_line():
    import warnings

    import click

    from rsprune_geo.cli.errors import fail_cleanly

    @click.command()
    @fail_cleanly
    def noisy():
        for _ in range(3):
            warnings.warn("a library is unhappy", UserWarning, stacklevel=1)
        click.echo("done")

    result = CliRunner().invoke(noisy, [])
    assert result.exit_code == 0 and "done" in result.output
    lines = [line for line in result.stderr.splitlines() if "unhappy" in line] if hasattr(result, "stderr") else []
    assert len(lines) == 1 and lines[0].startswith("WARNING: ")


def test_a_read_only_folder_is_refused_before_any_work(tmp_path, monkeypatch):
    """Root writes almost anywhere: use a folder even root cannot write (/proc/sys), else make
    the permission check say so, so that the read-only branch runs in CI (as root) too."""
    from rsprune_geo.errors import OutputError
    from rsprune_geo.outputs.geopackage import check_output_path

    folder = next((p for p in ("/proc/sys", "/sys/kernel") if os.path.isdir(p) and not os.access(p, os.W_OK)), None)
    if folder is None:
        folder = str(tmp_path)
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if str(p) == folder else real(p, mode))
    with pytest.raises(OutputError, match="is not writable"):
        check_output_path(os.path.join(folder, "o.gpkg"))
    if folder.startswith("/proc") or folder.startswith("/sys"):
        proc = rsprune("run", shared("deepforest/OSBS_029.tif"), "-o", os.path.join(folder, "o.gpkg"))
        assert proc.returncode == 1 and "is not writable" in proc.stderr and "Traceback" not in proc.stderr


def test_stage2_flags_reach_the_run_and_its_record(tmp_path):
    from rsprune_geo.fixtures.demo import DemoSpec, write_demo_mosaic, write_prior_bank

    mosaic = write_demo_mosaic(tmp_path / "m.tif", DemoSpec(size=1024))
    bank = write_prior_bank(tmp_path / "bank", per_class=4)
    out = tmp_path / "s2.gpkg"
    proc = rsprune("run", mosaic, "-o", out, "--tile-size", "128", "--keep", "0.2", "--prior-bank", bank,
                   "--encoder", "rcf-gaussian", "--runtime", "torch", "--k-per-class", "2",
                   "--images-per-centroid", "1", "--bank-samples", "3", "--clustering", "self", "--quota-by",
                   "centroid", "--uniformity", "0.5", "--spread", "2", "--dedup", "0.999", "--batch-size", "8",
                   "--stage1", "paper", "--stage1-keep", "0.6", "--plausibility-z", "2.5", "--cache-dir",
                   tmp_path / "cache", "--device", "cpu", "-q")
    assert proc.returncode == 0, proc.stderr
    tiles, record = rsprune_geo.read_run(out)
    st2, p = record.stage2, record.parameters
    assert (st2.encoder, st2.encoder_runtime, st2.clustering, st2.quota_by, st2.uniformity,
            st2.spread, st2.dedup, st2.k_per_class, st2.bank_samples, st2.stage1_rule) == (
        "rcf-gaussian", "torch", "self", "centroid", 0.5, 2, 0.999, 2, 3, "paper")
    assert (p.batch_size, p.plausibility_z, p.device, p.images_per_centroid) == (8, 2.5, "cpu", 1)
    assert st2.clustering is ClusteringMode.SELF and st2.stage1_rule is Stage1Rule.PAPER  # enums, read back
    assert st2.n_centroids == 2 * st2.n_classes  # k-per-class 2
    n_data = int((tiles.status != "nodata").sum())
    assert st2.stage1_candidates == round(0.6 * n_data)  # the paper's cut at --stage1-keep
    assert (tiles.status == "kept").sum() == round(0.2 * n_data)
    assert list((tmp_path / "cache" / "embeddings").glob("*/*/shard-*.ids.npy"))  # --cache-dir used
