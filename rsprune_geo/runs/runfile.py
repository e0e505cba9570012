"""A finished run read back, whichever form it takes.

A GeoPackage, or a run folder (the tile table in GeoParquet parts, ``run.json``,
``clusters.parquet``, ``evaluation.parquet``, and a GeoPackage of the same tiles for runs small
enough to want one).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import pyarrow.parquet as pq
import pyogrio

from ..errors import InputError, counted
from ..jsontypes import JsonObject
from .inputs import INPUTS_FILE, INPUTS_LAYER, listed_inputs
from .record import RECORD_FORMAT, RUN_RECORD, RunRecord
from .tiletable import count_rows, part_paths, read_columns, read_tiles
from .vocabulary import Status, status_counts

#: The tile table's folder, and the other layers' files, in a run folder.
TILES_FOLDER = "tiles"
LAYER_FILES = {"clusters": "clusters.parquet", "evaluation": "evaluation.parquet"}
#: The GeoPackage a run folder holds when the run is small enough (see ``gpkg_max_tiles``).
FOLDER_GEOPACKAGE = "tiles.gpkg"


#: What every message about a wrong RUN argument says a run is.
RUN_IS = "a run is what `rsprune run` writes: a GeoPackage (.gpkg) or a run folder holding run.json"
#: The layers every run's GeoPackage holds.
RUN_LAYERS = ("tiles", "runs")
#: The first bytes of the raster files a user may give where a run is expected.
RASTER_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+", b"\x89PNG", b"\xff\xd8\xff",
                b"\x00\x00\x00\x0cjP  ", b"\xffO\xffQ", b"GIF8")
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".png", ".jpg", ".jpeg", ".img", ".nc", ".hdf", ".cog")
SQLITE_MAGIC = b"SQLite format 3\x00"
AGAIN = "run `rsprune run` again to rewrite it"


def is_run_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a run folder (it holds ``run.json``)."""
    return (Path(path) / RUN_RECORD).is_file()


def check_run(path: str | os.PathLike) -> Path:
    """``path`` as a run, checked before anything reads it.

    An :class:`InputError` in one line that says what was given, what is wrong with it and what to do,
    else the path.

    Args:
        path: what the user gave as a run (a GeoPackage or a run folder).

    Returns:
        The run's path.

    Raises:
        InputError: not a file or folder; an empty file; a raster; a file that is not a
            GeoPackage, or one without the run's layers; a folder without ``run.json``; a record
            that is not JSON or of a newer format; a missing or damaged part of the tile table,
            or of the inputs' table.

    """
    where = Path(path)
    if where.is_dir():
        _check_folder(where)
    elif where.is_file():
        _check_geopackage(where)
    else:
        raise InputError(f"{where}: no such file or folder; {RUN_IS}")
    return where


def _check_folder(where: Path) -> None:
    """A run folder's record, tile table and inputs' table (see :func:`check_run`)."""
    record_path = where / RUN_RECORD
    if not record_path.is_file():
        raise InputError(f"{where}: a folder without {RUN_RECORD}, not a run folder; {RUN_IS}")
    try:
        data = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{record_path}: cannot be read ({_first_line(exc)}); {AGAIN}") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{record_path}: not JSON ({exc.msg}, line {exc.lineno}); the run folder is damaged: "
                         f"{AGAIN}") from None
    if not isinstance(data, dict):
        raise InputError(f"{record_path}: not a run record (a JSON {type(data).__name__}, not an object); {AGAIN}")
    _check_format(record_path, data.get("record_format"), data.get("versions"))
    parts = part_paths(where / TILES_FOLDER)
    if not parts:
        raise InputError(f"{where}: its tile table ({TILES_FOLDER}/) has no part; the run folder is damaged: {AGAIN}")
    rows = sum(_parquet_rows(part, "a part of the run's tile table") for part in parts)
    _check_count(where, rows, data.get("counts"), f"{counted(len(parts), 'part')} of {TILES_FOLDER}/")
    if isinstance(data.get("inputs"), dict):  # inputs written as a table of their own
        if not (where / INPUTS_FILE).is_file():
            raise InputError(f"{where / INPUTS_FILE}: missing; the run's record lists its inputs there: {AGAIN}")
        _parquet_rows(where / INPUTS_FILE, "the run's table of inputs")
    for name in LAYER_FILES.values():
        if (where / name).is_file():
            _parquet_rows(where / name, f"the run's {name.split('.')[0]} table")


