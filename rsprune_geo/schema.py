"""The run's schema: tile statuses and their colours, why a tile has its status, the columns of
every layer, the run record.

Everything after a run (re-selection, evaluation, export, report, maps, the QGIS plugin) reads
the run's file through these definitions, so a status, a column or a record field has one home.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Mapping, Sequence
from copy import deepcopy
from dataclasses import asdict, dataclass, field, fields, replace
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import Any, ClassVar, Self, cast

import numpy as np
import pandas as pd

from .config import RunConfig
from .errors import InputError, counted
from .reading.pixels import REDACTED, Scaling
from .reading.sources import RasterSource, open_source
from .runinputs import INPUTS_FILE, INPUTS_LAYER, InputDates, SourceInputs, TableInputs, is_table, write_inputs


class Status(StrEnum):
    """A tile's decision (the ``status`` column). Members are strings: ``Status.KEPT == "kept"``."""

    KEPT = "kept"
    NOT_SELECTED = "not_selected"
    DUPLICATE = "duplicate"
    LOW_INFORMATION = "low_information"
    NODATA = "nodata"

    @property
    def color(self) -> tuple[int, int, int]:
        """RGB (0–255) of this status in the QGIS style, the PNG map and the report."""
        return _COLORS[self]

    @property
    def description(self) -> str:
        """What the status means, for legends and documentation."""
        return _DESCRIPTIONS[self]

    @property
    def pruned(self) -> bool:
        """Whether a tile with this status is left out of the kept subset."""
        return self is not Status.KEPT


_COLORS = {
    Status.KEPT: (26, 152, 80),
    Status.NOT_SELECTED: (69, 117, 180),
    Status.DUPLICATE: (152, 78, 163),
    Status.LOW_INFORMATION: (244, 109, 67),
    Status.NODATA: (120, 120, 120),
}
_DESCRIPTIONS = {
    Status.KEPT: "selected for training",
    Status.NOT_SELECTED: "passed stage 1, beyond its cluster's quota",
    Status.DUPLICATE: "near-duplicate of a tile nearer its centroid",
    Status.LOW_INFORMATION: "under the stage-1 entropy floor or cut",
    Status.NODATA: "nodata fraction over the limit, or pixels that cannot be read",
}

#: Colour of each status by its string value (for code that holds plain strings).
STATUS_COLORS: dict[str, tuple[int, int, int]] = {s.value: s.color for s in Status}

#: Statuses of tiles that passed stage 1 and reached stage 2's selection.
STAGE2_POOL = (Status.KEPT, Status.NOT_SELECTED, Status.DUPLICATE)

#: Each status as a one-byte code (its position in :class:`Status`), for columns held per tile;
#: :data:`ABSENT` marks a grid position that is not a tile (outside the area of interest).
STATUS_CODE: dict[Status, int] = {s: i for i, s in enumerate(Status)}
ABSENT = 255


def status_code(status: Status | str) -> int:
    """The one-byte code of a status."""
    return STATUS_CODE[Status(status)]


def status_names(codes: np.ndarray) -> np.ndarray:
    """The statuses (strings, an object array) of one-byte codes."""
    names = np.array([s.value for s in Status] + [""], dtype=object)
    return names[np.minimum(np.asarray(codes, dtype=np.int64), len(Status))]


class Reason(IntEnum):
    """Why a tile has its status, as a one-byte code; :func:`reasons` writes the ``reason`` text
    from the code, the tile's own figures and the run's (:class:`ReasonContext`)."""

    NONE = 0
    NODATA = 1
    ENTROPY_MIN = 2
    FLOOR = 3
    STAGE1_CUT = 4
    SCENE_CUT = 5
    DUPLICATE = 6
    QUOTA = 7
    CELL_FULL = 8
    ENTROPY_TOP = 9
    #: the window's pixels could not be read (a file truncated or corrupt, a server gone)
    UNREADABLE = 10
    #: the tile keeps the reason it had (a re-selection that did not decide it again)
    UNCHANGED = 255


@dataclass
class ReasonContext:
    """The run's figures a ``reason`` text quotes: thresholds, the bank's floor, stage 1's cut,
    the selection's quotas (by cluster and scene) and per-cell cap, and each cluster's scene."""

    max_nodata: float = 0.25
    entropy_min: float | None = None
    floor: float | None = None
    cut_bits: float | None = None
    cut_count: int | None = None
    scene_quota: dict[str, int] = field(default_factory=dict)
    dedup: float | None = None
    cluster_quota: list[int] = field(default_factory=list)
    cluster_scene: list[str] = field(default_factory=list)
    max_per_cell: int | None = None
    period: str = "all"
    budget: int | None = None


