"""Where a run writes.

A staging run folder that the workers fill (the tile table's parts), the run's decisions written
back part by part, and at the end the output the user asked for: a run folder (renamed into place;
with a GeoPackage of the tiles when the run is small enough to want one), a GeoPackage (streamed
from the parts), or nothing (the tiles then come back in memory).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..engine.columns import TileColumns
from ..engine.scaleout import map_tasks
from ..errors import OutputError, param
from ..progress import ProgressCallback, no_progress
from ..reading.grid import RunGrid
from ..runs.inputs import INPUTS_FILE, SourceInputs, TableInputs, inputs_frames, is_table, write_inputs
from ..runs.record import RunRecord
from ..runs.runfile import FOLDER_GEOPACKAGE, LAYER_FILES, TILES_FOLDER, is_run_folder
from ..runs.tiletable import Decisions, iter_parts, part_path, read_tiles, update_part
from ..runs.vocabulary import ReasonContext
from .geopackage import check_output_path, check_parent, write_geopackage
from .temporaries import new_folder, replace_folder

#: A run folder holds a GeoPackage of its tiles when the run has at most this many (QGIS builds
#: without GDAL's Parquet driver open that one); larger runs are read from the parts.
GPKG_MAX_TILES = 1_000_000


def check_output(output: str | os.PathLike | None, overwrite: bool = False) -> None:
    """Refuse, before any work, an output that cannot be written.

    A GeoPackage (``.gpkg``) or a run folder (any other name).
    """
    if output is None:
        return
    out = Path(output)
    if out.suffix.lower() == ".gpkg":
        check_output_path(out, overwrite)
        return
    if out.exists() and not overwrite:
        raise OutputError(f"{out}: it exists; pass {param('overwrite')} to replace it")
    if out.exists() and not (out.is_dir() and (is_run_folder(out) or not any(out.iterdir()))):
        raise OutputError(f"{out}: not a run folder; a run replaces only a run folder or an empty one")
    check_parent(out)


@dataclass
class Staging:
    """A run folder being written.

    Hidden beside the output (or in the temporary folder when there is none), renamed into place or
    removed when the run ends.
    """

    folder: Path
    output: Path | None

    @classmethod
    def start(cls, output: str | os.PathLike | None) -> Staging:
        """A new staging folder for ``output``."""
        out = Path(output) if output is not None else None
        folder = new_folder(out.parent if out is not None else None)  # stale ones of killed runs removed first
        (folder / TILES_FOLDER).mkdir()
        return cls(folder, out)

    @property
    def parts(self) -> Path:
        """The tile table's folder."""
        return self.folder / TILES_FOLDER

    def discard(self) -> None:
        """Remove the staging folder (a failed or finished run)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def write_decisions(staging: Staging, grid: RunGrid, columns: TileColumns, context: ReasonContext,
                    with_stage2: bool, client: Any | None = None, on_progress: ProgressCallback = no_progress) -> None:
    """Write the run's decisions into every part (on the Dask workers when there are some).

    Each task's slice of the driver's columns sent to it.
    """
    tasks = [t for t in grid.tasks if part_path(staging.parts, t.part).exists()]

    def decisions(task) -> tuple:
        positions = grid.task_positions(task)
        d = Decisions(columns.status[positions], columns.reason[positions], columns.entropy_rank[positions])
        if with_stage2:
            d.cluster, d.distance = columns.cluster[positions], columns.distance[positions]
            d.cluster_rank, d.scene_rank = columns.cluster_rank[positions], columns.scene_rank[positions]
        return str(part_path(staging.parts, task.part)), d

    work = (decisions(task) for task in tasks)
    for done, _ in enumerate(map_tasks(update_part, work, client, broadcast={"context": context}), start=1):
        on_progress("writing", done, len(tasks) + 1)


def finish(staging: Staging, record: RunRecord, layers: dict[str, pd.DataFrame], overwrite: bool = False,
           gpkg_max_tiles: int = GPKG_MAX_TILES, client: Any | None = None) -> Path | None:
    """Give the user the output asked for.

    A GeoPackage streamed from the parts, or the run folder (its record, layers, and a GeoPackage when
    the run has at most ``gpkg_max_tiles`` tiles) renamed into place; nothing without an output (the
    caller reads the tiles first). The GeoPackage is written where the parts are (a Dask worker, with a
    client).
    """
    out = staging.output
    if out is None:
        return None
    inputs = str(staging.folder / INPUTS_FILE) if is_table(record.inputs) else None
    if out.suffix.lower() == ".gpkg":
        if inputs is not None:
            assert isinstance(record.inputs, (SourceInputs, TableInputs))
            write_inputs(record.inputs, inputs)
        _run(client, write_gpkg_from_parts, str(out), str(staging.parts), record.to_table(), layers, overwrite,
             inputs)
        staging.discard()
        return out
    record.write_json(staging.folder)  # with the inputs' table, when they are one
    for name, frame in layers.items():
        frame.to_parquet(staging.folder / LAYER_FILES[name], index=False)
    if sum(record.counts.values()) <= gpkg_max_tiles:
        _run(client, write_gpkg_from_parts, str(staging.folder / FOLDER_GEOPACKAGE), str(staging.parts),
             record.to_table(), layers, True, inputs)
    if out.exists() and not overwrite:
        raise OutputError(f"{out}: it exists; pass {param('overwrite')} to replace it")
    replace_folder(staging.folder, out)  # the old run stays whole until the new one is in place
    return out


def _run(client: Any | None, func: Callable, *args: Any) -> Any:
    """``func(*args)`` here, or on a worker of the Dask ``client``."""
    if client is None:
        return func(*args)
    return client.submit(func, *args, pure=False).result()


def write_gpkg_from_parts(path: str, parts: str, runs: pd.DataFrame, layers: dict[str, pd.DataFrame],
                          overwrite: bool, inputs: str | None = None) -> Path:
    """A run's GeoPackage from its tile table's parts.

    One part in memory at a time (and from ``inputs``, the inputs' table when they are one, a batch at a
    time).
    """
    return write_geopackage(path, iter_parts(parts), runs, layers, overwrite=overwrite,
                            inputs=inputs_frames(inputs) if inputs is not None else None)


def load_tiles(staging: Staging):
    """The staged tile table, whole, in memory (a run without an output)."""
    return read_tiles(staging.parts)

