"""Prior-bank profiles: built from a folder, they select what the folder selects; the shipped one
runs the full method with no folder; a profile for another encoder or layout is refused."""

import json
import os
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

import rsprune_geo
from rsprune_geo.bank.building import _reachable_sizes, build_profile
from rsprune_geo.bank.priorbank import find_prior_bank
from rsprune_geo.bank.profile import (
    DEFAULT_PROFILE,
    BankProfile,
    banks_or_default,
    load_profile,
    open_bank,
)
from rsprune_geo.cli import main
from rsprune_geo.errors import InputError
from rsprune_geo.stages.information import bank_entropies

from .conftest import NAIP, UCMERCED, shared

PIX4D = "rio-tiler/pix4d_alpha_nodata.tif"  # 0.35 m/pixel: the bank's 0.3 m images are brought to 0.86
DECISIONS = ["tile_id", "status", "reason", "cluster", "scene", "centroid_distance", "entropy_rank"]


@pytest.fixture(scope="module")
def small_bank(tmp_path_factory):
    """Five UC Merced classes (100 images, three of them with off-size images), its folder named
    as UC Merced's so its 0.3 m pixel size is known, and its profile built by the CLI at two input sizes."""
    root = tmp_path_factory.mktemp("bank")
    bank = root / "ucmerced"
    for cls in ("golfcourse", "harbor", "tenniscourt", "beach", "forest"):
        (bank / cls).mkdir(parents=True)
        for f in sorted((UCMERCED / cls).iterdir()):
            os.symlink(f, bank / cls / f.name)
    profile = root / "five.rsbank"
    built = CliRunner().invoke(main, ["bank", "build", str(bank), "-o", str(profile), "--source", "UC Merced, five "
                                      "classes", "--terms", "public domain", "--cache-dir", str(root / "cache"),
                                      "--input-size", "224", "--input-size", "128"])
    assert built.exit_code == 0, built.output
    assert "100 images in 5 classes, 0.3 m/pixel" in built.output and "onnx-int8" in built.output
    assert "input size: 224 and 128 px" in built.output
    return {"folder": bank, "profile": profile, "cache": root / "cache"}


@pytest.mark.parametrize("raster", [PIX4D, NAIP[0]])
def test_a_profile_selects_what_its_folder_selects(small_bank, tmp_path, raster):
    runs = {}
    for name in ("folder", "profile"):
        runs[name] = rsprune_geo.run([shared(raster)], tmp_path / f"{name}.gpkg", tile_size=64, keep=0.15,
                                     prior_bank=(str(small_bank[name]),), cache_dir=str(small_bank["cache"]))
    by_folder, by_profile = runs["folder"], runs["profile"]
    assert by_profile.tiles[DECISIONS].equals(by_folder.tiles[DECISIONS])
    assert 0 < len(by_profile.kept) < len(by_profile.tiles)
    assert by_profile.record.stage1.floor_per_scene == by_folder.record.stage1.floor_per_scene
    s1, s2 = by_folder.record.stage2, by_profile.record.stage2
    assert s2.encoder_key == s1.encoder_key and s2.encoder_runtime == "onnx-int8"
    assert s2.prior_bank == [str(small_bank["profile"])] and s2.prior_bank_fingerprint == s1.prior_bank_fingerprint
    assert s2.bank_images_per_class == s1.bank_images_per_class and s2.bank_gsd == 0.3


