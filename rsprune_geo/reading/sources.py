"""Sources: find rasters (GeoTIFF, COG, VRT, chips, any GDAL path), open and describe them."""

from __future__ import annotations

import glob
import hashlib
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from ..errors import InputError, param, require_extra
from ..files import file_fingerprint
from .pixels import choose_bands, read_errors

#: dtypes the information filter knows how to read.
SUPPORTED_DTYPES = ("uint8", "uint16", "int16", "uint32", "int32", "float32", "float64")

_GLOB_CHARS = set("*?[")


@dataclass(frozen=True, slots=True)
class RasterSource:
    """What the pipeline needs to know of one raster, without holding it open.

    ``bands`` are the 1-based band indexes the pipeline reads (the RGB of a multispectral file),
    ``mask_mode`` says where validity comes from: ``"nodata"`` (the nodata value), ``"alpha"``
    (an alpha band, index in ``alpha_band``), ``"mask"`` (a GDAL per-dataset mask) or
    ``"none"`` (every pixel valid; non-finite floats are always invalid).
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
    mask_mode: str
    alpha_band: int | None
    block_shape: tuple[int, int]
    overviews: tuple[int, ...]
    fingerprint: str
    key: str = field(default="")
    date_tags: tuple[tuple[str, str], ...] = ()

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return self.height, self.width

    @property
    def name(self) -> str:
        """The file name, for messages."""
        return os.path.basename(self.path) or self.path

    def open(self) -> rasterio.io.DatasetReader:
        """Open the raster for reading (the caller closes it); a file gone or a server that no
        longer answers is an :class:`InputError` naming it."""
        with read_errors(self.path), warnings.catch_warnings():
            if self.crs is None:
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(self.path)

    def window_bounds(self, window: Window) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) of a pixel window in the source CRS."""
        return rasterio.windows.bounds(window, self.transform)

    @property
    def pixel_size_m(self) -> float | None:
        """Ground sample distance in metres (mean of the pixel's sides), or ``None`` without a
        CRS. Geographic CRSs are converted at the raster's centre latitude."""
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


def expand_paths(inputs: Iterable[str | os.PathLike], suffixes: Sequence[str] = RASTER_SUFFIXES,
                 recursive: bool = False) -> list[str]:
    """Expand globs and folders into a sorted, de-duplicated list of absolute raster paths.

    A folder contributes its files with one of ``suffixes`` (rasters by default; chip folders
    add PNG and JPEG), and with ``recursive`` those of its subfolders too (chips laid out a
    folder per class); GDAL virtual paths (``/vsicurl/...``) pass through unchanged.
    """
    paths: list[str] = []
    for item in inputs:
        text = os.fspath(item)
        if text.startswith("/vsi"):
            paths.append(text)
        elif any(ch in _GLOB_CHARS for ch in text):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise InputError(f"{text}: the pattern matches no file")
            paths.extend(matches)
        elif os.path.isdir(text):
            files = Path(text).rglob("*") if recursive else Path(text).iterdir()
            found = sorted(str(p) for p in files if p.suffix.lower() in suffixes and p.is_file())
            if not found:
                raise InputError(f"{text}: the folder holds no {', '.join(suffixes)} file")
            paths.extend(found)
        else:
            if not os.path.exists(text):
                raise InputError(f"{text}: no such file")
            paths.append(text)
    seen: set[str] = set()
    unique = []
    for p in paths:
        key = recorded_path(p)
        if key not in seen:  # absolute, so a run's record stays valid from any folder
            seen.add(key)
            unique.append(key)
    if not unique:
        raise InputError("no input raster given")
    return unique


def recorded_path(path: str) -> str:
    """A source path as a run records it: absolute (GDAL virtual paths as given)."""
    return path if path.startswith("/vsi") else os.path.abspath(path)


def source_key(path: str) -> str:
    """A short stable key for a source path (its absolute path hashed), used in tile ids."""
    return hashlib.blake2b(recorded_path(path).encode(), digest_size=4).hexdigest()


