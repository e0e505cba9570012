"""A run's record of its inputs (path, fingerprint, size, bands, stretch, date), an entry per input.

A run of a few rasters writes them in its record; a folder of chips is a run of millions of inputs,
so beyond :data:`INLINE_INPUTS` they are a table of their own (``inputs.parquet`` in a run folder,
an ``inputs`` layer in a GeoPackage), written a batch at a time from the run's sources and read back
as columns: never a dictionary per chip in the driver.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..reading.dates import SourceDates
from ..reading.pixels import Scaling
from ..reading.remote import redact
from ..reading.scan import SourceTable
from ..reading.sources import RasterSource


class StretchEntry(TypedDict):
    """A stretch as an input's entry holds it: each band's low and high grey level."""

    low: list[float]
    high: list[float]


class InputEntry(TypedDict, total=False):
    """One input as the run record holds it.

    Where it is, what it was (fingerprint, key, CRS, size, data type, the bands read, where validity
    comes from) and its stretch; an input from a STAC catalogue also names its item and where the item
    is.
    """

    path: str
    fingerprint: str
    key: str
    crs: str | None
    width: int
    height: int
    dtype: str
    bands: list[int]
    mask: str
    scaling: StretchEntry | None
    stac_item: str
    stac_href: str


#: Inputs a record holds in itself; beyond, they are a table beside it.
INLINE_INPUTS = 10_000
#: The inputs' table: a run folder's file, a GeoPackage's layer.
INPUTS_FILE = "inputs.parquet"
INPUTS_LAYER = "inputs"
#: Inputs ``rsprune info`` lists when they are a table of their own.
LISTED_INPUTS = 20
#: Entries written at once.
BATCH = 1 << 14

#: The inputs' table: an entry's fields (``bands`` and ``scaling`` as JSON text), its date and where
#: that was read.
_SCHEMA = pa.schema([("path", pa.string()), ("fingerprint", pa.string()), ("key", pa.string()),
                     ("crs", pa.string()), ("width", pa.int64()), ("height", pa.int64()), ("dtype", pa.string()),
                     ("bands", pa.string()), ("mask", pa.string()), ("scaling", pa.string()),
                     ("date", pa.string()), ("date_from", pa.string())])
COLUMNS = tuple(_SCHEMA.names)


class SourceInputs(Sequence[InputEntry]):
    """The entries of a run's inputs.

    Each built when asked from its sources, their stretch and their dates. A value sources hold as the
    same object (a folder of chips shares its CRS, bands and stretch) is converted once and shared by
    the entries.
    """

    def __init__(self, sources: Sequence[RasterSource], scalings: Sequence[Scaling],
                 dates: SourceDates | None = None) -> None:
        self.sources, self.scalings, self.dates = sources, scalings, dates
        self._held: dict[str, tuple[Any, Any]] = {}  # field -> (the source's object, the entry's value)

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        s, sc = self.sources[index], self.scalings[index]
        return {
            "path": redact(s.path),
            "fingerprint": s.fingerprint,
            "key": s.key,
            "crs": self._shared("crs", s.crs, lambda crs: crs.to_string() if crs is not None else None),
            "width": s.width,
            "height": s.height,
            "dtype": s.dtype,
            "bands": self._shared("bands", s.bands, list),
            "mask": s.mask_mode.value,
            "scaling": self._shared("scaling", sc, _scaling_entry),
            **({"stac_item": s.stac_item, "stac_href": redact(s.stac_href)} if s.stac_item else {}),
        }

    def __iter__(self) -> Iterator[InputEntry]:
        return (self[i] for i in range(len(self)))

    def _shared(self, name: str, value: Any, convert) -> Any:
        held = self._held.get(name)
        if held is None or held[0] is not value:
            held = self._held[name] = (value, convert(value))
        return held[1]

    def date_entry(self, index: int) -> list[str | None]:
        """Input ``index``'s ``[date, where it was read]`` (``None`` where unknown)."""
        if self.dates is None:
            return [None, None]
        when = self.dates.of(index)
        return [None if np.isnat(when) else str(when)[:19], self.dates.how_of(index) or None]

    def batches(self, size: int = BATCH) -> Iterator[pa.RecordBatch]:
        """The entries and dates as the inputs' table, ``size`` rows at a time.

        From a table of sources (a folder of chips), a column at a time, without an entry or a source per
        chip.
        """
        table = self.sources if isinstance(self.sources, SourceTable) and _columnar(self.sources) else None
        shared = _shared_columns(table) if table is not None else {}
        for lo in range(0, len(self), size):
            hi = min(lo + size, len(self))
            if table is not None:
                columns = _table_columns(table, shared, lo, hi)
            else:
                rows = [self[i] for i in range(lo, hi)]
                columns = {name: [row[name] for row in rows] for name in COLUMNS[:9]}
                columns["bands"] = [json.dumps(b) for b in columns["bands"]]
            scaling = self._shared_scaling
            columns["scaling"] = [scaling(self.scalings[i]) for i in range(lo, hi)]
            columns["date"], columns["date_from"] = self._date_columns(lo, hi)
            yield pa.RecordBatch.from_pydict(columns, schema=_SCHEMA)

    def _shared_scaling(self, scaling: Scaling) -> str | None:
        """A stretch as the table's JSON text, converted once for sources that share it."""
        return self._shared("scaling_text", scaling, lambda s: None if s.identity else json.dumps(_scaling_entry(s)))

    def _date_columns(self, lo: int, hi: int) -> tuple[list[str | None], list[str | None]]:
        """The ``date`` and ``date_from`` columns of inputs ``lo`` to ``hi``, from the dates' codes."""
        if self.dates is None:
            return [None] * (hi - lo), [None] * (hi - lo)
        days = [None if np.isnat(v) else str(v)[:19] for v in self.dates.values]
        how = [h or None for h in self.dates.how]
        return ([days[c] for c in self.dates.code[lo:hi].tolist()],
                [how[c] for c in self.dates.how_code[lo:hi].tolist()])