def test_a_profile_at_another_input_size_selects_what_its_folder_selects(small_bank, tmp_path):
    """A profile's other size shares its int8 network: the folder's run at that size calibrates at
    the encoder's own size too, so both encode alike and decide alike."""
    runs = {name: rsprune_geo.run([shared(PIX4D)], tmp_path / f"{name}.gpkg", tile_size=64, keep=0.15,
                                  prior_bank=(str(small_bank[name]),), cache_dir=str(small_bank["cache"]),
                                  input_size=128)
            for name in ("folder", "profile")}
    assert runs["profile"].tiles[DECISIONS].equals(runs["folder"].tiles[DECISIONS])
    s1, s2 = runs["folder"].record.stage2, runs["profile"].record.stage2
    assert s2.input_size == s1.input_size == 128 and s2.encoder_key == s1.encoder_key
    assert "efficientnet-lite0-128-" in s2.encoder_key and "128 px" in runs["profile"].summary()
    at_224 = rsprune_geo.run([shared(PIX4D)], tile_size=64, keep=0.15, prior_bank=(str(small_bank["profile"]),),
                             cache_dir=str(small_bank["cache"]))
    assert at_224.record.stage2.input_size == 224 and "-224-" in at_224.record.stage2.encoder_key
    profile = load_profile(small_bank["profile"])
    assert profile.input_sizes == [224, 128]
    sized = profile.at_size(128)
    assert sized.about["encoder"]["input_size"] == 128 and sized.about["encoder"]["key"] == s2.encoder_key.split(
        "-bank")[0]
    assert not np.array_equal(sized.centroids.vectors, profile.centroids.vectors)
    assert profile.at_size(224) is profile


def test_an_input_size_the_profile_lacks_is_a_clear_error(small_bank, tmp_path):
    with pytest.raises(InputError, match="made at 224 and 128 px; this run asks for `input_size` 160: build a "
                                         "profile at it \\(`rsprune bank build --input-size 160`\\)"):
        rsprune_geo.run([shared(PIX4D)], tile_size=64, keep=0.15, prior_bank=(str(small_bank["profile"]),),
                        cache_dir=str(small_bank["cache"]), input_size=160)
    ran = CliRunner().invoke(main, ["run", shared(PIX4D), "-o", str(tmp_path / "o.gpkg"), "--tile-size", "64",
                                    "--input-size", "100", "--prior-bank", str(small_bank["folder"]),
                                    "--cache-dir", str(small_bank["cache"])])
    assert ran.exit_code == 1 and "input-size 100: efficientnet-lite0 runs at 224 px; or 128, 160, 192, 224" in (
        ran.output), ran.output


def test_a_profile_of_any_name_is_told_as_a_profile(small_bank, tmp_path):
    """A profile is any file (``.rsbank`` is only the habit): the record says it was one, and the
    summary names it, also when the run is read back."""
    from rsprune_geo.runs.runfile import read_run

    renamed = tmp_path / "five-classes.bank"
    renamed.write_bytes(small_bank["profile"].read_bytes())
    result = rsprune_geo.run([shared(PIX4D)], tmp_path / "o.gpkg", tile_size=64, keep=0.15,
                             prior_bank=(str(renamed),), cache_dir=str(small_bank["cache"]))
    assert result.record.stage2.prior_bank_profile
    assert "prior bank: the profile five-classes.bank (100 images, 5 scenes)" in result.summary()
    _, record = read_run(tmp_path / "o.gpkg")
    assert record.stage2.prior_bank_profile and not rsprune_geo.run(
        [shared(PIX4D)], tile_size=64, keep=0.15, prior_bank=(str(small_bank["folder"]),),
        cache_dir=str(small_bank["cache"])).record.stage2.prior_bank_profile


def test_profile_entropies_are_the_folders_at_every_scale(small_bank):
    profile = load_profile(small_bank["profile"])
    bank = find_prior_bank([small_bank["folder"]])
    odd = [i for i, size in enumerate(profile.sizes.tolist()) if size != [256, 256]]
    assert len(odd) >= 5  # golf courses 256x251, harbour 257x257, a tennis court 247x256
    for scale in (1.0, 2.0, 0.857, 0.5123, 0.25, 0.1251, 0.03):
        expected = bank_entropies(bank.paths, scale)
        assert np.array_equal(profile.entropies(scale), expected), scale


def test_a_size_the_profile_lacks_is_a_clear_error(small_bank):
    profile = load_profile(small_bank["profile"])
    keep = ~((profile.entropy_index[:, 0] == 3) & (profile.entropy_index[:, 1] == 128))
    profile.entropy_index, profile.entropy_values = profile.entropy_index[keep], profile.entropy_values[keep]
    assert profile.entropies(1.0).shape == (100,)
    with pytest.raises(InputError, match="no entropy of image 3 at 128x128 px \\(scale 0.5\\); give the bank folder"):
        profile.entropies(0.5)


