"""Progress reporting: the core calls one typed callback; the faces draw it (tqdm, JSON, QGIS)."""

from __future__ import annotations

from typing import Protocol

#: The stages a run reports, in order, with the words a progress bar shows.
STAGES: dict[str, str] = {
    "tiling": "tiling",
    "stage1": "windows: read once, scored (and encoded)",
    "prior_bank": "prior bank",
    "encoding": "encoding tiles",
    "selection": "selection",
    "writing": "writing",
    "evaluation": "evaluation",
    "export": "exporting chips",
    "report": "report plots",
    "gallery": "gallery thumbnails",
}


class ProgressCallback(Protocol):
    """Called as work moves: ``done`` of ``total`` units of ``stage`` (see :data:`STAGES`).

    A callback may raise (e.g. to cancel from a GUI); the run stops there and writes nothing.
    """

    def __call__(self, stage: str, done: int, total: int) -> None:
        """Report ``done`` of ``total`` units of ``stage``."""


def no_progress(stage: str, done: int, total: int) -> None:
    """The default callback: report nothing."""