def open_source(
    path: str,
    bands: Sequence[int] | None = None,
    allow_no_crs: bool = False,
) -> RasterSource:
    """Open one raster and describe it; raise :class:`InputError` with a clear line if unusable."""
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
                    f"{path}: band {max(chosen)} asked for, but the raster has {src.count} band(s)"
                )
            interp = list(src.colorinterp)
            alpha_band = interp.index(ColorInterp.alpha) + 1 if ColorInterp.alpha in interp else None
            flags = src.mask_flag_enums[chosen[0] - 1]
            if alpha_band is not None and MaskFlags.alpha in flags:
                mask_mode = "alpha"
            elif MaskFlags.nodata in flags and src.nodata is not None:
                mask_mode = "nodata"
            elif MaskFlags.per_dataset in flags:
                mask_mode = "mask"
            else:
                mask_mode = "none"
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
                key=source_key(path),
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
    pixel reads, which give the error (or accept it: a valid file with trailing bytes)."""
    if src.driver in ("PNG", "JPEG") and os.path.isfile(path) and _whole_without_decoding(path, src.driver):
        return
    try:
        src.read(1, window=Window(0, 0, 1, 1))
        src.read(1, window=Window(src.width - 1, src.height - 1, 1, 1))
    except RasterioIOError:
        raise InputError(f"{path}: the file is truncated or corrupt (its pixels cannot be read)") from None


def _whole_without_decoding(path: str, driver: str) -> bool:
    """Whether a local PNG's chunks are all whole (each checksum right, up to its end chunk), or
    a local JPEG ends with its end-of-image marker; ``False`` when in doubt."""
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


def open_sources(
    inputs: Iterable[str | os.PathLike],
    bands: Sequence[int] | None = None,
    allow_no_crs: bool = False,
    chips: bool = False,
) -> list[RasterSource]:
    """Expand ``inputs`` (paths, globs, folders) and open each raster as a :class:`RasterSource`.

    ``chips``: inputs are image chips (folders of PNG/JPEG/TIFF too), which need no CRS. Any
    unusable file is an error; :func:`scan_sources` can skip them instead.
    """
    return scan_sources(inputs, bands, allow_no_crs, chips, strict=True)[0]


def scan_sources(
    inputs: Iterable[str | os.PathLike],
    bands: Sequence[int] | None = None,
    allow_no_crs: bool = False,
    chips: bool = False,
    strict: bool = False,
) -> tuple[list[RasterSource], list[dict]]:
    """Like :func:`open_sources`, but in a multi-file run an unusable file (not a raster, empty,
    truncated, no CRS, too few bands) is skipped and reported, unless ``strict``.

    Returns ``(sources, skipped)`` where ``skipped`` holds ``{"path", "error"}`` records. A run
    of one file, or one where every file is unusable, raises the (first) error.
    """
    paths = expand_paths(inputs, CHIP_SUFFIXES if chips else RASTER_SUFFIXES, recursive=chips)
    sources, skipped, first_error = [], [], None
    for p in paths:
        try:
            sources.append(open_source(p, bands, allow_no_crs or chips))
        except InputError as exc:
            if strict or len(paths) == 1:
                raise
            first_error = first_error or exc
            skipped.append({"path": p, "error": str(exc)})
    if not sources:
        raise first_error or InputError("no input raster given")
    sources = _shared_values(sources)
    with_crs = [s for s in sources if s.crs is not None]
    if with_crs and len(with_crs) != len(sources):
        missing = next(s for s in sources if s.crs is None)
        raise InputError(
            f"{missing.path}: the raster has no CRS while others have one; "
            "footprints cannot be put in one coordinate system"
        )
    counts = {len(s.bands) for s in sources}
    if len(counts) > 1:
        raise InputError(
            "inputs mix one-band and three-band selections; pass `bands` to choose the same "
            "number of bands for every file"
        )
    return sources, skipped


#: The fields of consecutive sources that are often equal (a folder of chips), held once.
_SHAREABLE = ("dtype", "crs", "transform", "bands", "mask_mode", "block_shape", "overviews", "date_tags")


def _shared_values(sources: list[RasterSource]) -> list[RasterSource]:
    """The sources, each value equal to the previous source's (its CRS, transform, bands…) held
    as the same object: a folder of a million chips holds one of each, not a million."""
    out = sources[:1]
    for source in sources[1:]:
        previous = out[-1]
        same = {name: getattr(previous, name) for name in _SHAREABLE
                if getattr(previous, name) is not getattr(source, name)
                and getattr(previous, name) == getattr(source, name)}
        out.append(replace(source, **same) if same else source)
    return out


def open_lazy(source: RasterSource, tile_size: int = 256):
    """The source's selected bands as a lazy, Dask-chunked ``xarray.DataArray`` (rioxarray).

    Chunks are a whole number of tiles and of the file's internal blocks, so reading a tile
    touches one chunk; nothing is read until ``.compute()`` or ``.values``.
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