def _scaling_entry(scaling: Scaling) -> StretchEntry | None:
    return None if scaling.identity else {"low": list(scaling.low or ()), "high": list(scaling.high or ())}


def _columnar(table: SourceTable) -> bool:
    """Whether a table's entries can be written from its columns.

    A fingerprint of a ``/vsi`` path is read again when its source is built, so those go source by
    source.
    """
    return not any(folder.startswith("/vsi") for folder in table.folders)


def _shared_columns(table: SourceTable) -> dict[str, list]:
    """The entry fields a table holds once per distinct description, one value a description."""
    profiles = table.profiles
    return {"crs": [p.crs.to_string() if p.crs is not None else None for p in profiles],
            "width": [p.width for p in profiles], "height": [p.height for p in profiles],
            "dtype": [p.dtype for p in profiles], "bands": [json.dumps(list(p.bands)) for p in profiles],
            "mask": [p.mask_mode.value for p in profiles]}


def _table_columns(table: SourceTable, shared: dict[str, list], lo: int, hi: int) -> dict[str, list]:
    """The entry fields of sources ``lo`` to ``hi`` of a table, from its columns."""
    folders = table.folders
    names = table.names.slice(lo, hi - lo).to_pylist()
    digits = table.key_digits
    width = table.fingerprint.shape[1] * 2
    hexed = np.ascontiguousarray(table.fingerprint[lo:hi]).tobytes().hex()
    profile = table.profile[lo:hi].tolist()
    columns = {"path": [redact(folders[f] + n) for f, n in zip(table.folder[lo:hi].tolist(), names)],
               "fingerprint": [hexed[i : i + width] for i in range(0, len(hexed), width)],
               "key": [f"{k:0{digits}x}" for k in table.key[lo:hi].tolist()]}
    columns.update({name: [values[p] for p in profile] for name, values in shared.items()})
    return columns


class TableInputs(Sequence[InputEntry]):
    """The entries of a finished run's inputs, read back from their table (as columns)."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table

    @classmethod
    def read(cls, where: str | os.PathLike) -> TableInputs:
        """The inputs' table of a run folder or a GeoPackage."""
        if os.path.isdir(where):
            return cls(pq.read_table(Path(where) / INPUTS_FILE))
        import pyogrio

        return cls(pa.Table.from_pandas(pyogrio.read_dataframe(where, layer=INPUTS_LAYER), preserve_index=False))

    def __len__(self) -> int:
        return self.table.num_rows

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        row = self.table.slice(index if index >= 0 else index + len(self), 1).to_pylist()[0]
        return _entry(row)

    def __iter__(self) -> Iterator[InputEntry]:
        for batch in self.table.to_batches():
            for row in batch.to_pylist():
                yield _entry(row)

    def date_entry(self, index: int) -> list[str | None]:
        """Input ``index``'s ``[date, where it was read]``."""
        row = self.table.slice(index, 1).select(["date", "date_from"]).to_pylist()[0]
        return [row["date"], row["date_from"]]

    def paths(self) -> list[str]:
        """Every input's path."""
        return self.table.column("path").to_pylist()

    def path_index(self) -> pd.Index:
        """The path column as an index, built on the first call and kept."""
        if not hasattr(self, "_index"):
            self._index = pd.Index(self.table.column("path").to_pandas())
        return self._index

    def by_path(self) -> Mapping[str, InputEntry]:
        """The entries by path (the first of a path given twice), looked up through :meth:`path_index`."""
        return _ByPath(self)


    def batches(self, size: int = BATCH) -> Iterator[pa.RecordBatch]:
        """The table, ``size`` rows at a time."""
        yield from self.table.to_batches(max_chunksize=size)


