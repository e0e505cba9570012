"""Tiling: a regular grid of pixel windows over each source, with footprints and stable ids."""

from __future__ import annotations

from collections.abc import Sequence

import geopandas as gpd
import numpy as np
import shapely
from rasterio.windows import Window

from ..choices import EdgeMode
from ..errors import InputError, param
from .sources import RasterSource


def grid_offsets(length: int, tile_size: int, stride: int, edge: str = "drop") -> np.ndarray:
    """Pixel offsets of tiles along one axis.

    ``drop`` keeps whole tiles only; ``pad`` adds the partial tile(s) that reach past the edge
    (their outside pixels are read as nodata), never a tile that adds no new pixel.
    """
    if tile_size < 1 or stride < 1:
        raise InputError(f"tile size ({tile_size}) and stride ({stride}) must be positive")
    if EdgeMode.parse(edge, "edge") is EdgeMode.DROP:
        return np.arange(0, length - tile_size + 1, stride, dtype=np.int64)
    offsets = np.arange(0, length, stride, dtype=np.int64)
    return offsets[(offsets == 0) | (offsets - stride + tile_size < length)]


def tile_id(source: RasterSource, row_off: int, col_off: int, tile_size: int) -> str:
    """The stable id of a tile: source key, pixel offsets and size (``3fa2c1d0-r512-c256-256``)."""
    return f"{source.key}-r{row_off}-c{col_off}-{tile_size}"


def whole_tile(source: RasterSource) -> gpd.GeoDataFrame:
    """One tile covering the whole raster (an image chip), whatever its size."""
    row, col = np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64)
    size = source.width if source.width == source.height else f"{source.width}x{source.height}"
    return gpd.GeoDataFrame(
        {
            "tile_id": [f"{source.key}-r0-c0-{size}"],
            "source": source.path,
            "row_off": row,
            "col_off": col,
            "width": np.array([source.width], dtype=np.int64),
            "height": np.array([source.height], dtype=np.int64),
        },
        geometry=window_polygons(source.transform, row, col, source.width, source.height),
        crs=source.crs,
    )


def make_tiles(
    source: RasterSource,
    tile_size: int = 256,
    stride: int | None = None,
    edge: str = "drop",
    aoi: gpd.GeoSeries | None = None,
) -> gpd.GeoDataFrame:
    """Tile one source into a GeoDataFrame of windows and footprints.

    Footprint corners are the window's corners through the raster's affine transform, so they
    equal ``rasterio.windows.bounds`` exactly for north-up rasters.

    Args:
        source: the raster (see :func:`open_source`).
        tile_size: the tile's side in pixels.
        stride: pixels between tile origins; ``None`` for ``tile_size`` (no overlap).
        edge: ``drop`` the partial tiles at the right and bottom edges, or ``pad`` them.
        aoi: keep only tiles whose footprint intersects these shapes (any CRS).

    Returns:
        One row a tile: ``tile_id``, the window and the footprint polygon in the source CRS.

    Raises:
        InputError: a tile size, stride or edge mode out of range.
    """
    stride = stride or tile_size
    if EdgeMode.parse(edge, "edge") is EdgeMode.DROP and (tile_size > source.width or tile_size > source.height):
        raise InputError(
            f"{source.path}: tile size {tile_size} px is larger than the raster "
            f"({source.width}x{source.height} px); use a smaller {param('tile_size')} or {param('edge')} pad"
        )
    rows = grid_offsets(source.height, tile_size, stride, edge)
    cols = grid_offsets(source.width, tile_size, stride, edge)
    row_off, col_off = (a.ravel() for a in np.meshgrid(rows, cols, indexing="ij"))
    footprints = window_polygons(source.transform, row_off, col_off, tile_size, tile_size)
    frame = gpd.GeoDataFrame(
        {
            "tile_id": [tile_id(source, int(r), int(c), tile_size) for r, c in zip(row_off, col_off)],
            "source": source.path,
            "row_off": row_off,
            "col_off": col_off,
            "width": np.full(row_off.size, tile_size, dtype=np.int64),
            "height": np.full(row_off.size, tile_size, dtype=np.int64),
        },
        geometry=footprints,
        crs=source.crs,
    )
    if aoi is not None:
        frame = clip_to_aoi(frame, aoi)
    return frame


def window_polygons(transform, row_off: np.ndarray, col_off: np.ndarray, width: int, height: int) -> np.ndarray:
    """Footprint polygons of pixel windows: their corners through a raster's affine ``transform``."""
    t = transform
    cols = np.stack([col_off, col_off + width, col_off + width, col_off, col_off], axis=1)
    rows = np.stack([row_off, row_off, row_off + height, row_off + height, row_off], axis=1)
    return shapely.polygons(np.stack([t.a * cols + t.b * rows + t.c, t.d * cols + t.e * rows + t.f], axis=-1))


