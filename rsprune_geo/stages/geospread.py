"""Spreading a selection over the ground and time: per-cell caps and round-robin picks."""

from __future__ import annotations

from collections import deque

import numpy as np
import pandas as pd

from ..choices import CellPeriod


def cell_keys(cells: np.ndarray, dates: np.ndarray | None = None,
              period: CellPeriod | str = CellPeriod.ALL) -> np.ndarray:
    """One int64 key per tile for the group a per-cell cap counts by.

    The ground cell (``cells``, (N, 2) row and column, -1 without one) with the year or the season of
    the year when ``period`` says so (tiles without a date share one unknown period); -1 without a cell.
    """
    cells = np.asarray(cells).reshape(-1, 2)
    period = CellPeriod.parse(period, "cell_period")
    key = np.empty(len(cells), dtype=np.int64)
    key[:] = cells[:, 0]
    key <<= 24
    key |= cells[:, 1] & 0xFFFFFF
    if period is not CellPeriod.ALL and dates is not None:
        stamps = pd.DatetimeIndex(pd.to_datetime(np.asarray(dates), errors="coerce"))
        unknown = np.asarray(stamps.isna())
        if period is CellPeriod.YEAR:
            extra = np.nan_to_num(stamps.year.to_numpy(dtype=float)).astype(np.int64) - 1800
        else:
            extra = (np.nan_to_num(stamps.month.to_numpy(dtype=float)).astype(np.int64) % 12) // 3
        key <<= 12
        key |= np.where(unknown, 0xFFF, extra & 0xFFF)
    key[cells[:, 0] < 0] = -1
    return key


def cell_groups(cells: np.ndarray, dates: np.ndarray | None = None,
                period: CellPeriod | str = CellPeriod.ALL) -> np.ndarray:
    """The group a per-cell cap counts by, as an int64 code per tile.

    See :func:`cell_keys`. Tiles without a ground cell get -1 (never capped).
    """
    key = cell_keys(cells, dates, period)
    _, codes = np.unique(key, return_inverse=True)
    return np.where(key < 0, -1, codes.ravel())


def _a_group_holds_more_than(key: np.ndarray, count: int) -> bool:
    """Whether some group (keys, -1 apart) holds more than ``count`` tiles.

    One sorted copy of the keys and a bit a tile.
    """
    grounded = key[key >= 0]
    grounded.sort()
    return bool(grounded.size > count and (grounded[count:] == grounded[:-count]).any())


#: Seasons of the year, by the month's ``(month % 12) // 3``.
SEASONS = ("DJF", "MAM", "JJA", "SON")


#: How many of a cluster's next tiles (by rank) ``geo_spread`` chooses among.
GEO_SPREAD_WINDOW = 8


class _GeoTally:
    """What the kept tiles hold so far.

    Tiles per cap group, per date, and in each cell's 3×3 neighbourhood; a tile's score is how many kept
    tiles share its date and neighbourhood.
    """

    def __init__(self, n: int, groups: np.ndarray | None, dates: np.ndarray | None, cells: np.ndarray | None,
                 held: np.ndarray | None = None):
        self.kept = np.zeros(n, dtype=bool)
        self.groups = np.full(n, -1, dtype=np.int64) if groups is None else np.asarray(groups, dtype=np.int64)
        held = np.asarray(held if held is not None else [], dtype=np.int64)
        held = held[held >= 0]
        size = max(int(self.groups.max(initial=-1)), int(held.max(initial=-1))) + 1
        self.in_group = np.bincount(held, minlength=size).astype(np.int64)  # an earlier selection's tiles
        self.dates = np.asarray(dates, dtype=np.int64) if dates is not None else None
        self.per_date = np.zeros(int(self.dates.max()) + 2, dtype=np.int64) if self.dates is not None else None
        self.cells = np.asarray(cells, dtype=np.int64) if cells is not None else None
        self.near: dict[tuple[int, int], int] = {}
        self.total = 0

    def full(self, i: int, limit: int) -> bool:
        """Whether tile ``i``'s group already holds ``limit`` kept tiles."""
        return bool(self.groups[i] >= 0 and self.in_group[self.groups[i]] >= limit)

    def score(self, i: int) -> int:
        """Kept tiles of tile ``i``'s date plus those in its cell's neighbourhood."""
        value = 0
        if self.per_date is not None and self.dates is not None and self.dates[i] >= 0:
            value += int(self.per_date[self.dates[i]])
        if self.cells is not None and self.cells[i, 0] >= 0:
            value += self.near.get((int(self.cells[i, 0]), int(self.cells[i, 1])), 0)
        return value

    def keep(self, i: int) -> None:
        """Keep tile ``i`` and count it."""
        self.kept[i] = True
        self.total += 1
        if self.groups[i] >= 0:
            self.in_group[self.groups[i]] += 1
        if self.per_date is not None and self.dates is not None and self.dates[i] >= 0:
            self.per_date[self.dates[i]] += 1
        if self.cells is not None and self.cells[i, 0] >= 0:
            r, c = int(self.cells[i, 0]), int(self.cells[i, 1])
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    self.near[(r + dr, c + dc)] = self.near.get((r + dr, c + dc), 0) + 1

    def best(self, window: list[int], rank: np.ndarray, spread: bool) -> int:
        """The tile of ``window`` to keep: the lowest score, ties by rank (the first without spread)."""
        return min(window, key=lambda i: (self.score(i), rank[i])) if spread else window[0]


