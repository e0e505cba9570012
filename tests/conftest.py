"""Shared fixtures: the real imagery in ../shared/data and small generated rasters."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

import rsprune_geo

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RSPRUNE_SHARED_DATA", REPO.parent / "shared" / "data"))
GEOTIFF = SHARED_DATA / "geotiff"
UCMERCED = SHARED_DATA / "scenes" / "ucmerced"


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """The tests never write to the user's cache (exported networks, embeddings, banks): the
    default cache folder is one of their own for the session, cold as on a fresh machine."""
    patch = pytest.MonkeyPatch()
    folder = tmp_path_factory.mktemp("rsprune-cache")
    patch.setenv("RSPRUNE_CACHE", str(folder))
    yield folder
    patch.undo()


def shared(relative: str) -> str:
    """Path of a file in ../shared/data/geotiff; fail loudly (not skip) when it is missing."""
    path = GEOTIFF / relative
    if not path.exists():
        pytest.fail(f"real test data missing: {path} (see ../shared/data/CATALOG.md)")
    return str(path)


@pytest.fixture
def make_raster(tmp_path):
    """Write a small GeoTIFF from an array: make_raster(data, name=..., crs=..., nodata=...)."""

    def _make(
        data: np.ndarray,
        name: str = "raster.tif",
        crs: str | None = "EPSG:32633",
        transform=None,
        nodata=None,
        **profile,
    ) -> str:
        data = np.asarray(data)
        if data.ndim == 2:
            data = data[None]
        path = tmp_path / name
        with rasterio.open(
            path,
            "w",
            driver="GTiff",
            width=data.shape[2],
            height=data.shape[1],
            count=data.shape[0],
            dtype=data.dtype,
            crs=crs,
            transform=transform or from_origin(500000, 4000000, 10, 10),
            nodata=nodata,
            **profile,
        ) as dst:
            dst.write(data)
        return str(path)

    return _make


@pytest.fixture
def textured():
    """A (3, h, w) uint8 image: random texture (high entropy)."""

    def _make(h: int, w: int, seed: int = 0) -> np.ndarray:
        return np.random.default_rng(seed).integers(1, 256, (3, h, w), dtype=np.uint8)

    return _make


NAIP = ["opengeos-data/naip/m_4709963_se_14_1_20090818.tif", "opengeos-data/naip/m_4709963_se_14_1_20100629.tif"]


@pytest.fixture(scope="session")
def naip_run(tmp_path_factory):
    """A stage-2 run (keep 0.3) over two NAIP dates, copied to a folder of their own, with a
    six-scene UC Merced bank."""
    root = tmp_path_factory.mktemp("naip-run")
    folder, bank = root / "naip", root / "bank"
    folder.mkdir()
    for relative in NAIP:
        shutil.copy(shared(relative), folder)
    for cls in ("agricultural", "forest", "river", "sparseresidential", "freeway", "golfcourse"):
        (bank / cls).mkdir(parents=True)
        for f in sorted((UCMERCED / cls).iterdir())[:6]:
            os.symlink(f, bank / cls / f.name)
    (bank / "bank.json").write_text('{"gsd": 0.3}')  # UC Merced's pixel size
    out = root / "run.gpkg"
    result = rsprune_geo.run([str(folder)], out, tile_size=128, keep=0.3, prior_bank=(str(bank),),
                             encoder="rcf-empirical", cache_dir=str(root / "cache"))
    assert 0 < len(result.kept) < len(result.tiles)
    return {"gpkg": out, "result": result, "folder": folder, "root": root}