def test_reachable_sizes_cover_every_scale():
    from rsprune_geo.reading.pixels import scaled_size

    for size in [(256, 256), (256, 251), (247, 256), (257, 257), (64, 40)]:
        reachable = _reachable_sizes(size)
        for scale in np.random.default_rng(0).uniform(0.0, 1.2, 3000):
            assert scaled_size(size, float(scale)) in reachable


def test_a_profile_refuses_what_it_was_not_built_for(small_bank, tmp_path):
    raster, bank = shared(PIX4D), (str(small_bank["profile"]),)

    def run(**options):
        return rsprune_geo.run([raster], tmp_path / "o.gpkg", tile_size=64, keep=0.15, prior_bank=bank,
                               cache_dir=str(small_bank["cache"]), overwrite=True, **options)

    with pytest.raises(InputError, match="a profile for the efficientnet-lite0 encoder.*asks for rcf-gaussian"):
        run(encoder="rcf-gaussian")
    with pytest.raises(InputError, match="fitted with k_per_class 4 \\(this run: 2\\)"):
        run(k_per_class=2)
    with pytest.raises(InputError, match="built for .*-int8-.* this run's encoder is .* \\(runtime onnx\\)"):
        run(runtime="onnx")
    with pytest.raises(InputError, match="evaluate.*give the bank folder, not a profile"):
        run(evaluate=True)
    with pytest.raises(InputError, match="a profile stands alone"):
        open_bank([str(small_bank["profile"]), str(small_bank["folder"])])
    with pytest.raises(InputError, match="draws its filters from the bank's images"):
        build_profile([small_bank["folder"]], tmp_path / "rcf.rsbank", encoder="rcf-empirical")


def test_a_bad_profile_file_is_a_clear_error(small_bank, tmp_path):
    junk = tmp_path / "junk.rsbank"
    junk.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="junk.rsbank: not a prior-bank profile"):
        load_profile(junk)
    notes = tmp_path / "notes.txt"  # a file given as a bank is read as a profile (a bank is a folder)
    notes.write_text("a list of scenes")
    with pytest.raises(InputError, match="notes.txt: not a prior-bank profile"):
        open_bank([str(notes)])
    with pytest.raises(InputError, match="no such prior-bank profile"):
        load_profile(tmp_path / "missing.rsbank")
    future = tmp_path / "future.rsbank"
    with zipfile.ZipFile(small_bank["profile"]) as src, zipfile.ZipFile(future, "w") as dst:
        for item in src.namelist():
            data = src.read(item)
            if item == "profile.json":
                data = json.dumps({**json.loads(data), "format": 99}).encode()
            dst.writestr(item, data)
    with pytest.raises(InputError, match="profile format 99; this rsprune_geo reads format 1"):
        load_profile(future)


def test_the_shipped_profile_runs_the_full_method_with_no_folder(tmp_path):
    assert DEFAULT_PROFILE.is_file(), "make shipped builds it"
    profile = load_profile("default")
    assert isinstance(profile, BankProfile) and len(profile) == 420 and len(profile.classes) == 21
    assert "Yang & Newsam" in profile.about["source"] and "public domain" in profile.about["terms"]
    assert os.path.getsize(DEFAULT_PROFILE) < 8e6
    assert banks_or_default(()) == ("default",) and banks_or_default(("none",)) == ()
    with pytest.raises(InputError, match="none stands alone"):
        banks_or_default(("none", "default"))
    out = tmp_path / "o.gpkg"
    ran = CliRunner().invoke(main, ["run", shared(PIX4D), "-o", str(out), "--tile-size", "64", "--keep", "0.15"])
    assert ran.exit_code == 0, ran.output
    assert "stage 1: rule bank" in ran.output and "42 centroids over 21 scenes" in ran.output
    info = CliRunner().invoke(main, ["info", str(out), "--json"])
    stage2 = json.loads(info.output)["stage2"]
    assert stage2["prior_bank"] == [str(DEFAULT_PROFILE)] and stage2["encoder_runtime"] == "onnx-int8"
    assert load_profile("default").input_sizes == [224, 128]  # the default and the fast point
    fast = CliRunner().invoke(main, ["run", shared(PIX4D), "-o", str(tmp_path / "fast.gpkg"), "--tile-size", "64",
                                     "--keep", "0.15", "--input-size", "128"])
    assert fast.exit_code == 0 and "(runtime onnx-int8, 128 px)" in fast.output, fast.output
    alone = CliRunner().invoke(main, ["run", shared(PIX4D), "-o", str(tmp_path / "s1.gpkg"), "--tile-size", "64",
                                      "--prior-bank", "none"])
    assert alone.exit_code == 0 and "stage 2" not in alone.output and "rule paper" in alone.output


