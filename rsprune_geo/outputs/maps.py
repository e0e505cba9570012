"""The map of a run: its rasters under the tile footprints coloured by status (matplotlib)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np

from ..errors import require_extra
from ..reading.pixels import read_preview, source_scaling
from ..reading.sources import open_source, recorded_path
from ..runs.record import RunRecord
from ..runs.vocabulary import Status

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure


#: Sources whose tiles lie within about this many times their extents' side of each other share a
#: map panel; inputs farther apart get a panel each, under an overview.
REGION_GAP = 2.0
#: The most region panels a map draws (the largest regions by tile count; the overview shows all).
MAX_PANELS = 8


def map_regions(tiles: gpd.GeoDataFrame, gap: float = REGION_GAP) -> list[list[str]]:
    """The tiles' sources grouped into regions that one map panel can show.

    Two sources join when the extents of their tiles, each grown by ``gap`` × half its longer side,
    overlap (chains of neighbours join too); the regions come largest first (by tiles).
    """
    import shapely

    parts = tiles.groupby("source", sort=True)
    names = list(parts.groups)
    bounds = np.array([parts.get_group(name).total_bounds for name in names])
    sides = np.maximum(bounds[:, 2] - bounds[:, 0], bounds[:, 3] - bounds[:, 1])
    grown = shapely.box(*(bounds + np.outer(gap * sides / 2, [-1, -1, 1, 1])).T)
    left, right = shapely.STRtree(grown).query(grown, predicate="intersects")
    root = list(range(len(names)))

    def find(i: int) -> int:
        while root[i] != i:
            root[i] = root[root[i]]
            i = root[i]
        return i

    for a, b in zip(left.tolist(), right.tolist()):
        root[find(a)] = find(b)
    groups: dict[int, list[str]] = {}
    for i, name in enumerate(names):
        groups.setdefault(find(i), []).append(name)
    sizes = parts.size()
    return sorted(groups.values(), key=lambda group: (-int(sizes[group].sum()), group[0]))


def region_bounds(tiles: gpd.GeoDataFrame, crs: Any = 4326) -> list[tuple[float, float, float, float]]:
    """The bounds of each of :func:`map_regions`' regions in ``crs``.

    Where an interactive map opens, and where it marks the others.

    Args:
        tiles: the run's tiles.
        crs: the CRS of the bounds (WGS 84 by default).

    Returns:
        ``(west, south, east, north)`` of each region, largest first.
    """
    shapes = tiles.to_crs(crs) if tiles.crs is not None and crs is not None else tiles
    return [tuple(float(v) for v in shapes[shapes["source"].isin(region)].total_bounds)  # type: ignore[misc]
            for region in map_regions(tiles)]


def plot_map(
    tiles: gpd.GeoDataFrame,
    rasters: Sequence[str],
    path: str | os.PathLike | None = None,
    title: str | None = None,
    max_size: int = 1600,
    record: RunRecord | None = None,
) -> Figure:
    """A map of a run's tiles over its rasters, as a matplotlib Figure.

    The rasters are drawn at reduced resolution, warped to the tiles' CRS, under the footprints
    coloured by status, with a legend of counts. Inputs that lie far apart (:func:`map_regions`)
    get one panel each (at most :data:`MAX_PANELS`, the largest), under an overview that shows
    where the panels are.

    Args:
        tiles: the run's tiles (see :func:`read_run`).
        rasters: the raster paths to draw under the tiles.
        path: write the figure there as PNG when given.
        title: the figure's title.
        max_size: the longest side, in pixels, each raster is read at.
        record: the run's record; with it the rasters are drawn with its bands and stretch.

    Returns:
        The figure.
    """
    require_extra("matplotlib", "plots", "plotting a map")
    from matplotlib.figure import Figure

    regions = map_regions(tiles) if len(tiles) and "source" in tiles else []
    if len(regions) <= 1:
        fig = Figure(figsize=(10, 10), dpi=110)
        ax = fig.subplots()
        _draw(ax, tiles, rasters, record, max_size)
        ax.set_title(title or "rsprune_geo tiles by status")
        _legend(ax, tiles)
        fig.tight_layout()
    else:
        shown = regions[:MAX_PANELS]
        cols = min(3, len(shown) + 1)
        rows = -(-(len(shown) + 1) // cols)
        fig = Figure(figsize=(5 * cols, 5 * rows), dpi=110)
        axes = fig.subplots(rows, cols, squeeze=False).ravel()
        _overview(axes[0], tiles, regions, len(shown))
        _legend(fig, tiles)
        recorded = {recorded_path(raster): raster for raster in rasters}
        for number, (ax, region) in enumerate(zip(axes[1:], shown), start=1):
            part = tiles[tiles["source"].isin(region)]
            _draw(ax, part, [recorded[s] for s in region if s in recorded], record, max_size // 2)
            more = f" + {len(region) - 1} more" if len(region) > 1 else ""
            ax.set_title(f"{number}: {os.path.basename(region[0])}{more} ({len(part)} tiles)", fontsize=9)
        for ax in axes[len(shown) + 1:]:
            ax.set_axis_off()
        fig.suptitle(title or "rsprune_geo tiles by status")
        fig.tight_layout(rect=(0, 0.06, 1, 1))  # room for the legend below
    if path is not None:
        fig.savefig(path)
    return fig


def _draw(ax, tiles: gpd.GeoDataFrame, rasters: Sequence[str], record: RunRecord | None, max_size: int) -> None:
    """The rasters under the tiles' footprints, coloured by status, on ``ax``."""
    for raster in rasters:
        recorded = recorded_path(raster)
        if record is not None and record.has_input(recorded):
            source, scaling = record.source(recorded)
        else:
            source = open_source(raster, allow_no_crs=True)
            scaling = source_scaling(source)
        rgba, (left, bottom, right, top) = read_preview(source, scaling, max_size, tiles.crs)
        ax.imshow(rgba, extent=(left, right, bottom, top), interpolation="nearest")
    for status in Status:
        part = tiles[tiles["status"] == status]
        if part.empty:
            continue
        color = _color(status)
        kept = status is Status.KEPT
        part.plot(ax=ax, facecolor=color + (0.15 if kept else 0.45,), edgecolor=color,
                  linewidth=1.4 if kept else 0.5, zorder=3 if kept else 2)
    ax.set_aspect("equal")
    ax.ticklabel_format(useOffset=False, style="plain")


