"""The run's vocabulary.

Tile statuses and their colours, why a tile has its status (codes and texts), and the columns of
every layer.

Everything after a run (re-selection, evaluation, export, report, maps, the QGIS plugin) reads
the run's file through these definitions, so a status or a column has one home. This module
imports no raster library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

import numpy as np
import pandas as pd

from ..choices import CellPeriod
from ..errors import counted


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
    """Why a tile has its status, as a one-byte code.

    :func:`reasons` writes the ``reason`` text from the code, the tile's own figures and the run's
    (:class:`ReasonContext`).
    """

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
    """The run's figures a ``reason`` text quotes.

    Thresholds, the bank's floor, stage 1's cut, the selection's quotas (by cluster and scene) and
    per-cell cap, and each cluster's scene.
    """

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
    period: CellPeriod = CellPeriod.ALL
    budget: int | None = None


def reasons(codes: np.ndarray, context: ReasonContext, entropy: np.ndarray, nodata_fraction: np.ndarray,
            cluster: np.ndarray | None = None, ground_cell: np.ndarray | None = None) -> np.ndarray:
    """The ``reason`` text of tiles (an object array) from their :class:`Reason` codes and figures."""
    out = np.full(len(codes), "", dtype=object)
    c = context
    period = "" if c.period is CellPeriod.ALL else f" in its {c.period}"
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
            out[i] = ("its pixels cannot be read (the file is truncated or corrupt, or not what its STAC item says: "
                      "see the run's warnings)")
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