def _check_geopackage(where: Path) -> None:
    """A run's GeoPackage: its kind, layers, record and tile count (see :func:`check_run`)."""
    try:
        with open(where, "rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise InputError(f"{where}: cannot be read ({_first_line(exc)}); {RUN_IS}") from None
    if not head:
        raise InputError(f"{where}: an empty file, not a run; {RUN_IS}")
    if head.startswith(RASTER_MAGIC) or (where.suffix.lower() in RASTER_SUFFIXES and head != SQLITE_MAGIC):
        raise _raster(where)
    if head != SQLITE_MAGIC:
        raise InputError(f"{where}: not a GeoPackage (nor a run folder); {RUN_IS}")
    try:
        layers = [str(name) for name, _ in pyogrio.list_layers(where)]
    except Exception as exc:
        raise InputError(f"{where}: a damaged GeoPackage ({_first_line(exc)}); {AGAIN}") from None
    missing = [name for name in RUN_LAYERS if name not in layers]
    if missing:
        if not layers and _raster_geopackage(where):
            raise _raster(where)
        has = ", ".join(layers) if layers else "no vector layer"
        hint = " (footprints exported from a run?)" if "tiles" in layers else ""
        raise InputError(f"{where}: a GeoPackage without a run's {' and '.join(missing)} layer{hint}; it has {has}; "
                         f"{RUN_IS}")
    try:
        runs = pyogrio.read_dataframe(where, layer="runs", read_geometry=False)
        tiles = int(pyogrio.read_info(where, layer="tiles")["features"])
    except Exception as exc:
        raise InputError(f"{where}: a damaged run GeoPackage ({_first_line(exc)}); {AGAIN}") from None
    if runs.empty:
        raise InputError(f"{where}: its runs layer holds no record; {AGAIN}")
    row = runs.iloc[-1]
    _check_format(where, row.get("record_format"), _json_or_none(row.get("versions")))
    _check_count(where, tiles, _json_or_none(row.get("counts")), "its tiles layer")
    if isinstance(_json_or_none(row.get("inputs")), dict) and INPUTS_LAYER not in layers:
        raise InputError(f"{where}: its {INPUTS_LAYER} layer is missing; the run's record lists its inputs there: "
                         f"{AGAIN}")


def _raster(where: Path) -> InputError:
    return InputError(f"{where}: this is a raster, not a run: `rsprune run {where} -o OUT.gpkg` it first, then give "
                      "OUT.gpkg")


def _raster_geopackage(where: Path) -> bool:
    """Whether a GeoPackage holds raster tiles (its contents say ``tiles``)."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{where}?mode=ro", uri=True) as db:
            return bool(db.execute("SELECT 1 FROM gpkg_contents WHERE data_type != 'features' LIMIT 1").fetchone())
    except sqlite3.Error:
        return False


def _check_format(where: Path, value: Any, versions: Any) -> None:
    """Refuse a record of a newer format than this version reads."""
    try:
        fmt = int(value) if value is not None and not pd.isna(value) else 1
    except (TypeError, ValueError):
        raise InputError(f"{where}: its record_format {value!r} is not a number; {AGAIN}") from None
    if fmt > RECORD_FORMAT:
        by = versions.get("rsprune_geo") if isinstance(versions, dict) else None
        raise InputError(f"{where}: a run record of format {fmt}{f' (rsprune_geo {by})' if by else ''}, newer than "
                         f"this rsprune_geo reads ({RECORD_FORMAT}): upgrade rsprune_geo "
                         "(pip install -U rsprune_geo)")


def _check_count(where: Path, rows: int, counts: Any, held: str) -> None:
    """The tile table holds as many tiles as the record counts (a part lost drops none silently)."""
    if not isinstance(counts, dict):
        raise InputError(f"{where}: its record has no tile counts; {AGAIN}")
    expected = sum(int(n) for n in counts.values())
    if rows != expected:
        raise InputError(f"{where}: {held} hold {counted(rows, 'tile')} where its record counts {expected}: tiles are "
                         f"missing; {AGAIN}")


def _parquet_rows(path: Path, what: str) -> int:
    """Rows of a Parquet file, from its footer; an :class:`InputError` naming a damaged one."""
    try:
        return int(pq.read_metadata(path).num_rows)
    except Exception as exc:
        raise InputError(f"{path}: {what} is damaged ({_first_line(exc)}); {AGAIN}") from None


def _json_or_none(value: Any) -> Any:
    """A ``runs`` cell that holds JSON text, decoded (``None`` when it does not)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return None
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_record(path: str | os.PathLike) -> RunRecord:
    """The :class:`RunRecord` of the run at ``path``, checked first (:func:`check_run`)."""
    return RunRecord.read(check_run(path))


def read_run(path: str | os.PathLike) -> tuple[gpd.GeoDataFrame, RunRecord]:
    """Read a run back from a GeoPackage or a run folder.

    Args:
        path: the run's GeoPackage or run folder.

    Returns:
        Its tiles (every column, with footprints) and its :class:`RunRecord`.

    Raises:
        InputError: ``path`` is not a run, or a damaged one (see :func:`check_run`).
    """
    where = check_run(path)
    if where.is_dir():
        return read_tiles(where / TILES_FOLDER), RunRecord.read(where)
    return gpd.read_file(where, layer="tiles", engine="pyogrio"), RunRecord.read(where)


def read_tiles_with_status(path: str | os.PathLike, status: str | None) -> tuple[gpd.GeoDataFrame, RunRecord]:
    """A run's tiles with ``status`` (every tile with ``None``) and its record.

    An :class:`InputError` when no tile has it (what exports of the kept tiles start from).
    """
    tiles, record = read_run(path)
    chosen = tiles[tiles["status"] == status] if status else tiles
    if chosen.empty:
        raise InputError(f"{path}: no tile has status {status!r}" if status else f"{path}: no tile")
    return chosen, record


def read_run_columns(path: str | os.PathLike, columns: Sequence[str]) -> pd.DataFrame:
    """Some columns of a run's tiles, without footprints (a run folder reads only those)."""
    return _columns(check_run(path), columns)


def _columns(where: Path, columns: Sequence[str]) -> pd.DataFrame:
    if where.is_dir():
        return read_columns(where / TILES_FOLDER, columns)
    return pyogrio.read_dataframe(where, layer="tiles", columns=list(columns), read_geometry=False)


def run_layers(path: str | os.PathLike) -> list[str]:
    """The layers a run holds (``tiles``, ``runs``, and ``clusters``/``evaluation`` when made)."""
    return _layers(check_run(path))


def _layers(where: Path) -> list[str]:
    if where.is_dir():
        return ["tiles", "runs"] + [name for name, file in LAYER_FILES.items() if (where / file).is_file()]
    return [str(name) for name, _ in pyogrio.list_layers(where)]


def read_layer(path: str | os.PathLike, name: str) -> pd.DataFrame:
    """A run's ``clusters`` or ``evaluation`` table."""
    where = check_run(path)
    if where.is_dir():
        return pd.read_parquet(where / LAYER_FILES[name])
    return pyogrio.read_dataframe(where, layer=name)


def count_tiles(path: str | os.PathLike) -> int:
    """How many tiles a run has (a run folder counts them from its parts' metadata)."""
    where = check_run(path)
    if where.is_dir():
        return count_rows(where / TILES_FOLDER)
    return int(pyogrio.read_info(where, layer="tiles")["features"])


def describe_run(path: str | os.PathLike) -> JsonObject:
    """What a run holds, as JSON-able data.

    Tiles per status, CRS, parameters, inputs (the first :data:`~rsprune_geo.runs.inputs.LISTED_INPUTS`
    and their count, when they are a table of their own), stage summaries, timings, versions and its
    layers. Reads no geometry.
    """
    where = check_run(path)
    record = RunRecord.read(where)
    statuses = _columns(where, ["status"])["status"]
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
        "parameters": record.parameters.to_dict(),
        "inputs": [{k: v for k, v in item.items() if k != "scaling"}
                   for item in listed_inputs(record.inputs)],
        "input_count": len(record.inputs),
        "stage1": record.stage1.to_dict() if record.stage1 else None,
        "stage2": record.stage2.to_dict() if record.stage2 else None,
        "timings": record.timings,
        "warnings": record.warnings,
        "skipped": record.skipped,
        "versions": record.versions,
        "layers": _layers(where),
    }