def _overview(ax, tiles: gpd.GeoDataFrame, regions: list[list[str]], panels: int) -> None:
    """Where the regions are.

    Each region's extent outlined and numbered as its panel, its tiles as dots coloured by status.
    """
    from matplotlib.patches import Rectangle

    centres = tiles.geometry.centroid
    for status in Status:
        chosen = (tiles["status"] == status).to_numpy()
        if chosen.any():
            ax.scatter(centres.x[chosen], centres.y[chosen], s=4, color=_color(status), zorder=2)
    for number, region in enumerate(regions, start=1):
        left, bottom, right, top = tiles[tiles["source"].isin(region)].total_bounds
        ax.add_patch(Rectangle((left, bottom), right - left, top - bottom, fill=False, edgecolor="black",
                               linewidth=1.0, zorder=3))
        label = str(number) if number <= panels else "·"
        ax.annotate(label, (right, top), xytext=(3, 3), textcoords="offset points", fontsize=10, weight="bold")
    ax.set_title(f"overview: {len(regions)} regions" + (f", the {panels} largest below" if panels < len(regions)
                                                        else ""), fontsize=9)
    left, bottom, right, top = tiles.total_bounds
    half = 0.55 * max(right - left, top - bottom)  # a square view, whatever the regions' layout
    cx, cy = (left + right) / 2, (bottom + top) / 2
    ax.set_xlim(cx - half, cx + half)
    ax.set_ylim(cy - half, cy + half)
    ax.set_aspect("equal")
    ax.ticklabel_format(useOffset=False, style="plain")
    ax.locator_params(nbins=4)


def _legend(where, tiles: gpd.GeoDataFrame) -> None:
    """A legend of the statuses with their counts, on an axis (lower right) or a figure (below)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    counts = tiles["status"].value_counts()
    handles = [Patch(facecolor=_color(status), edgecolor=_color(status), label=f"{status} ({counts[status]})")
               for status in Status if counts.get(status, 0)]
    if isinstance(where, Figure):
        where.legend(handles=handles, loc="lower center", ncols=len(handles), framealpha=0.9)
    else:
        where.legend(handles=handles, loc="lower right", framealpha=0.9)


def _color(status: Status) -> tuple[float, float, float]:
    r, g, b = status.color
    return (r / 255, g / 255, b / 255)
