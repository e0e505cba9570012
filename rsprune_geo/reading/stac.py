"""STAC catalogues as a run's input.

A Catalog or Collection (JSON, its items linked), an ItemCollection (GeoJSON), a single Item, or a
stac-geoparquet file of items, local or over HTTP.

Each item gives one raster: its ``asset`` (``--asset KEY``; by default ``visual`` where present,
else its ``red``, ``green`` and ``blue`` assets stacked in a small VRT, as Sentinel-2 L2A keeps
its bands in separate COGs). Relative hrefs resolve against the file that holds them; remote ones
are read through GDAL's ``/vsicurl/``. An item's ``datetime`` dates its tiles, and the run's record
keeps each input's item id and href, which the STAC export links back to.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError

#: What a catalogue's items may be read from.
STAC_SUFFIXES = (".json", ".geojson", ".parquet")
#: The asset an item gives by default, else these three stacked.
VISUAL = "visual"
RGB_KEYS = ("red", "green", "blue")
#: Links a catalogue is walked through.
CHILD_RELS = ("child", "item")


@dataclass(frozen=True)
class ItemGrid:
    """What an item's metadata says of its raster, enough to plan its tiles without opening it.

    From the projection extension (``proj:shape``, ``proj:transform``, ``proj:code`` or
    ``proj:epsg``) and, when given, the raster and eo extensions (bands, data type, nodata).

    Attributes:
        width: columns of pixels.
        height: rows of pixels.
        transform: the affine coefficients ``(a, b, c, d, e, f)``.
        crs: the CRS as text (``EPSG:32633``, or WKT).
        count: bands, when the metadata says.
        dtype: the bands' data type, when the metadata says.
        nodata: the nodata value, when the metadata says.
    """

    width: int
    height: int
    transform: tuple[float, ...]
    crs: str
    count: int | None = None
    dtype: str | None = None
    nodata: float | None = None

    @property
    def complete(self) -> bool:
        """Whether it says enough to plan the item's tiles: its bands and data type too."""
        return self.count is not None and self.dtype is not None


class StacPath(str):
    """A raster path that came from a STAC item.

    The path, with the item's ``item_id``, ``datetime`` (ISO text, or ``""``), ``item_href`` (where
    the item itself is) and ``grid`` (what its metadata says of the raster, or ``None``).
    """

    item_id: str
    datetime: str
    item_href: str
    grid: ItemGrid | None

    def __new__(cls, path: str, item_id: str, datetime: str, item_href: str, grid: ItemGrid | None = None
                ) -> StacPath:
        """The path, carrying its item."""
        made = super().__new__(cls, path)
        made.item_id, made.datetime, made.item_href, made.grid = item_id, datetime, item_href, grid
        return made

    def __reduce__(self):
        return StacPath, (str(self), self.item_id, self.datetime, self.item_href, self.grid)


@dataclass(frozen=True)
class StacInput:
    """One STAC input to expand: where it is and the asset asked for."""

    href: str
    asset: str | None = None


def is_remote(href: str) -> bool:
    """Whether ``href`` is an http(s) URL."""
    return href.startswith(("http://", "https://"))


def looks_like_stac(text: str) -> bool:
    """Whether an input names a STAC catalogue, item collection, item or stac-geoparquet file.

    Read only as far as its first bytes, or its JSON's ``type``/``stac_version``.
    """
    lower = text.lower().split("?")[0]
    if not lower.endswith(STAC_SUFFIXES) or text.startswith("/vsi"):
        return False
    if lower.endswith(".parquet"):
        return is_remote(text) or os.path.isfile(text) and _is_stac_parquet(text)
    if not is_remote(text) and not os.path.isfile(text):
        return False
    try:
        data = _read_json(text)
    except InputError:
        return False
    return isinstance(data, dict) and ("stac_version" in data or _is_item_collection(data))


def stac_paths(text: str, asset: str | None = None, vrt_folder: str | os.PathLike | None = None,
               stack: bool = True) -> Iterator[StacPath]:
    """The raster of every item a STAC input holds, in order, as :class:`StacPath` s.

    Args:
        text: the catalogue, collection, item collection, item or stac-geoparquet file (a path or
            an http(s) URL).
        asset: the asset key to read; ``None``: ``visual``, else ``red``/``green``/``blue`` stacked.
        vrt_folder: where stacked bands' VRTs are written (default: the cache's ``stac-vrt/``).
        stack: write the VRT of an item's red, green and blue assets (opening them); ``False``
            gives the red asset's path, its grid counting three bands (a plan opens nothing).

    Raises:
        InputError: no item; an item without the asset (naming the ones it has); a broken href.

    """
    found = 0
    for item, base in _items(text):
        found += 1
        yield _item_path(item, base, asset, vrt_folder, stack)
    if not found:
        raise InputError(f"{text}: no STAC item in it (a Catalog or Collection with item links, an "
                         "ItemCollection, an Item or a stac-geoparquet file of items)")


