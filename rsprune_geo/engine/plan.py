"""The run's plan: what both stages work over and where the work runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rasterio.crs import CRS

from ..choices import Scheduler
from ..reading.grid import RunGrid
from ..reading.ground import GroundGrid
from ..reading.sources import RasterSource


@dataclass
class RunPlan:
    """What both stages work over.

    The tile ``grid`` (with its sources' dates), the output ``crs`` and ``ground`` grid, the staged tile
    table's ``parts`` folder, where the work runs (the Dask ``client``, else the local ``scheduler``)
    and whether source URLs are written without credentials (``redact``).
    """

    grid: RunGrid
    crs: CRS | None
    ground: GroundGrid
    parts: str | None
    client: Any | None = None
    redact: bool = False
    scheduler: Scheduler = Scheduler.THREADS

    @property
    def sources(self) -> Sequence[RasterSource]:
        """The run's sources, in order (a run of chips: their table, not a list)."""
        if self.grid.chips is not None:
            return self.grid.chips.sources
        return [g.source for g in self.grid.sources]