def clip_to_aoi(tiles: gpd.GeoDataFrame, aoi: gpd.GeoSeries) -> gpd.GeoDataFrame:
    """Keep the tiles whose footprint intersects the area of interest."""
    if tiles.crs is not None and aoi.crs is not None and aoi.crs != tiles.crs:
        aoi = aoi.to_crs(tiles.crs)
    area = shapely.union_all(aoi.geometry.values)
    keep = shapely.intersects(tiles.geometry.values, area)
    return tiles.loc[keep].reset_index(drop=True)


def read_aoi(path: str) -> gpd.GeoSeries:
    """Read an area-of-interest polygon layer from any vector file OGR opens."""
    try:
        frame = gpd.read_file(path, engine="pyogrio")
    except Exception as exc:  # pyogrio raises several DataSourceError types
        raise InputError(f"{path}: cannot read the area of interest ({str(exc).splitlines()[0]})") from None
    geoms = frame.geometry
    geoms = geoms[~geoms.is_empty & geoms.notna()]
    if geoms.empty:
        raise InputError(f"{path}: the area of interest holds no geometry")
    if not geoms.geom_type.isin(["Polygon", "MultiPolygon"]).all():
        raise InputError(f"{path}: the area of interest must hold polygons")
    if geoms.crs is None:
        raise InputError(f"{path}: the area of interest has no CRS")
    return geoms


def tile_windows(tiles: gpd.GeoDataFrame) -> list[Window]:
    """The rasterio windows of a tile table's rows."""
    return [
        Window(int(c), int(r), int(w), int(h))
        for r, c, w, h in zip(tiles.row_off, tiles.col_off, tiles.width, tiles.height)
    ]


def group_tiles(tiles: gpd.GeoDataFrame, group_px: int = 2048) -> list[np.ndarray]:
    """Split a source's tiles into spatial groups of about ``group_px`` square (row positions).

    Each group becomes one task that reads one window, so a task's memory is bounded whatever
    the mosaic's size, and tasks line up with the tile grid.
    """
    if len(tiles) == 0:
        return []
    gr = tiles.row_off.to_numpy() // group_px
    gc = tiles.col_off.to_numpy() // group_px
    order = np.lexsort((gc, gr))
    keys = gr[order] * (int(gc.max()) + 1) + gc[order]
    cuts = np.flatnonzero(np.diff(keys)) + 1
    return [np.asarray(part) for part in np.split(order, cuts)]


def union_window(tiles: gpd.GeoDataFrame, positions: Sequence[int]) -> Window:
    """The smallest window covering the tiles at ``positions``."""
    part = tiles.iloc[list(positions)]
    r0, c0 = int(part.row_off.min()), int(part.col_off.min())
    r1 = int((part.row_off + part.height).max())
    c1 = int((part.col_off + part.width).max())
    return Window(c0, r0, c1 - c0, r1 - r0)


def ground_cells(footprints: gpd.GeoSeries, cell_size: float | None = None,
                 origin: tuple[float, float] | None = None) -> tuple[np.ndarray, float, tuple[float, float]]:
    """The ground cell of every footprint in one grid common to all rasters: ``(ids, size, origin)``.

    Tiles of overlapping rasters that cover the same ground (a time series, revisits,
    neighbouring scenes' overlap) fall in the same cell, whatever the file. The grid's cells are
    ``cell_size`` wide (default: the footprints' median side), anchored at ``origin`` (default:
    the footprints' upper-left corner, so tiles of the first grid sit at cell centres); a tile's
    cell is the one holding its footprint's centre. Ids read ``r{row}-c{col}`` of that grid;
    footprints without a CRS get ``""`` (no common ground).
    """
    if footprints.crs is None or len(footprints) == 0:
        return np.full(len(footprints), "", dtype=object), float("nan"), (float("nan"), float("nan"))
    geoms = footprints.values
    if cell_size is None:
        cell_size = float(np.median(np.sqrt(shapely.area(geoms))))
    if origin is None:
        left, _, _, top = footprints.total_bounds
        origin = (float(left), float(top))
    centres = shapely.get_coordinates(shapely.centroid(geoms))
    cols = np.floor((centres[:, 0] - origin[0]) / cell_size).astype(np.int64)
    rows = np.floor((origin[1] - centres[:, 1]) / cell_size).astype(np.int64)
    ids = np.array([f"r{r}-c{c}" for r, c in zip(rows.tolist(), cols.tolist())], dtype=object)
    return ids, cell_size, origin