def _items(text: str) -> Iterator[tuple[dict, str]]:
    """Every item under ``text`` with the href its own relative hrefs resolve against."""
    if text.lower().split("?")[0].endswith(".parquet"):
        yield from ((item, text) for item in _parquet_items(text))
        return
    seen: set[str] = set()
    pending = [_absolute(text)]
    while pending:
        href = pending.pop(0)
        if href in seen:
            continue
        seen.add(href)
        data = _read_json(href)
        kind = data.get("type") if isinstance(data, dict) else None
        if kind == "Feature":
            yield data, href
        elif kind == "FeatureCollection":
            yield from ((feature, href) for feature in data.get("features", []))
        elif kind in ("Catalog", "Collection"):
            links = [link for link in data.get("links", []) if link.get("rel") in CHILD_RELS and link.get("href")]
            pending[:0] = [_resolve(link["href"], href) for link in links]  # depth first, in the links' order
        else:
            raise InputError(f"{href}: not a STAC Catalog, Collection, ItemCollection or Item (type {kind!r})")


def _item_path(item: dict, base: str, asset: str | None, vrt_folder: str | os.PathLike | None,
               stack: bool = True) -> StacPath:
    """The raster path of one item (an asset's href, or a VRT of its red, green and blue)."""
    item_id = str(item.get("id", ""))
    assets = item.get("assets") or {}
    properties = item.get("properties") or {}
    when = str(properties.get("datetime") or properties.get("start_datetime") or "")
    item_href = next((link["href"] for link in item.get("links", []) if link.get("rel") == "self"), base)
    item_href = _resolve(item_href, base)
    if asset is not None or VISUAL in assets:
        key = asset or VISUAL
        if key not in assets:
            has = ", ".join(sorted(assets)) or "none"
            raise InputError(f"{base}: item {item_id} has no asset {key!r} (it has {has}); choose one with `asset`")
        grid = item_grid(properties, assets[key])
        return StacPath(_gdal_path(_resolve(assets[key]["href"], base), item_id), item_id, when, item_href, grid)
    if all(k in assets for k in RGB_KEYS):
        bands = [_gdal_path(_resolve(assets[k]["href"], base), item_id) for k in RGB_KEYS]
        grid = item_grid(properties, assets[RGB_KEYS[0]], count=len(RGB_KEYS))
        if not stack:
            return StacPath(bands[0], item_id, when, item_href, grid)
        return StacPath(str(_stacked_vrt(bands, item_id, vrt_folder)), item_id, when, item_href, grid)
    raise InputError(f"{base}: item {item_id} has neither a 'visual' asset nor 'red', 'green' and 'blue' "
                     f"(it has {', '.join(sorted(assets)) or 'none'}); choose one with `asset`")


def item_grid(properties: dict, asset: dict, count: int | None = None) -> ItemGrid | None:
    """What an item (and its asset, whose fields come first) says of the raster's grid.

    Args:
        properties: the item's properties.
        asset: the asset read.
        count: the bands when the asset's are stacked (three assets of one band each).

    Returns:
        The grid, or ``None`` when ``proj:shape``, ``proj:transform`` or the CRS is missing.
    """

    def field(name: str) -> Any:
        return asset.get(name, properties.get(name))

    shape, transform = field("proj:shape"), field("proj:transform")
    code = field("proj:code") or (f"EPSG:{field('proj:epsg')}" if field("proj:epsg") else None) or field("proj:wkt2")
    if not (isinstance(shape, list) and len(shape) == 2 and isinstance(transform, list) and len(transform) >= 6
            and code):
        return None
    bands = asset.get("raster:bands") or asset.get("eo:bands") or properties.get("raster:bands")
    first = bands[0] if isinstance(bands, list) and bands and isinstance(bands[0], dict) else {}
    dtype = first.get("data_type")
    nodata = first.get("nodata")
    return ItemGrid(width=int(shape[1]), height=int(shape[0]), transform=tuple(float(v) for v in transform[:6]),
                    crs=str(code), count=count or (len(bands) if isinstance(bands, list) and bands else None),
                    dtype=str(dtype) if dtype else None,
                    nodata=float(nodata) if isinstance(nodata, (int, float)) else None)


