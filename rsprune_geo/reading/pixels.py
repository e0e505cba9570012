"""Reading and scaling pixels: the one layer that touches raster and image data.

Stage 1, encoding, chip export, the report, the map and the prior bank all read through here:
windows (with validity, past the raster's edge too), images at a given output size (from
overviews when smaller), the band choice, the percentile stretch to grey levels, and file
fingerprints. Everything above it works on NumPy arrays.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

import numpy as np
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.windows import Window

from ..errors import InputError
from .remote import read_errors

if TYPE_CHECKING:  # pragma: no cover
    import rasterio.io
    from rasterio.crs import CRS


class MaskMode(StrEnum):
    """Where a raster's validity comes from.

    Its nodata value, an alpha band, a GDAL mask, or none (every pixel valid; non-finite floats are
    always invalid).
    """

    NODATA = "nodata"
    ALPHA = "alpha"
    MASK = "mask"
    NONE = "none"
    #: As the file says, looked up when it is opened: a raster planned from its STAC item's metadata.
    FILE = "file"


def file_mask(src: rasterio.io.DatasetReader, bands: Sequence[int]) -> tuple[MaskMode, int | None]:
    """Where an open raster's validity comes from, for ``bands``: the mode and the alpha band's index.

    An alpha band, else the nodata value, else a GDAL per-dataset mask, else none.
    """
    interp = list(src.colorinterp)
    alpha_band = interp.index(ColorInterp.alpha) + 1 if ColorInterp.alpha in interp else None
    flags = src.mask_flag_enums[bands[0] - 1]
    if alpha_band is not None and MaskFlags.alpha in flags:
        return MaskMode.ALPHA, alpha_band
    if MaskFlags.nodata in flags and src.nodata is not None:
        return MaskMode.NODATA, alpha_band
    if MaskFlags.per_dataset in flags:
        return MaskMode.MASK, alpha_band
    return MaskMode.NONE, alpha_band


class PixelSource(Protocol):
    """What the pixel layer reads of a raster. :class:`~rsprune_geo.reading.sources.RasterSource` fits it.

    The pixel layer sits below the sources and does not import them.
    """

    @property
    def path(self) -> str:
        """The raster's path or URL."""

    @property
    def width(self) -> int:
        """Width in pixels."""

    @property
    def height(self) -> int:
        """Height in pixels."""

    @property
    def dtype(self) -> str:
        """The bands' data type."""

    @property
    def crs(self) -> CRS | None:
        """The CRS, if any."""

    @property
    def bands(self) -> tuple[int, ...]:
        """The 1-based bands read."""

    @property
    def nodata(self) -> float | None:
        """The nodata value, if any."""

    @property
    def mask_mode(self) -> MaskMode:
        """Where validity comes from."""

    @property
    def alpha_band(self) -> int | None:
        """The alpha band's index, if any."""

    def open(self) -> rasterio.io.DatasetReader:
        """The raster opened for reading."""
        ...


#: Percentiles of the robust stretch of non-uint8 data to 0–255.
DEFAULT_PERCENTILES = (2.0, 98.0)

def choose_bands(src: rasterio.io.DatasetReader) -> tuple[int, ...]:
    """The bands read as colour when none are asked for.

    The ones tagged red, green and blue; B4, B3, B2 of a 13-band Sentinel-2 file; else the first three
    non-alpha bands; else one grey band.
    """
    interp = list(src.colorinterp)
    rgb = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
    if all(ci in interp for ci in rgb):
        return tuple(interp.index(ci) + 1 for ci in rgb)
    if src.count == 13:
        return (4, 3, 2)  # Sentinel-2 L1C band order (EuroSAT)
    data_bands = [i + 1 for i, ci in enumerate(interp) if ci != ColorInterp.alpha]
    if len(data_bands) >= 3:
        return tuple(data_bands[:3])
    return (data_bands[0] if data_bands else 1,)


def window_inside(window: Window, width: int, height: int) -> bool:
    """Whether ``window`` lies wholly inside a raster of ``width`` × ``height`` pixels."""
    return (window.row_off >= 0 and window.col_off >= 0
            and window.row_off + window.height <= height and window.col_off + window.width <= width)


