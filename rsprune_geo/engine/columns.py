"""What the driver holds of each tile.

A few tens of bytes in flat arrays, indexed by the tile's position in the run (see
:mod:`rsprune_geo.reading.grid`). The rows themselves (footprints, band statistics, reasons as text)
live in the tile table's parts; decisions are taken on these columns and written back to the parts.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from ..runs.vocabulary import ABSENT, Reason, Status, status_code


@dataclass
class TileColumns:
    """Per-tile columns, one element per position.

    ``status`` is :data:`~rsprune_geo.runs.vocabulary.ABSENT` where a position is not a tile.

    ``status`` and ``reason`` as one-byte codes (:func:`~rsprune_geo.runs.vocabulary.status_code`,
    :class:`~rsprune_geo.runs.vocabulary.Reason`), ``entropy`` (bits), ``cell`` the ground cell (row, col;
    -1 without one), ``cluster`` and ``distance`` (stage 2; -1 and NaN when not embedded), the
    ranks written to the table (``entropy_rank``, ``cluster_rank``, ``scene_rank``), and
    ``date_code``, an index into ``dates`` (-1: unknown).
    """

    status: np.ndarray
    reason: np.ndarray
    entropy: np.ndarray
    cell: np.ndarray
    cluster: np.ndarray
    distance: np.ndarray
    entropy_rank: np.ndarray
    cluster_rank: np.ndarray
    scene_rank: np.ndarray
    date_code: np.ndarray
    dates: np.ndarray

    @classmethod
    def empty(cls, n: int, dates: np.ndarray | None = None) -> TileColumns:
        """Columns for ``n`` positions, none of them a tile yet."""
        return cls(
            status=np.full(n, ABSENT, dtype=np.uint8), reason=np.zeros(n, dtype=np.uint8),
            entropy=np.zeros(n, dtype=np.float64), cell=np.full((n, 2), -1, dtype=np.int32),
            cluster=np.full(n, -1, dtype=np.int32), distance=np.full(n, np.nan, dtype=np.float32),
            entropy_rank=np.zeros(n, dtype=np.int32), cluster_rank=np.full(n, -1, dtype=np.int32),
            scene_rank=np.zeros(n, dtype=np.int32), date_code=np.full(n, -1, dtype=np.int32),
            dates=np.asarray(dates if dates is not None else [], dtype="datetime64[ns]"),
        )

    def __len__(self) -> int:
        return int(self.status.size)

    @property
    def nbytes(self) -> int:
        """Bytes the columns hold."""
        return sum(getattr(self, f.name).nbytes for f in fields(self))

    def where(self, *statuses: Status) -> np.ndarray:
        """Positions of the tiles with any of ``statuses`` (int32 while positions fit: half the bytes)."""
        codes = np.array([status_code(s) for s in statuses], dtype=np.uint8)
        positions = np.flatnonzero(np.isin(self.status, codes))
        return positions.astype(np.int32) if len(self) < 1 << 31 else positions

    def mark(self, positions: np.ndarray, status: Status, reason: Reason = Reason.NONE) -> None:
        """Give tiles a status and reason."""
        self.status[positions] = status_code(status)
        self.reason[positions] = reason

    def tiles_with_data(self) -> int:
        """How many tiles have data.

        Every tile stage 1 did not drop as ``nodata`` (a nodata collar is not part of the data, so fractions
        never count it).
        """
        return int(((self.status != ABSENT) & (self.status != status_code(Status.NODATA))).sum())

    def counts(self) -> dict[str, int]:
        """Tiles per status, in the order of :class:`~rsprune_geo.runs.vocabulary.Status` (those with any)."""
        found = np.bincount(self.status[self.status != ABSENT], minlength=len(Status))
        return {s.value: int(found[i]) for i, s in enumerate(Status) if found[i]}

    def cells_count(self) -> int:
        """How many distinct ground cells the tiles fall in."""
        key = self.cell[:, 0].astype(np.int64) << 32
        key |= self.cell[:, 1].astype(np.int64) & 0xFFFFFFFF
        key = key[(self.status != ABSENT) & (self.cell[:, 0] >= 0)]
        key.sort()
        return int(key.size and 1 + np.count_nonzero(np.diff(key)))

    def dates_of(self, positions: np.ndarray) -> np.ndarray:
        """The acquisition dates of tiles (NaT: unknown)."""
        codes = self.date_code[positions]
        out = np.full(codes.size, np.datetime64("NaT"), dtype="datetime64[ns]")
        known = codes >= 0
        out[known] = self.dates[codes[known]]
        return out

    def several_dates(self) -> bool:
        """Whether the tiles' dates differ (a known date and another, or an unknown one).

        When there is one date for all, a selection needs none of them.
        """
        return bool(np.unique(self.dates).size > 1)
