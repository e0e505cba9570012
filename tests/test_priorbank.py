"""The prior bank: labelled folders, wrappers, bad folders, mixed image sizes."""

import numpy as np
import pytest
from PIL import Image

from rsprune_geo.bank.priorbank import find_prior_bank
from rsprune_geo.errors import InputError
from rsprune_geo.reading.pixels import read_images

from .conftest import SHARED_DATA

UCMERCED = SHARED_DATA / "scenes" / "ucmerced"


def test_finds_uc_merced_classes_and_images():
    bank = find_prior_bank([UCMERCED])
    assert len(bank) == 420 and len(bank.classes) == 21
    assert (np.unique(bank.labels, return_counts=True)[1] == 20).all()
    assert bank.fingerprint == find_prior_bank([UCMERCED]).fingerprint


def test_mixed_sizes_are_resized():
    bank = find_prior_bank([UCMERCED])
    sizes = {Image.open(p).size for p in bank.paths}
    assert len(sizes) > 1  # the dataset has a few off-size images
    odd = [p for p in bank.paths if Image.open(p).size != (256, 256)][:2]
    imgs = read_images(odd, 64)
    assert imgs.shape == (2, 64, 64, 3) and imgs.dtype == np.uint8


def test_wrapper_folders_are_descended(tmp_path):
    root = tmp_path / "UCMerced_LandUse" / "Images"
    for cls in ("beach", "forest"):
        (root / cls).mkdir(parents=True)
        Image.new("RGB", (32, 32), (10, 20, 30)).save(root / cls / f"{cls}00.png")
    bank = find_prior_bank([tmp_path])
    assert bank.classes == ["beach", "forest"]


def test_bad_prior_banks(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        find_prior_bank([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no class folders"):
        find_prior_bank([tmp_path / "empty"])
    (tmp_path / "bank" / "a").mkdir(parents=True)
    (tmp_path / "bank" / "b").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "bank" / "a" / "x.png")
    with pytest.raises(InputError, match="holds no image"):
        find_prior_bank([tmp_path / "bank"])
    with pytest.raises(InputError, match="no prior bank"):
        find_prior_bank([])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(InputError, match="cannot read the image"):
        read_images([str(broken)], 16)


def test_multiband_uint16_tiffs_load_as_rgb(tmp_path, make_raster):
    """EuroSAT-style 13-band uint16 Sentinel-2 chips, deep inside a torchgeo-style root."""
    rng = np.random.default_rng(0)
    root = tmp_path / "bank" / "ds" / "images" / "remote_sensing" / "otherDatasets" / "sentinel_2" / "tif"
    for cls in ("Forest", "SeaLake"):
        (root / cls).mkdir(parents=True)
        data = rng.integers(500, 3000, (13, 64, 64), dtype=np.uint16)
        path = make_raster(data, name=f"{cls}_1.tif")
        (root / cls / f"{cls}_1.tif").write_bytes(open(path, "rb").read())
    bank = find_prior_bank([tmp_path / "bank"])
    assert bank.classes == ["Forest", "SeaLake"]
    imgs = read_images(bank.paths, 32)
    assert imgs.shape == (2, 32, 32, 3) and imgs.std() > 20


def test_a_truncated_bank_image_is_skipped_named_and_recorded(tmp_path, capfd):
    """A PNG cut short used to be read by GDAL as a partly black image, silently."""
    import shutil

    import rsprune_geo
    from rsprune_geo.bank.priorbank import load_prior_bank
    from rsprune_geo.fixtures.demo import DemoSpec, write_demo_mosaic, write_prior_bank

    bank_dir = write_prior_bank(tmp_path / "bank", per_class=4)
    victim = sorted((bank_dir / "forest").glob("*.png"))[0]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with pytest.raises(InputError, match="truncated"):
        read_images([str(victim)], 16)
    bank, skipped = load_prior_bank([bank_dir], tmp_path / "cache")
    assert [s["path"] for s in skipped] == [str(victim)] and str(victim) not in bank.paths
    assert len(bank) == len(find_prior_bank([bank_dir])) - 1
    mosaic = write_demo_mosaic(tmp_path / "m.tif", DemoSpec(size=1024))
    capfd.readouterr()
    result = rsprune_geo.run([str(mosaic)], tile_size=128, keep=0.2, prior_bank=(str(bank_dir),),
                             encoder="rcf-gaussian", cache_dir=str(tmp_path / "cache"))
    assert result.record.stage2.bank_skipped[0]["path"] == str(victim)
    assert any("1 unreadable image skipped" in w for w in result.record.warnings)
    out, err = capfd.readouterr()
    assert "Warning" not in err and out == ""  # no library warning reaches the terminal
    # a class whose every image is damaged is a clear error naming it
    for png in (bank_dir / "forest").glob("*.png"):
        png.write_bytes(png.read_bytes()[:100])
    shutil.rmtree(tmp_path / "cache")
    with pytest.raises(InputError, match="class 'forest' has no readable image"):
        load_prior_bank([bank_dir], tmp_path / "cache")