def reasons(codes: np.ndarray, context: ReasonContext, entropy: np.ndarray, nodata_fraction: np.ndarray,
            cluster: np.ndarray | None = None, ground_cell: np.ndarray | None = None) -> np.ndarray:
    """The ``reason`` text of tiles (an object array) from their :class:`Reason` codes and figures."""
    out = np.full(len(codes), "", dtype=object)
    c = context
    period = "" if c.period == "all" else f" in its {c.period}"
    for i, code in enumerate(np.asarray(codes).tolist()):
        if code == Reason.NONE:
            continue
        e = float(entropy[i])
        if code == Reason.NODATA:
            out[i] = f"nodata fraction {float(nodata_fraction[i]):.2f} > {c.max_nodata:.2f}"
        elif code == Reason.ENTROPY_MIN:
            out[i] = f"entropy {e:.2f} < {c.entropy_min:.2f} bits"
        elif code == Reason.FLOOR:
            out[i] = f"entropy {e:.2f} bits: below every prior-bank scene (floor {c.floor:.2f} bits)"
        elif code == Reason.STAGE1_CUT:
            out[i] = f"entropy {e:.2f} bits under the stage-1 cut ({c.cut_bits:.2f} bits, top {c.cut_count})"
        elif code == Reason.SCENE_CUT:
            scene = c.cluster_scene[int(cluster[i])] if cluster is not None else ""
            out[i] = f"entropy {e:.2f} bits under the stage-1 cut within scene {scene} (top {c.scene_quota[scene]})"
        elif code == Reason.DUPLICATE:
            out[i] = f"near-duplicate (cosine >= {c.dedup}) of a tile nearer its centroid"
        elif code == Reason.QUOTA:
            k = int(cluster[i]) if cluster is not None else -1
            out[i] = f"beyond the quota of cluster {k} ({c.cluster_quota[k]})"
        elif code == Reason.CELL_FULL:
            cell = ground_cell[i] if ground_cell is not None else ""
            held = counted(c.max_per_cell or 0, "kept tile")
            out[i] = f"ground cell {cell} already holds {held}{period} (max per cell)"
        elif code == Reason.ENTROPY_TOP:
            out[i] = f"entropy under the stage-1 cut (top {c.budget})"
        elif code == Reason.UNREADABLE:
            out[i] = "its pixels cannot be read (the file is truncated or corrupt: see the run's warnings)"
    return out

#: The columns tiling produces, in order (the geometry follows).
TILING_COLUMNS = ("tile_id", "source", "row_off", "col_off", "width", "height")

#: Columns of the ``tiles`` layer (besides the geometry) and what they hold.
TILE_COLUMNS: dict[str, str] = {
    "tile_id": "stable id from the source's key and the tile's row and column",
    "source": "path of the raster the tile was cut from",
    "row_off": "pixel row of the window's top edge",
    "col_off": "pixel column of the window's left edge",
    "width": "window width in pixels",
    "height": "window height in pixels",
    "entropy": "Shannon entropy (bits) of the grey-level histogram of valid pixels",
    "nodata_fraction": "share of the window's pixels without data",
    "entropy_rank": "rank by entropy among the tiles over stage 1's floors (1 = highest; 0 = not ranked)",
    "status": "the decision: one of " + ", ".join(s.value for s in Status),
    "reason": "why the tile has its status (empty for kept tiles)",
    "cluster": "stage 2: the tile's centroid (-1 when not embedded)",
    "scene": "stage 2: the prior-bank scene of the tile's centroid",
    "centroid_distance": "stage 2: cosine distance to the centroid",
    "cluster_rank": "stage 2: order of selection within the cluster (-1 when not ranked)",
    "scene_entropy_rank": "stage 2, bank rule: rank by entropy within the tile's scene (0 = not ranked)",
    "ground_cell": "the tile's cell in a grid common to all rasters: tiles of overlapping rasters over the same "
                   "ground share it (empty without a CRS)",
    "date": "acquisition date of the tile's raster (file name pattern, GDAL metadata or STAC item; empty when "
            "unknown)",
}

