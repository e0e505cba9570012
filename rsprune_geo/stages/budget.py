"""The budget: how many tiles have data, pass stage 1 and are kept.

It also says whether stage 2 runs. It is computed once, from the run's parameters and the tiles with
data.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from ..choices import Stage1Rule
from ..config import PAPER_STAGE1_KEEP
from ..errors import counted
from ..runs.vocabulary import Status

if TYPE_CHECKING:  # pragma: no cover
    from ..config import RunConfig


def tiles_with_data(statuses: np.ndarray) -> int:
    """How many tiles have data.

    Every tile stage 1 did not drop as ``nodata`` (a nodata collar is not part of the data, so fractions
    never count it).
    """
    return int((np.asarray(statuses, dtype=object) != Status.NODATA).sum())


def budget_count(fraction: float, tiles_with_data: int) -> int:
    """``fraction`` of ``tiles_with_data`` as a number of tiles.

    Rounded to nearest, and at least one when there are tiles with data and the fraction is above zero.

    Every count of a run comes from here: the run's budget, the report's stage-1 cut and, mirrored
    in the QGIS plugin (which runs without the package), the dialog's arithmetic.
    """
    rounded = round(fraction * tiles_with_data)
    return max(rounded, 1) if fraction > 0 and tiles_with_data else rounded


ROUNDS_TO_NONE = "rounds to none"


@dataclass(frozen=True)
class Budget:
    """How many tiles each step may keep, as fractions of the tiles with data.

    ``stage1_count`` is what stage 1's top-fraction cut keeps (``stage1_keep``: by entropy over
    the run under the paper's rule, within each scene under the bank's); ``keep_count`` is what
    the run keeps in the end; ``stage2`` says whether stage 2 runs (a prior bank, and either the
    bank rule or a keep below stage 1's). Counts are ``round(fraction × tiles with data)``.
    """

    tiles_with_data: int
    stage1_fraction: float
    keep_fraction: float
    rule: Stage1Rule
    stage2: bool

    @classmethod
    def of(cls, config: RunConfig, tiles_with_data: int = 0) -> Budget:
        """The budget of a run with ``config`` over ``tiles_with_data`` tiles.

        None yet: a plan that :meth:`counted` completes once stage 1 has scored the tiles.
        """
        return cls(int(tiles_with_data), config.stage1_fraction, config.effective_keep, config.stage1_rule,
                   config.stage2)

    def counted(self, tiles_with_data: int) -> Budget:
        """The same budget over ``tiles_with_data`` tiles."""
        return replace(self, tiles_with_data=int(tiles_with_data))

    def count(self, fraction: float) -> int:
        """``fraction`` of the tiles with data, as a number of tiles.

        At least one when there are tiles with data and the fraction is above zero.
        """
        return budget_count(fraction, self.tiles_with_data)

    @property
    def rounded_up(self) -> bool:
        """Whether the keep fraction, times the tiles with data, rounds to none (the run then keeps one tile)."""
        return self.tiles_with_data > 0 and round(self.keep_fraction * self.tiles_with_data) == 0

    def notes(self) -> list[str]:
        """Warnings a user should read about this budget (a keep fraction too small for the run)."""
        if not self.rounded_up:
            return []
        return [f"keeping {self.keep_fraction} of {counted(self.tiles_with_data, 'tile')} with data {ROUNDS_TO_NONE}; "
                "keeping 1 (raise the keep fraction or lower the tile size for more)"]

    @staticmethod
    def is_note(warning: str) -> bool:
        """Whether ``warning`` is one of :meth:`notes` (a re-selection replaces its run's)."""
        return ROUNDS_TO_NONE in warning

    @property
    def stage1_count(self) -> int:
        """Tiles stage 1's cut keeps (stage 1's fraction)."""
        return self.count(self.stage1_fraction)

    @property
    def keep_count(self) -> int:
        """Tiles the run keeps in the end."""
        return self.count(self.keep_fraction)

    @property
    def paper_stage1_count(self) -> int:
        """Tiles the paper's stage 1 keeps (its top 30%), for the baselines."""
        return self.count(PAPER_STAGE1_KEEP)

    @property
    def stage1_share(self) -> float:
        """The fraction stage 1 keeps.

        Its own, or the final one when stage 2 does not run (stage 1 alone then decides).
        """
        return self.stage1_fraction if self.stage2 else self.keep_fraction

    @property
    def stage1_kept(self) -> int:
        """Tiles stage 1 keeps (:attr:`stage1_share` of the tiles with data)."""
        return self.count(self.stage1_share)

    @property
    def stage1_cut(self) -> int | None:
        """The global cut stage 1 takes by entropy.

        ``None`` under the bank rule (its cut is taken within scenes, in stage 2), else :attr:`stage1_kept`.
        """
        return None if self.rule is Stage1Rule.BANK else self.stage1_kept

    @property
    def scene_cut(self) -> int | None:
        """The cut taken within each scene before selection (bank rule).

        Stage 1's count, or the final count when it is larger; ``None`` under the paper's rule.
        """
        if self.rule is not Stage1Rule.BANK:
            return None
        return max(self.stage1_count, self.keep_count)
