"""Figures outside pyplot's state, for the report, the galleries and notebooks."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..errors import require_extra

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

#: The default size of a report figure, in inches.
FIGSIZE = (8, 4.5)


def new_figure(figsize: tuple[float, float] = FIGSIZE, dpi: int = 100) -> Figure:
    """A Figure outside pyplot's state (nothing global changes; notebooks display it as returned)."""
    require_extra("matplotlib", "plots", "plotting")
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, dpi=dpi)


def saved(fig: Figure, path: str | os.PathLike | None) -> Figure:
    """``fig``, written to ``path`` first when one is given."""
    if path is not None:
        fig.savefig(path)
    return fig