def geo_picks(rank: np.ndarray, inverse: np.ndarray, quotas: np.ndarray, budget: int, seed: int = 0,
              groups: np.ndarray | None = None, cap: int | None = None, cells: np.ndarray | None = None,
              dates: np.ndarray | None = None, spread: bool = False,
              held_groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Keep ``budget`` tiles knowing where and when they are: ``(kept, capped)`` masks.

    Clusters take turns (a seeded order), each taking its next tile by ``rank`` while under its
    quota. With ``groups`` (int codes, ``-1`` none) and ``cap``, a tile whose group already holds
    ``cap`` kept tiles is passed over (``capped``). With ``spread``, a cluster takes, among its
    next :data:`GEO_SPREAD_WINDOW` eligible tiles, the one whose date (``dates``, int codes, -1
    unknown) and 3×3 cell neighbourhood (``cells``, (N, 2) row and col) hold the fewest kept
    tiles, ties by rank. A shortfall (clusters whose tiles share full groups) is filled round by
    round from any cluster under the cap; only when the cap makes the budget impossible is it
    raised, one tile per group at a time: the total is always exact and the excess spread.
    ``held_groups``: the groups of tiles an earlier selection kept, counted as already kept.
    """
    n = rank.size
    budget = int(min(budget, n))
    capped = np.zeros(n, dtype=bool)
    if n == 0:
        return np.zeros(n, dtype=bool), capped
    tally = _GeoTally(n, groups, dates, cells, held_groups)
    cap_value = n if cap is None else int(cap)
    turn = np.random.default_rng(seed).permutation(int(inverse.max()) + 1)
    _quota_rounds(tally, rank, inverse, quotas, budget, turn, cap_value, spread, capped)
    limit = cap_value
    order = np.lexsort((turn[inverse], rank)).tolist()  # round-robin over every cluster
    while tally.total < budget:  # the shortfall, under the cap; then the cap raised one tile a round
        _fill_round(tally, rank, order, budget, limit, GEO_SPREAD_WINDOW if spread else 1, spread)
        limit += 1
    return tally.kept, capped & ~tally.kept


def _quota_rounds(tally: _GeoTally, rank: np.ndarray, inverse: np.ndarray, quotas: np.ndarray, budget: int,
                  turn: np.ndarray, cap: int, spread: bool, capped: np.ndarray) -> None:
    """Rounds in which every cluster under its quota takes one tile (see :func:`geo_picks`).

    Tiles passed over because their group is full are marked in ``capped``.
    """
    n = rank.size
    by_rank = np.lexsort((rank, inverse))
    starts = np.flatnonzero(np.r_[True, inverse[by_rank][1:] != inverse[by_rank][:-1]])
    queues: dict[int, deque[int]] = {int(inverse[by_rank[a]]): deque(by_rank[a:b].tolist())
                                     for a, b in zip(starts, np.r_[starts[1:], n])}
    taken = np.zeros(quotas.size, dtype=np.int64)
    active = [c for c in sorted(queues, key=lambda c: turn[c]) if quotas[c] > 0]
    while active and tally.total < budget:
        still = []
        for c in active:
            queue = queues[c]
            window: list[int] = []
            while queue and len(window) < (GEO_SPREAD_WINDOW if spread else 1):
                i = queue.popleft()
                if tally.full(i, cap):
                    capped[i] = True  # its ground is full: passed over for good in this pass
                    continue
                window.append(i)
            if not window:
                continue
            best = tally.best(window, rank, spread)
            queue.extendleft(reversed([i for i in window if i != best]))  # the others stay, in rank order
            tally.keep(best)
            taken[c] += 1
            if taken[c] < quotas[c] and queue:
                still.append(c)
            if tally.total >= budget:
                break
        active = still


def _fill_round(tally: _GeoTally, rank: np.ndarray, order: list[int], budget: int, limit: int, width: int,
                spread: bool) -> None:
    """One round over every tile (``order``) keeping those whose group holds under ``limit`` kept tiles.

    Best of each ``width`` pending first, until the budget is met.
    """
    pending: list[int] = []
    for i in order + [-1]:  # -1 flushes the last pending
        if i >= 0 and (tally.kept[i] or tally.full(i, limit)):
            continue
        if i >= 0:
            pending.append(i)
        while pending and (len(pending) >= width or i < 0) and tally.total < budget:
            best = tally.best(pending, rank, spread)
            pending.remove(best)
            tally.keep(best)
            pending = [j for j in pending if not tally.full(j, limit)]
        if tally.total >= budget:
            return


def spans_ground_or_time(cells: np.ndarray | None, dates: np.ndarray | None) -> bool:
    """Whether tiles share a ground cell (overlapping rasters) or come from several dates.

    When ``geo_spread="auto"`` turns the spread on. ``cells``: (N, 2) row and column (-1: none).
    """
    if cells is not None and _a_group_holds_more_than(cell_keys(cells), 1):
        return True
    if dates is not None:
        return pd.Series(pd.to_datetime(np.asarray(dates), errors="coerce")).dropna().nunique() > 1
    return False
