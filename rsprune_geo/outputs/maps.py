"""The map of a run: its rasters under the tile footprints coloured by status (matplotlib)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import geopandas as gpd

from ..reading.pixels import read_preview, source_scaling
from ..reading.sources import open_source
from ..schema import RunRecord, Status

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure


def plot_map(
    tiles: gpd.GeoDataFrame,
    rasters: Sequence[str],
    path: str | os.PathLike | None = None,
    title: str | None = None,
    max_size: int = 1600,
    record: RunRecord | None = None,
) -> Figure:
    """A map as a matplotlib Figure: the rasters (reduced resolution, warped to the tiles' CRS)
    under the footprints coloured by status, with a legend of counts; written to ``path`` (PNG)
    when given. With the run's ``record`` the rasters are drawn with its bands and stretch."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch


    fig = Figure(figsize=(10, 10), dpi=110)
    ax = fig.subplots()
    for raster in rasters:
        recorded = raster if raster.startswith("/vsi") else os.path.abspath(raster)
        if record is not None and recorded in record.input_paths:
            source, scaling = record.source(recorded)
        else:
            source = open_source(raster, allow_no_crs=True)
            scaling = source_scaling(source)
        rgba, (left, bottom, right, top) = read_preview(source, scaling, max_size, tiles.crs)
        ax.imshow(rgba, extent=(left, right, bottom, top), interpolation="nearest")
    counts = tiles["status"].value_counts()
    handles = []
    for status in Status:
        part = tiles[tiles["status"] == status]
        if part.empty:
            continue
        r, g, b = status.color
        color = (r / 255, g / 255, b / 255)
        kept = status is Status.KEPT
        part.plot(ax=ax, facecolor=color + (0.15 if kept else 0.45,), edgecolor=color,
                  linewidth=1.4 if kept else 0.5, zorder=3 if kept else 2)
        handles.append(Patch(facecolor=color, edgecolor=color, label=f"{status} ({counts[status]})"))
    ax.legend(handles=handles, loc="lower right", framealpha=0.9)
    ax.set_title(title or "rsprune_geo tiles by status")
    ax.set_aspect("equal")
    ax.ticklabel_format(useOffset=False, style="plain")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
    return fig
