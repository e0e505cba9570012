"""A finished run read back, whichever form it takes: a GeoPackage, or a run folder (the tile
table in GeoParquet parts, ``run.json``, ``clusters.parquet``, ``evaluation.parquet``, and a
GeoPackage of the same tiles for runs small enough to want one)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import pyogrio

from .errors import InputError
from .runinputs import listed_inputs
from .schema import RUN_RECORD, RunRecord, Status, status_counts
from .tiletable import count_rows, read_columns, read_tiles

#: The tile table's folder, and the other layers' files, in a run folder.
TILES_FOLDER = "tiles"
LAYER_FILES = {"clusters": "clusters.parquet", "evaluation": "evaluation.parquet"}
#: The GeoPackage a run folder holds when the run is small enough (see ``gpkg_max_tiles``).
FOLDER_GEOPACKAGE = "tiles.gpkg"


def is_run_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a run folder (it holds ``run.json``)."""
    return (Path(path) / RUN_RECORD).is_file()


def _checked(path: str | os.PathLike) -> Path:
    out = Path(path)
    if out.is_dir() and not is_run_folder(out):
        raise InputError(f"{out}: not a run folder (no {RUN_RECORD}); give a run's GeoPackage or folder")
    return out


def read_run(path: str | os.PathLike) -> tuple[gpd.GeoDataFrame, RunRecord]:
    """Read a run back: its tiles (every column, with footprints) and its :class:`RunRecord`,
    from a GeoPackage or a run folder."""
    where = _checked(path)
    if where.is_dir():
        return read_tiles(where / TILES_FOLDER), RunRecord.read(where)
    return gpd.read_file(where, layer="tiles", engine="pyogrio"), RunRecord.read(where)


def read_tiles_with_status(path: str | os.PathLike, status: str | None) -> tuple[gpd.GeoDataFrame, RunRecord]:
    """A run's tiles with ``status`` (every tile with ``None``) and its record; an
    :class:`InputError` when no tile has it (what exports of the kept tiles start from)."""
    tiles, record = read_run(path)
    chosen = tiles[tiles["status"] == status] if status else tiles
    if chosen.empty:
        raise InputError(f"{path}: no tile has status {status!r}" if status else f"{path}: no tile")
    return chosen, record


def read_run_columns(path: str | os.PathLike, columns: Sequence[str]) -> pd.DataFrame:
    """Some columns of a run's tiles, without footprints (a run folder reads only those)."""
    where = _checked(path)
    if where.is_dir():
        return read_columns(where / TILES_FOLDER, columns)
    return pyogrio.read_dataframe(where, layer="tiles", columns=list(columns), read_geometry=False)


def run_layers(path: str | os.PathLike) -> list[str]:
    """The layers a run holds (``tiles``, ``runs``, and ``clusters``/``evaluation`` when made)."""
    where = _checked(path)
    if where.is_dir():
        return ["tiles", "runs"] + [name for name, file in LAYER_FILES.items() if (where / file).is_file()]
    return [str(name) for name, _ in pyogrio.list_layers(where)]


def read_layer(path: str | os.PathLike, name: str) -> pd.DataFrame:
    """A run's ``clusters`` or ``evaluation`` table."""
    where = _checked(path)
    if where.is_dir():
        return pd.read_parquet(where / LAYER_FILES[name])
    return pyogrio.read_dataframe(where, layer=name)


def count_tiles(path: str | os.PathLike) -> int:
    """How many tiles a run has (a run folder counts them from its parts' metadata)."""
    where = _checked(path)
    if where.is_dir():
        return count_rows(where / TILES_FOLDER)
    return int(pyogrio.read_info(where, layer="tiles")["features"])


def describe_run(path: str | os.PathLike) -> dict[str, Any]:
    """What a run holds, as JSON-able data: tiles per status, CRS, parameters, inputs (the first
    :data:`~rsprune_geo.runinputs.LISTED_INPUTS` and their count, when they are a table of their
    own), stage summaries, timings, versions and its layers. Reads no geometry."""
    record = RunRecord.read(path)
    statuses = read_run_columns(path, ["status"])["status"]
    counts = status_counts(statuses)
    return {
        "file": str(path),
        "form": "run folder" if Path(path).is_dir() else "GeoPackage",
        "run_id": record.run_id,
        "created": record.created,
        "reselected_from": record.reselected_from,
        "crs": record.crs,
        "tiles": int(len(statuses)),
        "counts": {s.value: counts.get(s.value, 0) for s in Status if s.value in counts},
        "parameters": record.parameters,
        "inputs": [{k: v for k, v in item.items() if k != "scaling"}
                   for item in listed_inputs(record.inputs)],
        "input_count": len(record.inputs),
        "stage1": record.stage1.to_dict() if record.stage1 else None,
        "stage2": record.stage2.to_dict() if record.stage2 else None,
        "timings": record.timings,
        "warnings": record.warnings,
        "skipped": record.skipped,
        "versions": record.versions,
        "layers": run_layers(path),
    }