@dataclass(frozen=True)
class Scaling:
    """How values become 0–255 grey levels: per band ``low`` → 0, ``high`` → 255.

    Attributes:
        low: each band's value that maps to 0; ``None`` for uint8 data, used as they are.
        high: each band's value that maps to 255; ``None`` for uint8 data.
    """

    low: tuple[float, ...] | None = None
    high: tuple[float, ...] | None = None

    @property
    def identity(self) -> bool:
        """Whether values are used as they are (uint8)."""
        return self.low is None

    @classmethod
    def from_values(cls, values: Sequence[np.ndarray],
                    percentiles: tuple[float, float] = DEFAULT_PERCENTILES) -> Scaling:
        """The robust stretch of each band's ``values`` between two percentiles."""
        lows, highs = [], []
        for band in values:
            band = np.asarray(band)
            band = band[np.isfinite(band)] if band.dtype.kind == "f" else band
            if band.size == 0:
                lo, hi = 0.0, 1.0
            else:
                lo, hi = (float(v) for v in np.percentile(band, percentiles))
            if not hi > lo:
                hi = lo + 1.0
            lows.append(lo)
            highs.append(hi)
        return cls(tuple(lows), tuple(highs))

    def to_uint8(self, data: np.ndarray) -> np.ndarray:
        """(bands, H, W) → (bands, H, W) uint8: as is when identity, else stretched and clipped."""
        if self.identity:
            return data.astype(np.uint8, copy=False)
        assert self.low is not None and self.high is not None
        out = np.empty(data.shape, dtype=np.uint8)
        for i, band in enumerate(data):
            lo, hi = self.low[i], self.high[i]
            scaled = (band.astype(np.float32) - lo) * np.float32(255.0 / (hi - lo))
            out[i] = np.clip(np.nan_to_num(scaled), 0, 255).astype(np.uint8)
        return out


#: The scaling of uint8 data (values used as they are), one object for every source that has it.
IDENTITY = Scaling()


def source_scaling(source: PixelSource, percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
                   max_size: int = 1024) -> Scaling:
    """Robust per-band scaling of a source from its valid pixels' percentiles.

    Reads the source once at reduced resolution (overviews when the file has them), so the cost
    does not grow with the mosaic's size.

    Args:
        source: the raster.
        percentiles: the low and high percentiles that map to 0 and 255.
        max_size: the longest side, in pixels, the source is read at.

    Returns:
        The per-band stretch; uint8 sources are left as they are (an empty :class:`Scaling`).
    """
    if source.dtype == "uint8":
        return IDENTITY
    return Scaling.from_values(_valid_values(source, max_size), percentiles)


def run_scaling(sources: Sequence[PixelSource], percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
                max_size: int = 1024) -> list[Scaling]:
    """One robust scaling shared by all non-uint8 sources of a run (pooled percentiles).

    Right for a scene cut into several files (a mostly-sea file is then not stretched into
    false contrast); per-source scaling (:func:`source_scaling`) suits unrelated scenes.
    """
    pooled = [s for s in sources if s.dtype != "uint8"]
    if not pooled:
        return [IDENTITY] * len(sources)
    samples = [_valid_values(s, max_size) for s in pooled]
    shared = Scaling.from_values(
        [np.concatenate([sample[i] for sample in samples]) for i in range(len(samples[0]))], percentiles)
    return [IDENTITY if s.dtype == "uint8" else shared for s in sources]


def _valid_values(source: PixelSource, max_size: int) -> list[np.ndarray]:
    data, valid = read_reduced(source, max_size)
    return [band[valid] for band in data]


def to_rgb8(data: np.ndarray, scaling: Scaling = Scaling()) -> np.ndarray:
    """(bands, H, W) → (H, W, 3) uint8 RGB by ``scaling``; one band is repeated as grey."""
    out = scaling.to_uint8(data)
    if out.shape[0] == 1:
        out = np.repeat(out, 3, axis=0)
    return np.ascontiguousarray(out.transpose(1, 2, 0))


