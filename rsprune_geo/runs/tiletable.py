"""The tile table as parts.

GeoParquet files in a folder, each written by the task that made its rows, updated part by part with
the run's decisions, read back whole, by column, or part by part.

Every part is a complete GeoParquet file (``geopandas.read_parquet``, GDAL's Parquet driver, any
Arrow reader), written to a temporary name and renamed, so a killed task leaves none half-written.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from rasterio.crs import CRS

from .vocabulary import Reason, ReasonContext, reasons, status_names


def part_path(folder: str | os.PathLike, part: int) -> Path:
    """Where part ``part`` of a tile table lives."""
    return Path(folder) / f"part-{part:06d}.parquet"


def part_paths(folder: str | os.PathLike) -> list[Path]:
    """The parts of a tile table, in order."""
    return sorted(Path(folder).glob("part-*.parquet"))


def write_part(folder: str | os.PathLike, part: int, frame: pd.DataFrame, crs: CRS | None) -> Path:
    """Write rows (a ``geometry`` column of shapely footprints) as part ``part``, atomically."""
    target = part_path(folder, part)
    target.parent.mkdir(parents=True, exist_ok=True)
    tiles = gpd.GeoDataFrame(frame.drop(columns="geometry"), geometry=frame["geometry"].values, crs=crs)
    _atomic(target, lambda tmp: tiles.to_parquet(tmp, index=False))
    return target


def _atomic(target: Path, write) -> None:
    """``write(temporary path)`` beside ``target``, then rename it into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@dataclass
class Decisions:
    """A part's decisions, in the part's row order.

    Status and reason codes, ranks and (stage 2) each tile's cluster and distance. ``cluster`` ``None``:
    a run without stage 2 (no columns).
    """

    status: np.ndarray
    reason: np.ndarray
    entropy_rank: np.ndarray
    cluster: np.ndarray | None = None
    distance: np.ndarray | None = None
    cluster_rank: np.ndarray | None = None
    scene_rank: np.ndarray | None = None

    def rows(self, where: slice) -> Decisions:
        """The decisions of some rows."""
        def part(values: np.ndarray | None) -> np.ndarray | None:
            return None if values is None else values[where]

        return Decisions(self.status[where], self.reason[where], self.entropy_rank[where], part(self.cluster),
                         part(self.distance), part(self.cluster_rank), part(self.scene_rank))


def update_part(path: str | os.PathLike, decisions: Decisions, context: ReasonContext) -> None:
    """Write a run's decisions into one part (see :func:`apply_decisions`), atomically."""
    target = Path(path)
    tiles = apply_decisions(gpd.read_parquet(target), decisions, context)
    _atomic(target, lambda tmp: tiles.to_parquet(tmp, index=False))


def apply_decisions(tiles: gpd.GeoDataFrame, decisions: Decisions, context: ReasonContext) -> gpd.GeoDataFrame:
    """Tiles (in the decisions' order) with a run's decisions.

    Status, reason text (kept as it was where the reason is
    :attr:`~rsprune_geo.runs.vocabulary.Reason.UNCHANGED`), entropy rank, and stage 2's cluster, scene,
    distance and ranks.
    """
    tiles["entropy_rank"] = decisions.entropy_rank.astype(np.int64)
    tiles["status"] = status_names(decisions.status)
    cluster = decisions.cluster
    text = reasons(decisions.reason, context, tiles["entropy"].to_numpy(), tiles["nodata_fraction"].to_numpy(),
                   cluster, tiles["ground_cell"].to_numpy())
    unchanged = decisions.reason == Reason.UNCHANGED
    if unchanged.any():
        text[unchanged] = tiles["reason"].fillna("").to_numpy(dtype=object)[unchanged]
    tiles["reason"] = text
    if cluster is not None:
        assert decisions.distance is not None and decisions.cluster_rank is not None
        assert decisions.scene_rank is not None
        names = np.array(list(context.cluster_scene) + [""], dtype=object)
        tiles["cluster"] = cluster.astype(np.int64)
        tiles["scene"] = names[np.where(cluster >= 0, cluster, len(names) - 1)]
        tiles["centroid_distance"] = np.where(cluster >= 0, decisions.distance.astype(np.float64), np.nan)
        tiles["cluster_rank"] = decisions.cluster_rank.astype(np.int64)
        tiles["scene_entropy_rank"] = decisions.scene_rank.astype(np.int64)
    return tiles[[c for c in tiles.columns if c != "geometry"] + ["geometry"]]


def read_tiles(folder: str | os.PathLike, columns: Sequence[str] | None = None) -> gpd.GeoDataFrame:
    """The whole tile table (or some of its ``columns``, with the footprints)."""
    parts = part_paths(folder)
    if not parts:
        raise FileNotFoundError(f"{folder}: no part of a tile table")
    wanted = None if columns is None else [*columns, "geometry"]
    frames = [gpd.read_parquet(p, columns=wanted) for p in parts]
    return gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry", crs=frames[0].crs)


def read_columns(folder: str | os.PathLike, columns: Sequence[str]) -> pd.DataFrame:
    """Some columns of the whole table, without the footprints (only those columns are read)."""
    return pd.concat([pq.read_table(p, columns=list(columns)).to_pandas() for p in part_paths(folder)],
                     ignore_index=True)


def iter_parts(folder: str | os.PathLike) -> Iterator[gpd.GeoDataFrame]:
    """The table part by part (memory: one part)."""
    for path in part_paths(folder):
        yield gpd.read_parquet(path)


def count_rows(folder: str | os.PathLike) -> int:
    """Rows of the table, from the parts' metadata (nothing read)."""
    return sum(pq.ParquetFile(p).metadata.num_rows for p in part_paths(folder))