#: Columns of the ``clusters`` layer.
CLUSTER_COLUMNS: dict[str, str] = {
    "cluster": "centroid id",
    "scene": "the prior-bank scene the centroid was fitted on",
    "purity": "share of the centroid's bank members of its scene",
    "bank_members": "prior-bank images assigned to the centroid",
    "size": "candidate tiles assigned to the centroid",
    "duplicates": "near-duplicates found among them",
    "quota": "tiles the selection may keep from the centroid",
    "kept": "tiles kept",
}


def status_counts(statuses: Any) -> dict[str, int]:
    """Tiles per status as ``{value: count}`` (plain strings, for records and events)."""
    return {str(k): int(v) for k, v in pd.Series(statuses).value_counts().items()}


class RecordPart:
    """A typed part of the run record (a dataclass) that writes and reads itself as JSON-able data.

    Reading tolerates older run files: a key they lack takes its field's default (or the value
    older versions used, :attr:`LEGACY`), a key this version does not know is dropped.
    """

    #: Values of fields that older run files lack, where older versions behaved otherwise than
    #: today's default.
    LEGACY: ClassVar[dict[str, Any]] = {}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Self | None:
        """The part stored as ``data`` (``None`` stays ``None``)."""
        if data is None:
            return None
        names = {f.name for f in fields(cast(Any, cls))}
        values = {**cls.LEGACY, **{k: v for k, v in data.items() if k in names}}
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The part as JSON-able data."""
        return asdict(cast(Any, self))


@dataclass
class Stage1Record(RecordPart):
    """What stage 1 did: its rule, the tiles with data its fractions count, the count its
    top-fraction cut keeps, and (bank rule) the entropy floor, each scene's floor and the z
    behind them."""

    rule: str = "paper"
    tiles_with_data: int = 0
    stage1_count: int = 0
    floor_bits: float | None = None
    floor_per_scene: dict[str, float] | None = None
    plausibility_z: float | None = None


@dataclass
class Stage2Record(RecordPart):
    """What stage 2 did: the encoder and where it ran, the prior bank and its centroids, the
    clustering, the stage-1 candidates and how many passed, the selection's settings, budget and
    outcome."""

    LEGACY: ClassVar[dict[str, Any]] = {"encoder_runtime": "torch", "quota_by": "centroid"}

    encoder: str = ""
    encoder_key: str = ""
    encoder_runtime: str = "torch"
    metric: str = "raw"
    views: int = 1
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
    clustering: str = "prior"
    stage1_rule: str = "paper"
    stage1_candidates: int = 0
    stage1_passed: int = 0
    stage1_decides: bool = False
    quota_by: str = "scene"
    uniformity: float = 1.0
    spread: int = 1
    dedup: float | None = None
    budget: int = 0
    kept: int = 0
    cache_dir: str | None = None
    seed: int = 0
    bank_skipped: list[dict[str, Any]] = field(default_factory=list)
    extends: str | None = None
    extends_kept: int = 0


@dataclass
class GroundRecord(RecordPart):
    """The ground grid common to every raster (its cell size and origin, in the output CRS) and
    the cells the tiles fall in; each input's date and where it was read (``(date, how)``)."""

    cell_size: float | None = None
    origin: list[float] | None = None
    cells: int = 0
    dates: Mapping[str, list[str | None]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The part as JSON-able data, its ``dates`` (an item per input) shared, not copied; the
        dates of inputs written as a table of their own are that table's (see :class:`RunRecord`)."""
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
LEGACY_PARAMETERS: dict[str, Any] = {"quota_by": "centroid", "metric": "raw"}


@dataclass
class RunRecord:
    """Everything needed to reproduce and audit a run: the ``runs`` table's row.

    It writes itself (:meth:`to_table`) and reads itself back (:meth:`from_table`,
    :meth:`read`), rebuilds the run's configuration (:meth:`config`) and reopens its inputs with
    their bands and grey-level stretch (:meth:`sources`). Its stage and ground parts are typed
    (:class:`Stage1Record`, :class:`Stage2Record`, :class:`GroundRecord`).
    """

    run_id: str = ""
    created: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    crs: str | None = None
    inputs: Sequence[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    stage1: Stage1Record | None = None
    stage2: Stage2Record | None = None
    skipped: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    reselected_from: str | None = None
    ground: GroundRecord | None = None
    record_format: int = RECORD_FORMAT

    @staticmethod
    def now() -> tuple[str, str]:
        """A fresh ``(run_id, created)`` pair in UTC."""
        stamp = _dt.datetime.now(_dt.UTC)
        return stamp.strftime("%Y%m%dT%H%M%S.%fZ"), stamp.isoformat(timespec="seconds")

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-able data. Its lists of plain items (``inputs``, ``skipped``,
        ``warnings``) are the record's own, not copies: a folder of chips is a run of a million
        inputs, and a deep copy of them doubled a run's peak as its record was written. Inputs
        beyond :data:`~rsprune_geo.runinputs.INLINE_INPUTS` are written as a table of their own
        (:meth:`write_json`; a GeoPackage's ``inputs`` layer), and the record says so."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "inputs" and not isinstance(value, list):
                out[f.name] = {"table": INPUTS_LAYER, "count": len(value)} if is_table(value) else list(value)
            elif f.name in _SHARED_LISTS:
                out[f.name] = value
            elif isinstance(value, RecordPart):
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
    def from_dict(cls, data: dict[str, Any], where: str | os.PathLike | None = None) -> RunRecord:
        """The record stored as JSON-able ``data`` (keys this version does not know are dropped);
        inputs written as a table of their own are read from the run file ``where``."""
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
        values["stage1"] = Stage1Record.from_dict(values.get("stage1"))
        values["stage2"] = Stage2Record.from_dict(values.get("stage2"))
        values["ground"] = GroundRecord.from_dict(ground)
        if table and values["ground"] is not None:
            values["ground"].dates = InputDates(values["inputs"])
        return cls(**values)

    @classmethod
    def from_table(cls, runs: pd.DataFrame, where: str | os.PathLike | None = None) -> RunRecord:
        """The last row of a ``runs`` table, decoded (``where``: the GeoPackage, for inputs
        written as a layer of their own)."""
        values: dict[str, Any] = {}
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
        """The record of the run stored in ``path``: a GeoPackage (its ``runs`` layer) or a run
        folder (its ``run.json``)."""
        import pyogrio

        if os.path.isdir(path):
            return cls.from_dict(json.loads((Path(path) / RUN_RECORD).read_text(encoding="utf-8")), path)
        return cls.from_table(pyogrio.read_dataframe(path, layer="runs"), path)

    def write_json(self, folder: str | os.PathLike) -> Path:
        """Write the record as a run folder's ``run.json`` (atomically), and its inputs'
        ``inputs.parquet`` when they are a table of their own."""
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
        """The run's :class:`~rsprune_geo.config.RunConfig`, with ``overrides`` applied;
        parameters an older run file lacks take the value that version used
        (:data:`LEGACY_PARAMETERS`), else today's default."""
        known = {f.name for f in fields(RunConfig)}
        stored = {**LEGACY_PARAMETERS, **self.parameters}
        params: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in stored.items()
                                  if k in known}
        params.update(overrides)
        return RunConfig(**params)

    @property
    def input_paths(self) -> list[str]:
        """The paths of the run's inputs, in order."""
        if isinstance(self.inputs, TableInputs):
            return self.inputs.paths()
        return [item["path"] for item in self.inputs]

    def has_input(self, path: str) -> bool:
        """Whether ``path`` is one of the run's inputs."""
        return path in self._inputs_by_path()

    def input(self, path: str) -> dict[str, Any]:
        """The record of one input by path."""
        return self._inputs_by_path()[path]

    def _inputs_by_path(self) -> Mapping[str, dict[str, Any]]:
        """The inputs by path, indexed once (a folder of chips is a run of a million inputs, and
        exports and loaders look each of theirs up); indexed again if ``inputs`` is replaced."""
        if isinstance(self.inputs, TableInputs):
            return self.inputs.by_path()
        cached = self.__dict__.get("_by_path")
        if cached is None or cached[0] is not self.inputs or cached[1] != len(self.inputs):
            index: dict[str, dict[str, Any]] = {}
            for item in self.inputs:
                index.setdefault(item["path"], item)
            cached = self.__dict__["_by_path"] = (self.inputs, len(self.inputs), index)
        return cached[2]

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the index of its inputs (rebuilt where it is needed)."""
        return {k: v for k, v in self.__dict__.items() if k != "_by_path"}

    def source(self, path: str, check: bool = False) -> tuple[RasterSource, Scaling]:
        """Reopen the input ``path`` with the run's bands and grey-level stretch; with ``check``,
        refuse a file that changed since the run."""
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

    def updated(self, **changes: Any) -> RunRecord:
        """A copy with ``changes`` (e.g. a re-selection's parameters and counts)."""
        return replace(self, **changes)