def read_window(source: PixelSource, window: Window,
                dataset: rasterio.io.DatasetReader | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read the source's bands in ``window`` with a validity mask.

    The window may reach past the raster's edge (padded tiles): pixels outside are zero and
    invalid.

    Args:
        source: the raster (see :func:`open_source`).
        window: the pixel window to read.
        dataset: an open dataset of the source to read from; ``None`` opens the file.

    Returns:
        ``(data, valid)``: ``data`` shaped (bands, rows, cols) in the file's dtype, and ``valid``
        a boolean (rows, cols) array.

    Raises:
        InputError: the file cannot be read (cut short, a connection dropped for good).
    """
    own = dataset is None
    src = source.open() if own else dataset
    assert src is not None
    try:
        full = Window(0, 0, source.width, source.height)
        inner = window.intersection(full) if _overlaps(window, full) else None
        rows, cols = int(window.height), int(window.width)
        data = np.zeros((len(source.bands), rows, cols), dtype=source.dtype)
        valid = np.zeros((rows, cols), dtype=bool)
        if inner is None:
            return data, valid
        r0 = int(inner.row_off - window.row_off)
        c0 = int(inner.col_off - window.col_off)
        h, w = int(inner.height), int(inner.width)
        with read_errors(source.path):
            block = src.read(source.bands, window=inner)
        data[:, r0 : r0 + h, c0 : c0 + w] = block
        valid[r0 : r0 + h, c0 : c0 + w] = valid_mask(source, src, block, window=inner)
        return data, valid
    finally:
        if own:
            src.close()


def read_plain(source: PixelSource, window: Window) -> np.ndarray:
    """The source's bands in a window inside the raster, without a validity mask."""
    with source.open() as src, read_errors(source.path):
        return src.read(source.bands, window=window)


def _overlaps(a: Window, b: Window) -> bool:
    return (a.col_off < b.col_off + b.width and b.col_off < a.col_off + a.width
            and a.row_off < b.row_off + b.height and b.row_off < a.row_off + a.height)


def read_reduced(source: PixelSource, max_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """The selected bands and validity at reduced resolution (longest side <= ``max_size``).

    Read from overviews when the file has them: ``(data, valid)``.
    """
    factor = max(1, int(np.ceil(max(source.width, source.height) / max_size)))
    shape = (max(1, source.height // factor), max(1, source.width // factor))
    with source.open() as src:
        data = src.read(source.bands, out_shape=(len(source.bands), *shape))
        return data, valid_mask(source, src, data, out_shape=shape)


def valid_mask(source: PixelSource, src: rasterio.io.DatasetReader, block: np.ndarray, **where) -> np.ndarray:
    """Valid pixels of a block: any band valid (GDAL's dataset-mask rule), finite floats only.

    ``where`` locates the block for the alpha band or mask: ``window=`` or ``out_shape=``.
    """
    valid: np.ndarray | None
    mode, alpha_band, nodata = source.mask_mode, source.alpha_band, source.nodata
    if mode == MaskMode.FILE:
        (mode, alpha_band), nodata = file_mask(src, source.bands), src.nodata
    if mode == MaskMode.NODATA:
        assert nodata is not None
        if np.isnan(nodata):
            valid = ~np.isnan(block).all(axis=0)
        else:
            valid = (block != np.array(nodata, dtype=block.dtype)).any(axis=0)
    elif mode == MaskMode.ALPHA:
        valid = src.read(alpha_band, **where) > 0
    elif mode == MaskMode.MASK:
        valid = src.read_masks(source.bands[0], **where) > 0
    else:
        valid = None
    if block.dtype.kind == "f":
        finite = np.isfinite(block).all(axis=0)
        valid = finite if valid is None else (valid & finite)
    if valid is None:
        valid = np.ones(block.shape[1:], dtype=bool)
    return valid


def read_rgb(source: PixelSource, windows: Sequence[Window], size: int, scaling: Scaling,
             dataset: rasterio.io.DatasetReader | None = None) -> np.ndarray:
    """The windows' pixels resampled to ``size``² as uint8 RGB, (N, size, size, 3).

    GDAL reads from overviews when ``size`` is smaller than the window, so a 256-px tile read at
    64 px costs a quarter or less of the data. Windows reaching past the raster (padded tiles)
    read as 0 outside. ``dataset``: the source already open (GDAL keeps its decoded blocks
    between batches).
    """
    images = np.empty((len(windows), size, size, 3), dtype=np.uint8)
    with contextlib.nullcontext(dataset) if dataset is not None else source.open() as src, read_errors(source.path):
        for k, window in enumerate(windows):
            data = src.read(source.bands, window=window, out_shape=(len(source.bands), size, size),
                            resampling=Resampling.bilinear,
                            boundless=not window_inside(window, source.width, source.height), fill_value=0)
            images[k] = to_rgb8(data, scaling)
    return images


def read_chip(source: PixelSource, window: Window, scaling: Scaling,
              dataset: rasterio.io.DatasetReader | None = None) -> np.ndarray:
    """One window at full resolution as uint8 RGB (H, W, 3); 0 outside the raster.

    ``dataset``: the source already open (many chips, one open).
    """
    with contextlib.nullcontext(dataset) if dataset is not None else source.open() as src, read_errors(source.path):
        data = src.read(source.bands, window=window,
                        boundless=not window_inside(window, source.width, source.height), fill_value=0)
    return to_rgb8(data, scaling)


def read_all_bands(src: rasterio.io.DatasetReader, window: Window) -> np.ndarray:
    """Every band of an open dataset in ``window`` at full resolution, in the file's dtype.

    Nodata (else 0) past the raster's edge.
    """
    return src.read(window=window, boundless=not window_inside(window, src.width, src.height),
                    fill_value=src.nodata or 0)


def read_preview(source: PixelSource, scaling: Scaling, max_size: int = 1600,
                 crs=None) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The source's bands as an RGBA float image for a map.

    The longest side is at most ``max_size`` (overviews when the file has them), stretched by the run's
    ``scaling`` and warped to ``crs`` when it differs. Returned with its bounds (left, bottom, right,
    top); nodata is transparent.
    """
    from rasterio.vrt import WarpedVRT

    with source.open() as opened:
        src = WarpedVRT(opened, crs=crs) if crs is not None and source.crs is not None and source.crs != crs \
            else opened
        factor = max(1, int(np.ceil(max(src.width, src.height) / max_size)))
        shape = (len(source.bands), max(1, src.height // factor), max(1, src.width // factor))
        data = src.read(list(source.bands), out_shape=shape, masked=True)
        bounds = tuple(src.bounds)
    if scaling.identity and data.dtype != np.uint8:
        scaling = Scaling.from_values([band.compressed() for band in data])
    rgb = to_rgb8(data.filled(0), scaling).astype(np.float32) / 255.0
    alpha = (~np.ma.getmaskarray(data).all(axis=0)).astype(np.float32)
    return np.dstack([rgb, alpha]), (bounds[0], bounds[1], bounds[2], bounds[3])


def read_image(path: str, size: tuple[int, int] | None = None, scale: float = 1.0,
               min_side: int = 32) -> np.ndarray:
    """One image file as uint8 RGB (H, W, 3).

    At ``size`` (width, height) when given, else its own size times ``scale`` (bilinear, the shorter
    side not below ``min_side``).

    PNG/JPEG/RGB TIFF through Pillow; other TIFFs (uint16, several bands, e.g. EuroSAT's
    Sentinel-2 GeoTIFFs) through rasterio with :func:`choose_bands`, stretched per image
    between the 2nd and 98th percentiles. A file cut short or corrupt is an
    :class:`InputError`, never a partly black image.
    """
    from PIL import Image

    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
            return resized(rgb, size or scaled_size(rgb.size, scale, min_side))
    except OSError as exc:
        if not isinstance(exc, Image.UnidentifiedImageError) and _damaged(str(exc)):
            raise InputError(f"{path}: the image is truncated or corrupt ({str(exc).splitlines()[0]})") from None
        return _read_image_with_rasterio(path, size, scale, min_side)


def _damaged(message: str) -> bool:
    """Whether a Pillow error says the file itself is damaged (not merely a format it lacks)."""
    return any(word in message.lower() for word in ("truncated", "broken", "corrupt", "premature", "crc"))


def read_images(paths: Sequence[str], size: int) -> np.ndarray:
    """Image files as uint8 RGB, resized.

    Args:
        paths: the image files.
        size: the side every image is resized to.

    Returns:
        An (N, size, size, 3) uint8 array (see :func:`read_image`).

    Raises:
        InputError: a file is cut short or corrupt.
    """
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for k, path in enumerate(paths):
        out[k] = read_image(path, (size, size))
    return out


def resized(rgb, target: tuple[int, int]) -> np.ndarray:
    """A Pillow RGB image at ``target`` (width, height), bilinear, as :func:`read_image` resizes."""
    from PIL import Image

    if rgb.size != tuple(target):
        rgb = rgb.resize(tuple(target), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.asarray(rgb)


def scaled_size(size: tuple[int, int], scale: float, min_side: int = 32) -> tuple[int, int]:
    """The (width, height) :func:`read_image` brings an image of ``size`` to at ``scale``."""
    if scale >= 1.0:
        return size
    factor = max(scale, min_side / max(min(size), 1))
    return (max(1, round(size[0] * min(factor, 1.0))), max(1, round(size[1] * min(factor, 1.0))))


def _read_image_with_rasterio(path: str, size: tuple[int, int] | None, scale: float, min_side: int) -> np.ndarray:
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # image files rarely have a CRS
            with rasterio.open(path) as src:
                bands = list(choose_bands(src))
                if len(bands) == 1:
                    bands = bands * 3
                width, height = size or scaled_size((src.width, src.height), scale, min_side)
                data = src.read(bands, out_shape=(3, height, width), resampling=Resampling.bilinear)
                dtype = src.dtypes[0]
    except Exception as exc:
        raise InputError(f"{path}: cannot read the image ({str(exc).splitlines()[0]})") from None
    if dtype == "uint8":
        return np.ascontiguousarray(data.transpose(1, 2, 0))
    lo, hi = np.percentile(data.astype(np.float32), DEFAULT_PERCENTILES)
    return to_rgb8(data, Scaling((float(lo),) * 3, (float(max(hi, lo + 1e-6)),) * 3))