def _gdal_path(href: str, item_id: str) -> str:
    """An asset's href as GDAL opens it; a local file must exist."""
    if is_remote(href):
        return "/vsicurl/" + href
    path = urllib.parse.unquote(href[7:]) if href.startswith("file://") else href
    if not os.path.isfile(path):
        raise InputError(f"{path}: item {item_id}'s asset is not there (a broken href)")
    return os.path.abspath(path)


def _stacked_vrt(bands: list[str], item_id: str, folder: str | os.PathLike | None) -> Path:
    """A VRT stacking one band of each file (red, green, blue), written once, named by content."""
    import rasterio

    from ..features.cache import default_cache_dir

    where = Path(folder) if folder else default_cache_dir() / "stac-vrt"
    digest = hashlib.blake2b("\n".join(bands).encode(), digest_size=8).hexdigest()
    target = where / f"{_safe(item_id)}-{digest}.vrt"
    if target.is_file():
        return target
    sources = []
    try:
        for band in bands:
            with rasterio.open(band) as src:
                sources.append((band, src.width, src.height, src.dtypes[0], src.crs, src.transform, src.nodata))
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"item {item_id}: an asset cannot be opened ({str(exc).splitlines()[0]})") from None
    _, width, height, dtype, crs, transform, nodata = sources[0]
    if any((w, h) != (width, height) for _, w, h, *_ in sources):
        raise InputError(f"item {item_id}: its red, green and blue assets differ in size; choose one with `asset`")
    gdal_type = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32", "int32": "Int32",
                 "float32": "Float32", "float64": "Float64"}[dtype]
    bands_xml = "".join(
        f'<VRTRasterBand dataType="{gdal_type}" band="{i}"><ColorInterp>{name}</ColorInterp>'
        + (f"<NoDataValue>{nodata}</NoDataValue>" if nodata is not None else "")
        + f'<SimpleSource><SourceFilename relativeToVRT="0">{_xml(path)}</SourceFilename><SourceBand>1</SourceBand>'
        f'<SrcRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/>'
        f'<DstRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/></SimpleSource></VRTRasterBand>'
        for i, (name, (path, *_)) in enumerate(zip(("Red", "Green", "Blue"), sources), start=1))
    geo = ", ".join(repr(v) for v in transform.to_gdal())
    text = (f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">'
            + (f"<SRS>{_xml(crs.to_wkt())}</SRS>" if crs else "")
            + f"<GeoTransform>{geo}</GeoTransform>{bands_xml}</VRTDataset>")
    where.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)
    return target


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80] or "item"


def _absolute(href: str) -> str:
    return href if is_remote(href) else os.path.abspath(href)


def _resolve(href: str, base: str) -> str:
    """``href`` relative to the file ``base`` that holds it (URLs and absolute paths as they are)."""
    if is_remote(href) or href.startswith(("/", "file://")):
        return href
    if is_remote(base):
        return urllib.parse.urljoin(base, href)
    return os.path.normpath(os.path.join(os.path.dirname(base), href))


def _read_json(href: str) -> Any:
    """The JSON at a path or an http(s) URL; an :class:`InputError` naming it when it cannot be."""
    try:
        if is_remote(href):
            with urllib.request.urlopen(href, timeout=60) as response:  # noqa: S310 - http(s) only
                return json.loads(response.read())
        return json.loads(Path(href).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{href}: cannot read the STAC JSON ({str(exc).splitlines()[0] if str(exc) else exc})") \
            from None


def _is_item_collection(data: dict) -> bool:
    features = data.get("features")
    return data.get("type") == "FeatureCollection" and isinstance(features, list) and bool(features) and \
        all(isinstance(f, dict) and "stac_version" in f for f in features)


def _is_stac_parquet(path: str) -> bool:
    import pyarrow.parquet as pq

    try:
        names = set(pq.read_schema(path).names)
    except Exception:
        return False
    return {"id", "assets", "stac_version"} <= names


def _parquet_items(href: str) -> Iterator[dict]:
    """The items of a stac-geoparquet file (the ``stac`` extra)."""
    import io

    import pyarrow.parquet as pq

    from ..errors import require_extra

    require_extra("stac_geoparquet", "stac", "a stac-geoparquet input", named="stac-geoparquet")
    import stac_geoparquet.arrow

    try:
        if is_remote(href):
            with urllib.request.urlopen(href, timeout=60) as response:  # noqa: S310 - http(s) only
                table = pq.read_table(io.BytesIO(response.read()))
        else:
            table = pq.read_table(href)
    except (OSError, ValueError) as exc:
        raise InputError(f"{href}: cannot read the stac-geoparquet file ({str(exc).splitlines()[0]})") from None
    yield from stac_geoparquet.arrow.stac_table_to_items(table)
