"""The run record.

What a run did, typed in parts (stage 1, stage 2, ground), written as ``run.json`` or a GeoPackage
layer and read back, older files included; it rebuilds the run's ``RunConfig`` and reopens its
sources.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import typing
from collections.abc import Mapping, Sequence
from copy import deepcopy
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Self, cast

import pandas as pd

from ..choices import Choice, ClusteringMode, MetricMode, QuotaMode, Runtime, Stage1Rule
from ..config import RunConfig
from ..errors import InputError, SkippedInput
from ..jsontypes import JsonObject
from ..reading.pixels import Scaling
from ..reading.remote import REDACTED
from ..reading.sources import RasterSource, open_source
from .inputs import INPUTS_FILE, INPUTS_LAYER, InputDates, InputEntry, SourceInputs, TableInputs, is_table, write_inputs


class RecordPart:
    """A typed part of the run record (a dataclass) that writes and reads itself as JSON-able data.

    Reading tolerates older run files: a key they lack takes its field's default (or the value
    older versions used, :attr:`LEGACY`), a key this version does not know is dropped. A choice
    is read back as its enum (:class:`~rsprune_geo.choices.Choice`) and written as its word.
    """

    #: Values of fields that older run files lack, where older versions behaved otherwise than
    #: today's default.
    LEGACY: ClassVar[Mapping[str, object]] = {}

    @classmethod
    def from_dict(cls, data: JsonObject | None) -> Self | None:
        """The part stored as ``data`` (``None`` stays ``None``)."""
        if data is None:
            return None
        names = {f.name for f in fields(cast(Any, cls))}
        values = {**cls.LEGACY, **{k: v for k, v in data.items() if k in names}}
        for name, choice in cls._choices().items():
            if values.get(name) is not None:
                values[name] = choice.parse(values[name], name)
        return cls(**values)

    @classmethod
    def _choices(cls) -> dict[str, type[Choice]]:
        """The fields that hold a choice, and its enum."""
        hints = typing.get_type_hints(cls)
        return {f.name: hint for f in fields(cast(Any, cls))
                if isinstance(hint := hints[f.name], type) and issubclass(hint, Choice)}

    def to_dict(self) -> JsonObject:
        """The part as JSON-able data (choices as their words)."""
        out = asdict(cast(Any, self))
        return {k: v.value if isinstance(v, Choice) else v for k, v in out.items()}


@dataclass
class Stage1Record(RecordPart):
    """What stage 1 did.

    Its rule, the tiles with data its fractions count, the count its top-fraction cut keeps, and (bank
    rule) the entropy floor, each scene's floor and the z behind them.
    """

    rule: Stage1Rule = Stage1Rule.PAPER
    tiles_with_data: int = 0
    stage1_count: int = 0
    floor_bits: float | None = None
    floor_per_scene: dict[str, float] | None = None
    plausibility_z: float | None = None


@dataclass
class Stage2Record(RecordPart):
    """What stage 2 did.

    The encoder and where it ran, the prior bank and its centroids, the clustering, the stage-1
    candidates and how many passed, the selection's settings, budget and outcome.
    """

    LEGACY: ClassVar[Mapping[str, object]] = {"encoder_runtime": Runtime.TORCH, "quota_by": QuotaMode.CENTROID}

    encoder: str = ""
    encoder_key: str = ""
    encoder_runtime: Runtime = Runtime.TORCH
    metric: MetricMode = MetricMode.RAW
    views: int = 1
    input_size: int = 0  # the encoder's input side (px); 0 in records written before it was kept
    onnxruntime: str | None = None
    weights: str | None = None
    prior_bank: list[str] = field(default_factory=list)
    prior_bank_fingerprint: str = ""
    prior_bank_profile: bool = False
    prior_bank_images: int = 0
    n_classes: int = 0
    n_centroids: int = 0
    bank_images_per_class: dict[str, int] = field(default_factory=dict)
    bank_samples: int | None = None
    bank_gsd: float | None = None
    centroids_per_class: dict[str, int] = field(default_factory=dict)
    k_per_class: int | None = None
    images_per_centroid: int | None = None
    k: int | None = None
    clustering: ClusteringMode = ClusteringMode.PRIOR
    stage1_rule: Stage1Rule = Stage1Rule.PAPER
    stage1_candidates: int = 0
    stage1_passed: int = 0
    stage1_decides: bool = False
    quota_by: QuotaMode = QuotaMode.SCENE
    uniformity: float = 1.0
    spread: int = 1
    dedup: float | None = None
    budget: int = 0
    kept: int = 0
    cache_dir: str | None = None
    bank_skipped: list[SkippedInput] = field(default_factory=list)
    extends: str | None = None
    extends_kept: int = 0


@dataclass
class GroundRecord(RecordPart):
    """The ground grid common to every raster, and the cells the tiles fall in.

    The grid's cell size and origin are in the output CRS. Each input's date is kept with where it was
    read (``(date, how)``).
    """

    cell_size: float | None = None
    origin: list[float] | None = None
    cells: int = 0
    dates: Mapping[str, list[str | None]] = field(default_factory=dict)

    def to_dict(self) -> JsonObject:
        """The part as JSON-able data, its ``dates`` (an item per input) shared, not copied.

        The dates of inputs written as a table of their own are that table's (see :class:`RunRecord`).
        """
        out = {f.name: deepcopy(getattr(self, f.name)) for f in fields(self) if f.name != "dates"}
        dates = self.dates
        if isinstance(dates, InputDates) and is_table(dates.inputs):
            out["dates"] = {"table": INPUTS_LAYER}
        else:
            out["dates"] = dates if isinstance(dates, dict) else dict(dates)
        return out

    def dated(self) -> list[str]:
        """The known dates of the inputs (ISO text)."""
        return [when for when, _ in self.dates.values() if when]


#: The record's lists of plain JSON items, shared (not copied) by :meth:`RunRecord.to_dict`.
_SHARED_LISTS = ("inputs", "skipped", "warnings")

#: The record's file in a run folder.
RUN_RECORD = "run.json"

#: The run record's format: a reader refuses a record of a newer format (a record without the
#: field is of format 1).
RECORD_FORMAT = 1


#: Run parameters that older run files lack, with the value older versions used when it
#: differs from today's default (quotas were shared among centroids before ``quota_by``).
LEGACY_PARAMETERS: dict[str, str] = {"quota_by": "centroid", "metric": "raw"}


@dataclass
class RunRecord:
    """Everything needed to reproduce and audit a run: the ``runs`` table's row.

    It writes itself (:meth:`to_table`) and reads itself back (:meth:`from_table`,
    :meth:`read`), rebuilds the run's configuration (:meth:`config`) and reopens its inputs with
    their bands and grey-level stretch (:meth:`sources`).

    Attributes:
        run_id: the run's id.
        created: when the run started (UTC, ISO 8601).
        parameters: the run's parameters.
        versions: the versions of the package and the libraries that decide results.
        crs: the output CRS.
        inputs: each input with its fingerprint, bands, stretch and date.
        counts: tiles by status.
        timings: seconds by stage.
        stage1: what stage 1 did (its rule, thresholds and floor).
        stage2: what stage 2 did (its encoder, bank, metric and selection).
        skipped: inputs the run could not use, each with why.
        warnings: the run's warnings, as logged.
        reselected_from: the run this one was re-selected from, if any.
        ground: the ground grid common to every raster.
        record_format: the version of this record's format.
    """

    run_id: str = ""
    created: str = ""
    parameters: RunConfig = field(default_factory=RunConfig)
    versions: dict[str, str] = field(default_factory=dict)
    crs: str | None = None
    inputs: Sequence[InputEntry] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    stage1: Stage1Record | None = None
    stage2: Stage2Record | None = None
    skipped: list[SkippedInput] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    reselected_from: str | None = None
    ground: GroundRecord | None = None
    record_format: int = RECORD_FORMAT

    @staticmethod
    def now() -> tuple[str, str]:
        """A fresh ``(run_id, created)`` pair in UTC."""
        stamp = _dt.datetime.now(_dt.UTC)
        return stamp.strftime("%Y%m%dT%H%M%S.%fZ"), stamp.isoformat(timespec="seconds")

    def to_dict(self) -> JsonObject:
        """The record as JSON-able data.

        Its lists of plain items (``inputs``, ``skipped``, ``warnings``) are the record's own, not copies: a
        folder of chips is a run of a million inputs, and a deep copy of them doubled a run's peak as its
        record was written. Inputs beyond :data:`~rsprune_geo.runs.inputs.INLINE_INPUTS` are written as a
        table of their own (:meth:`write_json`; a GeoPackage's ``inputs`` layer), and the record says so.
        """
        out: JsonObject = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "inputs" and not isinstance(value, list):
                out[f.name] = {"table": INPUTS_LAYER, "count": len(value)} if is_table(value) else list(value)
            elif f.name in _SHARED_LISTS:
                out[f.name] = value
            elif isinstance(value, (RecordPart, RunConfig)):
                out[f.name] = value.to_dict()
            else:
                out[f.name] = deepcopy(value)
        return out

    def to_table(self) -> pd.DataFrame:
        """The ``runs`` table row: scalars as they are, structures as JSON text."""
        row = {key: (json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value)
               for key, value in self.to_dict().items()}
        return pd.DataFrame([row])

    @classmethod
    def from_dict(cls, data: JsonObject, where: str | os.PathLike | None = None) -> RunRecord:
        """The record stored as JSON-able ``data`` (keys this version does not know are dropped).

        Inputs written as a table of their own are read from the run file ``where``.
        """
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        for key in ("skipped", "warnings", "inputs"):
            if values.get(key) is None:
                values[key] = []
        table = isinstance(values["inputs"], dict)
        if table:
            if where is None:
                raise InputError("the run's inputs are a table of their own: read the record from its run file")
            values["inputs"] = TableInputs.read(where)
        ground = values.get("ground")
        if table and isinstance(ground, dict) and isinstance(ground.get("dates"), dict) and "table" in ground["dates"]:
            ground = {**ground, "dates": {}}
        values["parameters"] = RunConfig.from_dict(values.get("parameters") or {}, LEGACY_PARAMETERS)
        values["stage1"] = Stage1Record.from_dict(values.get("stage1"))
        values["stage2"] = Stage2Record.from_dict(values.get("stage2"))
        values["ground"] = GroundRecord.from_dict(ground)
        if table and values["ground"] is not None:
            values["ground"].dates = InputDates(values["inputs"])
        return cls(**values)

    @classmethod
    def from_table(cls, runs: pd.DataFrame, where: str | os.PathLike | None = None) -> RunRecord:
        """The last row of a ``runs`` table, decoded.

        ``where``: the GeoPackage, for inputs written as a layer of their own.
        """
        values: JsonObject = {}
        for key, value in runs.iloc[-1].to_dict().items():
            if isinstance(value, str) and value[:1] in "{[":
                try:
                    value = json.loads(value)
                except json.JSONDecodeError:
                    pass
            if isinstance(value, float) and pd.isna(value):
                value = None
            values[key] = value
        return cls.from_dict(values, where)

    @classmethod
    def read(cls, path: str | os.PathLike) -> RunRecord:
        """The record of the run stored in ``path``.

        A GeoPackage (its ``runs`` layer) or a run folder (its ``run.json``).
        """
        import pyogrio

        if os.path.isdir(path):
            return cls.from_dict(json.loads((Path(path) / RUN_RECORD).read_text(encoding="utf-8")), path)
        return cls.from_table(pyogrio.read_dataframe(path, layer="runs"), path)

    def write_json(self, folder: str | os.PathLike) -> Path:
        """Write the record as a run folder's ``run.json`` (atomically).

        And its inputs' ``inputs.parquet`` when they are a table of their own.
        """
        if is_table(self.inputs):
            assert isinstance(self.inputs, (SourceInputs, TableInputs))
            write_inputs(self.inputs, Path(folder) / INPUTS_FILE)
        target = Path(folder) / RUN_RECORD
        tmp = target.with_name(f".{target.name}.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:  # streamed: the text of a million inputs is never whole
            json.dump(self.to_dict(), fh, indent=1, sort_keys=True, default=str)
        os.replace(tmp, target)
        return target

    def config(self, **overrides: Any) -> RunConfig:
        """The run's :class:`~rsprune_geo.config.RunConfig`, with ``overrides`` applied.

        Parameters an older run file lacked took the value that version used when it was read
        (:data:`LEGACY_PARAMETERS`), else today's default.
        """
        return replace(self.parameters, **overrides)

    @property
    def input_paths(self) -> list[str]:
        """The paths of the run's inputs, in order."""
        if isinstance(self.inputs, TableInputs):
            return self.inputs.paths()
        return [item["path"] for item in self.inputs]

    def has_input(self, path: str) -> bool:
        """Whether ``path`` is one of the run's inputs."""
        return path in self._inputs_by_path()

    def input(self, path: str) -> InputEntry:
        """The record of one input by path."""
        return self._inputs_by_path()[path]

    def _inputs_by_path(self) -> Mapping[str, InputEntry]:
        """The inputs by path.

        Indexed once (a folder of chips is a run of a million inputs, and exports and loaders look each of
        theirs up); indexed again if ``inputs`` is replaced.
        """
        if isinstance(self.inputs, TableInputs):
            return self.inputs.by_path()
        cached = self.__dict__.get("_by_path")
        if cached is None or cached[0] is not self.inputs or cached[1] != len(self.inputs):
            index: dict[str, InputEntry] = {}
            for item in self.inputs:
                index.setdefault(item["path"], item)
            cached = self.__dict__["_by_path"] = (self.inputs, len(self.inputs), index)
        return cached[2]

    def __getstate__(self) -> dict[str, object]:
        """Pickled without the index of its inputs (rebuilt where it is needed)."""
        return {k: v for k, v in self.__dict__.items() if k != "_by_path"}

    def source(self, path: str, check: bool = False) -> tuple[RasterSource, Scaling]:
        """Reopen the input ``path`` with the run's bands and grey-level stretch.

        With ``check``, refuse a file that changed since the run.
        """
        item = self.input(path)
        if REDACTED in item["path"]:
            raise InputError(f"{path}: the run's input URL carried credentials, which are never stored; give them "
                             "through GDAL's environment (e.g. GDAL_HTTP_AUTH, AWS_SECRET_ACCESS_KEY) and run again")
        source = open_source(item["path"], bands=tuple(item["bands"]), allow_no_crs=True)
        if check and source.fingerprint != item["fingerprint"]:
            raise InputError(f"{path}: the file changed since the run (fingerprint differs); run the pipeline again")
        stretch = item.get("scaling")
        scaling = Scaling(tuple(stretch["low"]), tuple(stretch["high"])) if stretch else Scaling()
        return source, scaling

    def sources(self) -> dict[str, tuple[RasterSource, Scaling]]:
        """Every input reopened (see :meth:`source`), by path."""
        return {path: self.source(path) for path in self.input_paths}

    @property
    def seed(self) -> int:
        """The run's seed, stored once, in its parameters."""
        return self.parameters.seed

    def updated(self, **changes: Any) -> RunRecord:
        """A copy with ``changes`` (e.g. a re-selection's parameters and counts)."""
        return replace(self, **changes)