def first_position(index: pd.Index, path: str) -> int:
    """Where ``path`` first is in an index of paths (a path given twice: its first entry).

    A ``KeyError`` when it is not there.
    """
    found = index.get_loc(path)
    if isinstance(found, slice):
        return int(found.start)
    if not isinstance(found, int | np.integer):
        return int(np.flatnonzero(found)[0])
    return int(found)


class _ByPath(Mapping[str, InputEntry]):
    """A :class:`TableInputs`' entries by path."""

    def __init__(self, inputs: TableInputs) -> None:
        self.inputs = inputs

    def __getitem__(self, path: str) -> InputEntry:
        return self.inputs[first_position(self.inputs.path_index(), path)]

    def __contains__(self, path: object) -> bool:
        return path in self.inputs.path_index()

    def __iter__(self) -> Iterator[str]:
        return iter(self.inputs.paths())

    def __len__(self) -> int:
        return len(self.inputs)


def _entry(row: dict[str, Any]) -> InputEntry:
    """A record entry of a row of the inputs' table."""
    entry = {name: row[name] for name in COLUMNS[:10]}
    entry["bands"] = json.loads(entry["bands"]) if entry["bands"] else []
    entry["scaling"] = json.loads(entry["scaling"]) if entry["scaling"] else None
    return InputEntry(**entry)  # the table's columns are the entry's keys


class InputDates(Mapping[str, list]):
    """Each input's ``[date, where it was read]`` by path, read from its inputs' entries."""

    def __init__(self, inputs: SourceInputs | TableInputs) -> None:
        self.inputs = inputs
        self._index: pd.Index | None = None

    def __len__(self) -> int:
        return len(self.inputs)

    def __iter__(self) -> Iterator[str]:
        if isinstance(self.inputs, TableInputs):
            yield from self.inputs.paths()
        else:
            yield from (entry["path"] for entry in self.inputs)

    def __getitem__(self, path: str) -> list:
        if self._index is None:  # the paths indexed on the first lookup (a table's own index), not before
            self._index = self.inputs.path_index() if isinstance(self.inputs, TableInputs) else pd.Index(list(self))
        return self.inputs.date_entry(first_position(self._index, path))

    def values(self):
        """The entries' ``[date, where]``, in order."""
        if isinstance(self.inputs, TableInputs):
            table = self.inputs.table.select(["date", "date_from"])
            return [[row["date"], row["date_from"]] for row in table.to_pylist()]
        return [self.inputs.date_entry(i) for i in range(len(self.inputs))]


def is_table(inputs: Sequence[InputEntry]) -> bool:
    """Whether a record's inputs are written as a table of their own."""
    return not isinstance(inputs, list) and len(inputs) > INLINE_INPUTS


def listed_inputs(inputs: Sequence[InputEntry]) -> Sequence[InputEntry]:
    """The inputs a summary lists.

    All of a record's own, the first :data:`LISTED_INPUTS` of a table of their own.
    """
    return inputs[:LISTED_INPUTS] if is_table(inputs) else inputs


def write_inputs(inputs: SourceInputs | TableInputs, path: str | os.PathLike) -> Path:
    """Write the inputs' table to ``path`` (Parquet), a batch at a time."""
    target = Path(path)
    with pq.ParquetWriter(target, _SCHEMA) as writer:
        for batch in inputs.batches():
            writer.write_batch(batch)
    return target


def table_frames(inputs: Sequence[InputEntry]) -> Iterator[pd.DataFrame] | None:
    """The inputs' table a batch at a time when they are a table of their own, else ``None``."""
    if not is_table(inputs):
        return None
    assert isinstance(inputs, (SourceInputs, TableInputs))
    return (batch.to_pandas() for batch in inputs.batches())


def inputs_frames(path: str | os.PathLike) -> Iterator[pd.DataFrame]:
    """The inputs' table written at ``path``, a batch at a time (for a GeoPackage's layer)."""
    for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH):
        yield batch.to_pandas()
