"""The prior bank: labelled folders, wrappers, bad folders, mixed image sizes."""

import numpy as np
import pytest
from PIL import Image

from rsprune_geo.errors import InputError
from rsprune_geo.pixels import read_images
from rsprune_geo.priorbank import find_prior_bank

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