#: GDAL metadata items that hold an acquisition date, in the order they are tried.
DATE_TAGS = ("ACQUISITIONDATE", "ACQUISITION_DATE", "DATE_ACQUIRED", "SENSING_TIME", "DATATAKE_SENSING_START",
             "TIFFTAG_DATETIME")


def date_tags(tags: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """The items of GDAL metadata ``tags`` that may hold an acquisition date (:data:`DATE_TAGS`),
    names upper-cased, in :data:`DATE_TAGS` order."""
    upper = {k.upper(): v for k, v in tags.items()}
    return tuple((name, upper[name]) for name in DATE_TAGS if name in upper)


def acquisition_date(path: str, pattern: str | None = None,
                     tags: tuple[tuple[str, str], ...] | None = None) -> tuple[np.datetime64, str]:
    r"""When the raster at ``path`` was acquired, and where that was read: ``(date, how)``.

    With ``pattern`` (a regular expression with a ``date`` group, else its first group), the file
    name says it (``_(?P<date>\d{8})\.tif$`` for NAIP's ``…_20090818.tif``). Else GDAL metadata
    (:data:`DATE_TAGS`, e.g. ``TIFFTAG_DATETIME`` ``2019:07:14 10:30:00``; ``tags``: those already
    read, as :attr:`RasterSource.date_tags`, else the file is opened), else a STAC item beside
    the file (``NAME.json`` or ``NAME.tif.json``, ``properties.datetime``). ``(NaT, "")`` when none
    says it.
    """
    import json
    import re

    import pandas as pd

    def parse(text: str) -> np.datetime64:
        text = text.strip()
        if re.fullmatch(r"\d{4}:\d\d:\d\d( .*)?", text):  # TIFF's "YYYY:MM:DD HH:MM:SS"
            text = text[:10].replace(":", "-") + text[10:]
        stamp = pd.to_datetime(text, errors="coerce", utc=True)
        return np.datetime64("NaT", "ns") if pd.isna(stamp) else np.datetime64(stamp.tz_convert(None), "ns")

    if pattern:
        try:
            match = re.search(pattern, os.path.basename(path))
        except re.error as exc:
            raise InputError(f"{param('date_pattern')} {pattern!r}: not a regular expression ({exc})") from None
        if match:
            text = match.groupdict().get("date") or (match.group(1) if match.groups() else match.group(0))
            found = parse(text)
            if not np.isnat(found):
                return found, "file name"
    local = not path.startswith("/vsi") and "://" not in path
    if tags is None and local:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with rasterio.open(path) as src:
                    tags = date_tags(src.tags())
        except RasterioIOError:
            tags = ()
    for name, text in tags or ():
        found = parse(text)
        if not np.isnat(found):
            return found, f"metadata {name}"
    if local:
        stem = os.path.splitext(path)[0]
        for item in (stem + ".json", path + ".json"):
            if os.path.isfile(item):
                try:
                    properties = json.loads(Path(item).read_text()).get("properties", {})
                except (ValueError, AttributeError):
                    continue
                text = properties.get("datetime") or properties.get("start_datetime")
                if isinstance(text, str):
                    found = parse(text)
                    if not np.isnat(found):
                        return found, "STAC item"
    return np.datetime64("NaT", "ns"), ""