def test_bank_info_describes_a_profile(small_bank):
    shown = CliRunner().invoke(main, ["bank", "info", str(small_bank["profile"])])
    assert shown.exit_code == 0 and "source: UC Merced, five classes" in shown.output
    as_json = json.loads(CliRunner().invoke(main, ["bank", "info", str(small_bank["profile"]), "--json"]).output)
    assert as_json["classes"] == {c: 20 for c in ("beach", "forest", "golfcourse", "harbor", "tenniscourt")}
    bad = CliRunner().invoke(main, ["run", shared(PIX4D), "-o", "x.gpkg", "--prior-bank", "nowhere"])
    assert bad.exit_code == 2 and "nowhere: no such folder or profile (or use default, none)" in bad.output


def test_a_profile_brings_its_own_seed(tmp_path):
    """A run's seed may differ from the profile's: its centroids (and an encoder drawn from a seed,
    as RCF's filters are) stay the profile's."""
    bank = tmp_path / "two"
    for cls in ("forest", "beach"):
        (bank / cls).mkdir(parents=True)
        for f in sorted((UCMERCED / cls).iterdir())[:12]:
            os.symlink(f, bank / cls / f.name)
    profile = build_profile([bank], tmp_path / "rcf.rsbank", encoder="rcf-gaussian", cache_dir=tmp_path / "cache")
    assert profile.about["encoder"]["centroids"]["seed"] == 0
    run = rsprune_geo.run([shared(PIX4D)], tmp_path / "o.gpkg", tile_size=64, keep=0.15, encoder="rcf-gaussian",
                          prior_bank=(str(tmp_path / "rcf.rsbank"),), seed=5, cache_dir=str(tmp_path / "cache"))
    # the profile's encoder (its vectors mapped by the profile's scene metric), whatever the run's seed
    assert run.record.stage2.encoder_key.startswith(profile.about["encoder"]["key"] + "-bank") and run.record.seed == 5
    assert 0 < len(run.kept) < len(run.tiles)


def test_profile_arrays_are_stored_as_byte_planes_and_read_back_exactly():
    from rsprune_geo.bank.profile import PLANES_MIN, packed_arrays, unpacked_arrays

    rng = np.random.default_rng(0)
    arrays = {"values": rng.normal(size=3000), "index": rng.integers(0, 400, (2000, 3)).astype(np.int32),
              "transform": rng.normal(size=(64, 32)).astype(np.float32), "small": np.arange(5.0),
              "labels": np.array(["a", "b"])}
    stored = packed_arrays(arrays)
    assert "small" in stored and "labels" in stored and "values" not in stored  # small and text arrays as they are
    assert stored["index@planes"].shape == (4, 6000) and stored["index@planes"].dtype == np.uint8
    back = unpacked_arrays(stored)
    assert set(back) == set(arrays)
    for name, array in arrays.items():
        assert back[name].dtype == array.dtype and back[name].shape == array.shape, name
        assert np.array_equal(back[name], array) and back[name].flags.c_contiguous, name
    assert unpacked_arrays(arrays).keys() == arrays.keys()  # a profile written before byte planes reads as it is
    assert PLANES_MIN <= 2000 * 3
