"""Sources: find rasters (GeoTIFF, COG, VRT, chips, any GDAL path), open and describe them."""

from __future__ import annotations

import glob
import hashlib
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from ..errors import InputError, counted, require_extra
from ..files import file_fingerprint
from .dates import date_tags
from .pixels import MaskMode, choose_bands, file_mask
from .remote import read_errors

#: dtypes the information filter knows how to read.
SUPPORTED_DTYPES = ("uint8", "uint16", "int16", "uint32", "int32", "float32", "float64")

_GLOB_CHARS = set("*?[")


@dataclass(frozen=True, slots=True)
class RasterSource:
    """What the pipeline needs to know of one raster, without holding it open.

    Attributes:
        path: the file path or GDAL path.
        width: columns of pixels.
        height: rows of pixels.
        count: bands in the file.
        dtype: the bands' data type.
        crs: the CRS; ``None`` for chips in pixels.
        transform: the affine transform from pixels to the CRS.
        bands: the 1-based bands the pipeline reads (the RGB of a multispectral file).
        nodata: the nodata value, if any.
        mask_mode: where validity comes from: ``nodata`` (the nodata value), ``alpha`` (an
            alpha band, ``alpha_band``), ``mask`` (a GDAL per-dataset mask) or ``none`` (every
            pixel valid; non-finite floats are always invalid).
        alpha_band: the alpha band's index, when ``mask_mode`` is ``alpha``.
        block_shape: the file's internal block (rows, cols).
        overviews: the overview factors of the first band.
        fingerprint: the file's size, modification time and hashes of its head and tail,
            checked when the run is read again.
        key: the short key tile ids start with (:func:`source_key`).
        date_tags: GDAL metadata items that may hold the acquisition date.
        stac_item: the id of the STAC item the raster came from.
        stac_href: where that item is.
        planned: described by its STAC item's metadata, not opened by the scan: each open
            checks the file against it, and its validity is the file's (``mask_mode`` ``file``).
    """

    path: str
    width: int
    height: int
    count: int
    dtype: str
    crs: CRS | None
    transform: rasterio.Affine
    bands: tuple[int, ...]
    nodata: float | None
    mask_mode: MaskMode
    alpha_band: int | None
    block_shape: tuple[int, int]
    overviews: tuple[int, ...]
    fingerprint: str
    key: str = field(default="")
    date_tags: tuple[tuple[str, str], ...] = ()
    stac_item: str = ""  # the STAC item the raster came from (its id), and where that item is
    stac_href: str = ""
    planned: bool = False

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return self.height, self.width

    @property
    def name(self) -> str:
        """The file name, for messages."""
        return os.path.basename(self.path) or self.path

    def open(self) -> rasterio.io.DatasetReader:
        """Open the raster for reading (the caller closes it).

        A file gone or a server that no longer answers is an :class:`InputError` naming it.
        """
        with read_errors(self.path), warnings.catch_warnings():
            if self.crs is None:
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
            src = rasterio.open(self.path)
        if self.planned:
            try:
                self._check_plan(src)
            except InputError:
                src.close()
                raise
        return src

    def _check_plan(self, src: rasterio.io.DatasetReader) -> None:
        """An :class:`InputError` when the file is not what its STAC item's metadata said."""
        pixel = max(abs(self.transform.a), abs(self.transform.e), 1e-12)
        said = {"size": f"{self.width}x{self.height}", "data type": self.dtype}
        found = {"size": f"{src.width}x{src.height}", "data type": src.dtypes[0]}
        differ = [f"{what} {said[what]} (the file: {found[what]})" for what in said if said[what] != found[what]]
        if src.crs != self.crs:
            differ.append(f"CRS {_crs_text(self.crs)} (the file: {_crs_text(src.crs)})")
        if not np.allclose(tuple(src.transform)[:6], tuple(self.transform)[:6], rtol=0, atol=1e-3 * pixel):
            differ.append(f"transform {tuple(self.transform)[:6]} (the file: {tuple(src.transform)[:6]})")
        if max(self.bands) > src.count:
            differ.append(f"{counted(max(self.bands), 'band')} at least (the file: {src.count})")
        if differ:
            raise InputError(f"{self.path}: the STAC item {self.stac_item or ''} says {'; '.join(differ)}: fix "
                             "its proj: and raster: fields")

    def settled(self) -> RasterSource:
        """A planned source as its file is (opened once): its validity, block shape and overviews.

        Others as they are.

        Raises:
            InputError: the file cannot be opened, or is not what its STAC item said.
        """
        if not self.planned:
            return self
        with self.open() as src:
            mode, alpha_band = file_mask(src, self.bands)
            return replace(self, nodata=src.nodata, mask_mode=mode, alpha_band=alpha_band,
                           block_shape=tuple(src.block_shapes[self.bands[0] - 1]),
                           overviews=tuple(src.overviews(self.bands[0])), planned=False)

    def window_bounds(self, window: Window) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) of a pixel window in the source CRS."""
        return rasterio.windows.bounds(window, self.transform)

    @property
    def pixel_size_m(self) -> float | None:
        """Ground sample distance in metres (mean of the pixel's sides), or ``None`` without a CRS.

        Geographic CRSs are converted at the raster's centre latitude.
        """
        if self.crs is None:
            return None
        width, height = abs(self.transform.a), abs(self.transform.e)
        if self.crs.is_geographic:
            lat = self.transform.f + self.transform.e * self.height / 2
            return 111_320.0 * (width * float(np.cos(np.radians(lat))) + height) / 2
        side = (width + height) / 2
        try:
            return side * float(self.crs.linear_units_factor[1])
        except Exception:  # unknown units: assume metres
            return side


RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2")
CHIP_SUFFIXES = RASTER_SUFFIXES + (".png", ".jpg", ".jpeg")


def _crs_text(crs: CRS | None) -> str:
    """A CRS in a few characters, for messages."""
    if crs is None:
        return "none"
    code = crs.to_epsg()
    return f"EPSG:{code}" if code else crs.to_wkt()[:60]


def expand_paths(inputs: Iterable[str | os.PathLike], suffixes: Sequence[str] = RASTER_SUFFIXES,
                 recursive: bool = False, asset: str | None = None) -> list[str]:
    """Expand globs, folders and STAC catalogues into a sorted list of raster paths.

    The paths are absolute and de-duplicated.

    A folder contributes its files with one of ``suffixes`` (rasters by default; chip folders
    add PNG and JPEG), and with ``recursive`` those of its subfolders too (chips laid out a
    folder per class); GDAL virtual paths (``/vsicurl/...``) pass through unchanged. A STAC
    catalogue, item collection, item or stac-geoparquet file (local or http) gives each item's
    ``asset`` (:mod:`~rsprune_geo.reading.stac`), in the items' order.
    """
    return list(iter_paths(inputs, suffixes, recursive, asset))


def iter_paths(inputs: Iterable[str | os.PathLike], suffixes: Sequence[str] = RASTER_SUFFIXES,
               recursive: bool = False, asset: str | None = None) -> Iterator[str]:
    """:func:`expand_paths` one path at a time.

    A folder of a hundred million chips is walked, each folder's entries sorted, never listed whole (one
    input needs no list of what was seen).
    """
    from .stac import StacPath, looks_like_stac, stac_paths

    texts = [os.fspath(item) for item in inputs]
    seen: set[str] | None = set() if len(texts) > 1 or any(looks_like_stac(t) for t in texts) else None
    given = 0
    for text in texts:
        expanded = stac_paths(text, asset) if looks_like_stac(text) else _expanded(text, suffixes, recursive)
        for path in expanded:
            # absolute, so a run's record stays valid from any folder (an item's path already is)
            key = path if isinstance(path, StacPath) else recorded_path(path)
            if seen is not None:
                if key in seen:
                    continue
                seen.add(key)
            given += 1
            yield key
    if not given:
        raise InputError("no input raster given")


def _expanded(text: str, suffixes: Sequence[str], recursive: bool) -> Iterator[str]:
    """The paths one input stands for, sorted: itself, a glob's matches or a folder's files."""
    if text.startswith("/vsi"):
        yield text
    elif any(ch in _GLOB_CHARS for ch in text):
        matches = sorted(glob.glob(text, recursive=True))
        if not matches:
            raise InputError(f"{text}: the pattern matches no file")
        yield from matches
    elif os.path.isdir(text):
        found = 0
        for path in _walk_sorted(text, tuple(s.lower() for s in suffixes), recursive):
            found += 1
            yield path
        if not found:
            raise InputError(f"{text}: the folder holds no {', '.join(suffixes)} file")
    else:
        if not os.path.exists(text):
            raise InputError(f"{text}: no such file")
        yield text


def _walk_sorted(folder: str, suffixes: tuple[str, ...], recursive: bool) -> Iterator[str]:
    """A folder's files with one of ``suffixes``.

    In the order their whole paths sort, and with ``recursive`` its subfolders' (not those reached
    through a link), one folder listed at a time (its names only). A subfolder sorts as its name and a
    slash, as its files' paths do.
    """
    with os.scandir(folder) as listing:
        names = [entry.name + "/" if recursive and entry.is_dir(follow_symlinks=False) else entry.name
                 for entry in listing]
    names = [name for name in names if name.endswith("/") or os.path.splitext(name)[1].lower() in suffixes]
    names.sort()
    for name in names:
        path = os.path.join(folder, name.rstrip("/"))
        if name.endswith("/"):
            yield from _walk_sorted(path, suffixes, recursive)
        elif os.path.isfile(path):
            yield path


def recorded_path(path: str) -> str:
    """A source path as a run records it: absolute (GDAL virtual paths as given)."""
    return path if path.startswith("/vsi") else os.path.abspath(path)


#: Bytes of a source key: a mosaic's (4: a run has few of them), a chip's (8: a folder of a hundred
#: million chips would have a million pairs sharing 4 bytes, and so tile ids).
KEY_BYTES, CHIP_KEY_BYTES = 4, 8


def source_key(path: str, chip: bool = False) -> str:
    """A short stable key for a source path (its absolute path hashed), used in tile ids.

    8 hex digits, 16 for a chip.
    """
    size = CHIP_KEY_BYTES if chip else KEY_BYTES
    return hashlib.blake2b(recorded_path(path).encode(), digest_size=size).hexdigest()


def open_source(
    path: str,
    bands: Sequence[int] | None = None,
    allow_no_crs: bool = False,
    chip: bool = False,
) -> RasterSource:
    """Open one raster and describe it.

    Args:
        path: a file path or a GDAL path (``/vsicurl/…``, an ``http(s)://`` URL).
        bands: the 1-based bands to use (1 or 3); ``None`` for the first three, or the one.
        allow_no_crs: accept a raster without a CRS (its footprints are in pixels).
        chip: the raster is one chip of a folder of many; its key is 8 bytes, not 4
            (:func:`source_key`).

    Returns:
        The source's description: size, CRS, transform, bands, dtype and nodata.

    Raises:
        InputError: the file is missing, not a raster, empty, cut short, has no CRS (unless
            allowed), or the bands asked for are not there.
    """
    try:
        with warnings.catch_warnings():
            if allow_no_crs:  # expected for chips and pixel-coordinate rasters
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
            src = rasterio.open(path)
        with src:
            if src.count < 1:
                raise InputError(f"{path}: the file holds no raster band")
            dtype = src.dtypes[0]
            if dtype not in SUPPORTED_DTYPES:
                raise InputError(
                    f"{path}: data type {dtype} is not supported "
                    f"(use one of {', '.join(SUPPORTED_DTYPES)})"
                )
            if src.crs is None and not allow_no_crs:
                raise InputError(
                    f"{path}: the raster has no CRS; assign one (gdal_edit.py -a_srs EPSG:XXXX) "
                    "or pass `allow_no_crs` to work in pixel coordinates"
                )
            _check_readable(src, path)
            chosen = tuple(bands) if bands else choose_bands(src)
            if max(chosen) > src.count:
                raise InputError(
                    f"{path}: band {max(chosen)} asked for, but the raster has {counted(src.count, 'band')}"
                )
            mask_mode, alpha_band = file_mask(src, chosen)
            return RasterSource(
                path=path,
                width=src.width,
                height=src.height,
                count=src.count,
                dtype=dtype,
                crs=src.crs,
                transform=src.transform,
                bands=chosen,
                nodata=src.nodata,
                mask_mode=mask_mode,
                alpha_band=alpha_band,
                block_shape=tuple(src.block_shapes[chosen[0] - 1]),
                overviews=tuple(src.overviews(chosen[0])),
                fingerprint=file_fingerprint(path),
                key=source_key(path, chip),
                date_tags=date_tags(src.tags()),
            )
    except RasterioIOError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "cannot be opened"
        if os.path.exists(path) and os.path.getsize(path) == 0:
            raise InputError(f"{path}: the file is empty") from None
        raise InputError(f"{path}: not a raster GDAL can open ({first})") from None


def _check_readable(src: rasterio.io.DatasetReader, path: str) -> None:
    """Read the first and last pixel: a truncated file fails here, not half way through a run.

    A PNG or JPEG (a chip) decodes whole to give any pixel, so a local one is checked without
    decoding it, where that suffices: a PNG's chunks all whole with their checksums (Pillow's
    ``verify``), a JPEG's end-of-image marker in place. One that fails that cheap check gets the
    pixel reads, which give the error (or accept it: a valid file with trailing bytes).
    """
    if src.driver in ("PNG", "JPEG") and os.path.isfile(path) and _whole_without_decoding(path, src.driver):
        return
    try:
        src.read(1, window=Window(0, 0, 1, 1))
        src.read(1, window=Window(src.width - 1, src.height - 1, 1, 1))
    except RasterioIOError:
        raise InputError(f"{path}: the file is truncated or corrupt (its pixels cannot be read)") from None


def _whole_without_decoding(path: str, driver: str) -> bool:
    """Whether a local PNG's chunks are all whole (each checksum right, up to its end chunk).

    Or a local JPEG ends with its end-of-image marker; ``False`` when in doubt.
    """
    if driver == "JPEG":
        with open(path, "rb") as fh:
            head = fh.read(2)
            fh.seek(max(0, os.path.getsize(path) - 64))
            tail = fh.read()
        return head == b"\xff\xd8" and tail.rstrip(b"\x00").endswith(b"\xff\xd9")
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.verify()  # walks a PNG's chunks and checks their CRCs, without decoding
    except Exception:
        return False
    return True


def open_lazy(source: RasterSource, tile_size: int = 256):
    """The source's selected bands as a lazy, Dask-chunked ``xarray.DataArray``.

    Chunks are a whole number of tiles and of the file's internal blocks, so reading a tile
    touches one chunk. Nothing is read until ``.compute()`` or ``.values``.

    Args:
        source: the raster (see :func:`open_source`).
        tile_size: the tile's side in pixels, which chunks are a multiple of.

    Returns:
        A (band, y, x) ``xarray.DataArray`` opened by rioxarray.
    """
    require_extra("rioxarray", "xarray", "open_lazy (a Dask-chunked xarray.DataArray)")
    import rioxarray  # noqa: F401  (registers the .rio accessor)
    import xarray as xr

    chunk = _aligned_chunk(tile_size, source.block_shape)
    arr = rioxarray.open_rasterio(
        source.path, chunks={"band": -1, "y": chunk[0], "x": chunk[1]}, lock=False, masked=False
    )
    assert isinstance(arr, xr.DataArray)
    return arr.sel(band=list(source.bands))


def _aligned_chunk(tile_size: int, block_shape: tuple[int, int], target: int = 2048) -> tuple[int, int]:
    """A chunk shape near ``target`` pixels that is a multiple of the tile size and the block."""
    out = []
    for block in block_shape:
        step = int(np.lcm(tile_size, block)) if block > 1 else tile_size
        if step > 4 * target:
            step = tile_size
        out.append(max(step, (target // step) * step))
    return out[0], out[1]
