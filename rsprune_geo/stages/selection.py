"""Selection: share a budget among clusters (uniformity vs size) and rank tiles centroid-first."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd

from ..config import CellPeriod, GeoSpread, QuotaMode, RunConfig, default_of
from ..errors import InputError, param
from ..schema import Reason, Status
from .columns import TileColumns
from .information import stratified_entropy_cut


def water_fill_quotas(sizes: np.ndarray, budget: int, seed: int = 0) -> np.ndarray:
    """Equal per-cluster quotas by water-filling, summing exactly to ``min(budget, sizes.sum())``.

    The cap is the largest integer x with sum(min(x, n_k)) <= budget: clusters smaller than x
    are taken whole, the others get x, and what is left is given one by one to clusters above
    the cap, in a seeded random order.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if (sizes < 0).any():
        raise InputError("cluster sizes must be non-negative")
    budget = int(min(max(budget, 0), sizes.sum()))
    if budget == 0:
        return np.zeros_like(sizes)
    lo, hi = 0, int(sizes.max())
    while lo < hi:  # largest cap whose water-filled total fits the budget
        mid = (lo + hi + 1) // 2
        if np.minimum(sizes, mid).sum() <= budget:
            lo = mid
        else:
            hi = mid - 1
    quotas = np.minimum(sizes, lo)
    left = budget - int(quotas.sum())
    if left:
        above = np.flatnonzero(sizes > lo)
        order = np.random.default_rng(seed).permutation(above)
        quotas[order[:left]] += 1
    return quotas


def water_fill_above(held: np.ndarray, caps: np.ndarray, budget: int) -> np.ndarray:
    """New quotas (each at most its cap) that raise the lowest of ``held + quota`` first: the
    budget goes to the groups an earlier selection holds least of. Exact total
    (``min(budget, caps.sum())``); the last units go to the lowest groups, ties by index."""
    held = np.asarray(held, dtype=np.int64)
    caps = np.asarray(caps, dtype=np.int64)
    budget = int(min(max(budget, 0), caps.sum()))
    if budget == 0:
        return np.zeros_like(caps)
    lo, hi = int(held.min()), int((held + caps).max())
    while lo < hi:  # the highest level whose filling fits the budget
        mid = (lo + hi + 1) // 2
        if np.clip(mid - held, 0, caps).sum() <= budget:
            lo = mid
        else:
            hi = mid - 1
    quotas = np.clip(lo - held, 0, caps)
    left = budget - int(quotas.sum())
    if left:
        room = np.flatnonzero(quotas < caps)
        order = room[np.lexsort((room, held[room] + quotas[room]))]
        quotas[order[:left]] += 1
    return quotas


@dataclass(frozen=True)
class HeldBefore:
    """What an earlier selection holds, that a new one adds to (``extend``): its kept tiles per
    scene, and each kept tile's ground cell in the new run's ground grid ((M, 2) row and column,
    -1 none) and date (datetime64, NaT unknown)."""

    scenes: dict[str, int]
    cells: np.ndarray
    dates: np.ndarray

    @property
    def tiles(self) -> int:
        """How many tiles the earlier selection kept."""
        return len(self.cells)


def proportional_quotas(sizes: np.ndarray, budget: int) -> np.ndarray:
    """Size-proportional quotas by largest remainder, summing exactly to the budget."""
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(sizes.sum())
    budget = int(min(max(budget, 0), total))
    if budget == 0:
        return np.zeros_like(sizes)
    return _apportion(sizes * (budget / total), sizes, budget)


def blended_quotas(sizes: np.ndarray, budget: int, uniformity: float = 1.0, seed: int = 0) -> np.ndarray:
    """Quotas between equal (``uniformity=1``, water-filling) and size-proportional (``0``).

    The blend of the two is rounded by largest remainder so the total is exact and no quota
    exceeds its cluster's size.
    """
    if not 0.0 <= uniformity <= 1.0:
        raise InputError(f"uniformity {uniformity}: must be in [0, 1]")
    sizes = np.asarray(sizes, dtype=np.int64)
    budget = int(min(max(budget, 0), sizes.sum()))
    uniform = water_fill_quotas(sizes, budget, seed)
    if uniformity == 1.0:
        return uniform
    proportional = proportional_quotas(sizes, budget)
    if uniformity == 0.0:
        return proportional
    return _apportion(uniformity * uniform + (1 - uniformity) * proportional, sizes, budget)


def _apportion(target: np.ndarray, caps: np.ndarray, budget: int) -> np.ndarray:
    """Integer quotas near ``target`` (each <= cap) summing to ``budget``; ties by index."""
    quotas = np.minimum(np.floor(target + 1e-9).astype(np.int64), caps)
    left = budget - int(quotas.sum())
    remainder = target - quotas
    while left > 0:
        room = np.flatnonzero(quotas < caps)
        order = room[np.lexsort((room, -remainder[room]))]
        take = order[:left]
        quotas[take] += 1
        remainder[take] = -np.inf
        left = budget - int(quotas.sum())
    return quotas


def centroid_first_order(
    labels: np.ndarray, distances: np.ndarray, spread_bins: int = 1, seed: int = 0
) -> np.ndarray:
    """Rank of each tile inside its cluster, 0 = picked first (int32).

    ``spread_bins=1``: ascending distance to the centroid (the paper's centroid-prioritised
    order). ``spread_bins=q>1``: the cluster's distances are cut into q quantile bins and picks
    go round-robin from the nearest bin outwards, each bin centroid-first, so a small quota
    still spans the cluster. Ties break by a seeded permutation, so the order is reproducible.
    """
    labels = np.asarray(labels)
    distances = np.asarray(distances)
    n = labels.size
    tiebreak = np.random.default_rng(seed).permutation(n)
    order = np.lexsort((tiebreak, distances, labels))
    del tiebreak
    rank = np.empty(n, dtype=np.int32)
    _, sizes = _group_sizes(labels)
    ends = np.cumsum(sizes)
    for a, b in zip(ends - sizes, ends):
        members = order[a:b]  # this cluster, nearest first
        m = members.size
        if spread_bins <= 1 or m <= spread_bins:
            rank[members] = np.arange(m)
            continue
        position = np.arange(m)
        bin_of = position * spread_bins // m
        within = position - np.searchsorted(bin_of, bin_of)
        rank[members[np.lexsort((bin_of, within))]] = np.arange(m)
    return rank


def _group_sizes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct labels (sorted) and how many tiles each has; small non-negative int labels
    are counted, not sorted."""
    if labels.dtype.kind in "iu" and labels.size and labels.min() >= 0 and labels.max() < 1 << 24:
        counts = np.bincount(labels)
        present = np.flatnonzero(counts)
        return present, counts[present]
    names, sizes = np.unique(labels, return_counts=True)
    return names, sizes


def _group_codes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(labels, return_inverse=True, return_counts=True)``, in a few bytes a tile for
    small non-negative int labels (the codes are int32)."""
    names, sizes = _group_sizes(labels)
    if labels.dtype.kind in "iu" and labels.size and labels.min() >= 0 and labels.max() < 1 << 24:
        lookup = np.full(int(labels.max()) + 1, -1, dtype=np.int32)
        lookup[names] = np.arange(names.size, dtype=np.int32)
        return names, lookup[labels], sizes
    names, inverse, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    return names, inverse, sizes


@dataclass
class Selection:
    """The outcome of selection: which tiles are kept, their in-cluster rank and the quotas;
    ``capped`` marks tiles a per-cell cap left out although their cluster's quota reached them."""

    kept: np.ndarray
    rank: np.ndarray
    clusters: np.ndarray
    sizes: np.ndarray
    quotas: np.ndarray
    capped: np.ndarray | None = None


def cell_keys(cells: np.ndarray, dates: np.ndarray | None = None,
              period: CellPeriod | str = CellPeriod.ALL) -> np.ndarray:
    """One int64 key per tile for the group a per-cell cap counts by: the ground cell (``cells``,
    (N, 2) row and column, -1 without one) with the year or the season of the year when
    ``period`` says so (tiles without a date share one unknown period); -1 without a cell."""
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
    """The group a per-cell cap counts by, as an int64 code per tile (see :func:`cell_keys`);
    -1 for tiles without a ground cell (never capped)."""
    key = cell_keys(cells, dates, period)
    _, codes = np.unique(key, return_inverse=True)
    return np.where(key < 0, -1, codes.ravel())


def _a_group_holds_more_than(key: np.ndarray, count: int) -> bool:
    """Whether some group (keys, -1 apart) holds more than ``count`` tiles: one sorted copy of
    the keys and a bit a tile."""
    grounded = key[key >= 0]
    grounded.sort()
    return bool(grounded.size > count and (grounded[count:] == grounded[:-count]).any())


#: Seasons of the year, by the month's ``(month % 12) // 3``.
SEASONS = ("DJF", "MAM", "JJA", "SON")


#: How many of a cluster's next tiles (by rank) ``geo_spread`` chooses among.
GEO_SPREAD_WINDOW = 8


class _GeoTally:
    """What the kept tiles hold so far: tiles per cap group, per date, and in each cell's 3×3
    neighbourhood; a tile's score is how many kept tiles share its date and neighbourhood."""

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
    """Rounds in which every cluster under its quota takes one tile (see :func:`geo_picks`);
    tiles passed over because their group is full are marked in ``capped``."""
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
    """One round over every tile (``order``) keeping those whose group holds under ``limit``
    kept tiles, best of each ``width`` pending first, until the budget is met."""
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


def scene_quotas(
    sizes: np.ndarray, scenes: np.ndarray, budget: int, uniformity: float = 1.0, seed: int = 0,
    held: dict[str, int] | None = None,
) -> np.ndarray:
    """Quotas per cluster shared by scene first: the scenes' quotas blend equal and
    size-proportional shares (as :func:`blended_quotas` does for clusters), then each scene's
    quota is water-filled over its clusters. Exact total, none above a cluster's size. With
    ``held`` (tiles per scene an earlier selection kept), the equal share goes first to the
    scenes it holds least of (:func:`water_fill_above`)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    scenes = np.asarray(scenes).astype(str)
    names, inverse = np.unique(scenes, return_inverse=True)
    scene_sizes = np.bincount(inverse, weights=sizes).astype(np.int64)
    if held:
        before = np.array([held.get(str(name), 0) for name in names], dtype=np.int64)
        target = uniformity * water_fill_above(before, scene_sizes, budget)
        if uniformity < 1.0:
            target = target + (1 - uniformity) * proportional_quotas(scene_sizes, budget)
        per_scene = _apportion(target, scene_sizes, int(min(budget, scene_sizes.sum())))
    else:
        per_scene = blended_quotas(scene_sizes, budget, uniformity, seed)
    quotas = np.zeros_like(sizes)
    for s in range(names.size):
        members = np.flatnonzero(inverse == s)
        quotas[members] = water_fill_quotas(sizes[members], int(per_scene[s]), seed + s)
    return quotas


def spans_ground_or_time(cells: np.ndarray | None, dates: np.ndarray | None) -> bool:
    """Whether tiles share a ground cell (overlapping rasters) or come from several dates: when
    ``geo_spread="auto"`` turns the spread on. ``cells``: (N, 2) row and column (-1: none)."""
    if cells is not None and _a_group_holds_more_than(cell_keys(cells), 1):
        return True
    if dates is not None:
        return pd.Series(pd.to_datetime(np.asarray(dates), errors="coerce")).dropna().nunique() > 1
    return False


def select_tiles(
    labels: np.ndarray,
    distances: np.ndarray,
    budget: int,
    uniformity: float = 1.0,
    spread_bins: int = 1,
    seed: int = 0,
    cluster_scenes: np.ndarray | None = None,
    cells: np.ndarray | None = None,
    dates: np.ndarray | None = None,
    max_per_cell: int | None = None,
    cell_period: str = "all",
    geo_spread: str = "off",
    held: HeldBefore | None = None,
) -> Selection:
    """Keep exactly ``min(budget, n)`` tiles: per-cluster quotas, then centroid-first picks.

    ``labels`` are cluster ids, ``distances`` each tile's distance to its centroid. With
    ``cluster_scenes`` (the scene of every cluster id, indexed by id) the budget is shared
    among scenes first (:func:`scene_quotas`). With ``cells`` (each tile's ground cell, (N, 2)
    row and column, -1 for none) and ``dates`` (datetime64, NaT unknown): at most ``max_per_cell`` tiles of a cell
    (per ``cell_period``; ``None`` or 0: no cap) are kept while the budget allows, and
    ``geo_spread`` (``on``; ``auto``: when tiles share a cell or span several dates) prefers
    tiles whose date and neighbourhood hold fewer kept tiles (:func:`geo_picks`). With ``held``
    (what an earlier selection kept, ``extend``) the scenes' equal shares go first to the scenes
    it holds least of, and its tiles count against the per-cell cap as if kept in this
    selection. The same inputs and seed always give the same selection.
    """
    labels = np.asarray(labels)
    if labels.shape != np.shape(distances):
        raise InputError("labels and distances must have the same length")
    if budget < 0:
        raise InputError(f"budget {budget}: must be non-negative")
    clusters, inverse, sizes = _group_codes(labels)
    if cluster_scenes is None:
        quotas = blended_quotas(sizes, budget, uniformity, seed)
    else:
        quotas = scene_quotas(sizes, np.asarray(cluster_scenes)[clusters], budget, uniformity, seed,
                              held.scenes if held is not None else None)
    rank = centroid_first_order(inverse, distances, spread_bins, seed)
    kept = rank < quotas[inverse]
    capped = None
    codes = held_codes = None
    cells_all, dates_all = _with_held(cells, dates, held, labels.size)
    if cells_all is not None and max_per_cell and _a_group_holds_more_than(
            cell_keys(cells_all, dates_all, cell_period), max_per_cell):
        codes = cell_groups(cells_all, dates_all, cell_period)  # only when some cell holds more than the cap
        codes, held_codes = codes[:labels.size], codes[labels.size:]
    mode = GeoSpread.parse(geo_spread, "geo_spread")
    spread = mode is GeoSpread.ON or (mode is GeoSpread.AUTO and spans_ground_or_time(cells, dates))
    if codes is not None or (spread and (cells is not None or dates is not None)):
        date_codes = None
        if spread and dates is not None:
            stamps = pd.to_datetime(np.asarray(dates), errors="coerce")
            date_codes = np.where(pd.isna(stamps), -1, pd.factorize(stamps)[0])
        positions = np.asarray(cells, dtype=np.int64).reshape(-1, 2) if spread and cells is not None else None
        kept, capped = geo_picks(rank, inverse, quotas, int(kept.sum()), seed, codes,
                                 max_per_cell if codes is not None else None, positions, date_codes, spread,
                                 held_groups=held_codes)
    return Selection(kept=kept, rank=rank, clusters=clusters, sizes=sizes, quotas=quotas, capped=capped)


def _with_held(cells: np.ndarray | None, dates: np.ndarray | None, held: HeldBefore | None,
               n: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The tiles' cells and dates followed by those of an earlier selection's kept tiles."""
    if held is None or held.tiles == 0:
        return cells, dates
    own_cells = np.full((n, 2), -1, dtype=np.int64) if cells is None else np.asarray(cells, dtype=np.int64)
    all_cells = np.concatenate([own_cells.reshape(-1, 2), np.asarray(held.cells, dtype=np.int64).reshape(-1, 2)])
    if dates is None and pd.isna(held.dates).all():
        return all_cells, None
    own_dates = np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]") if dates is None else \
        np.asarray(dates, dtype="datetime64[ns]")
    return all_cells, np.concatenate([own_dates, np.asarray(held.dates, dtype="datetime64[ns]")])


def find_duplicates(
    embeddings: Any, labels: np.ndarray, rank: np.ndarray, threshold: float
) -> np.ndarray:
    """Near-duplicates inside each cluster: walking the cluster in rank order, a tile whose
    cosine similarity to an earlier non-duplicate tile is ``>= threshold`` is a duplicate.

    The centroid-first tile of every cluster is never a duplicate. Cost grows with cluster
    size times the number of distinct tiles kept in it.
    """
    if not 0 < threshold <= 1:
        raise InputError(f"{param('dedup')} {threshold}: the cosine threshold must be in (0, 1]")
    duplicate = np.zeros(len(embeddings), dtype=bool)
    labels = np.asarray(labels)
    for cluster in np.unique(labels):
        members = np.flatnonzero(labels == cluster)
        members = members[np.argsort(rank[members], kind="stable")]
        x = np.asarray(embeddings[np.sort(members)], dtype=np.float32)  # one cluster in memory
        x = x[np.argsort(np.argsort(members))]
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = (x / np.where(norms > 0, norms, 1)).astype(np.float32)
        accepted = np.empty_like(x)
        count = 0
        for i, m in enumerate(members):
            if count and float((accepted[:count] @ x[i]).max()) >= threshold:
                duplicate[m] = True
                continue
            accepted[count] = x[i]
            count += 1
    return duplicate


@dataclass(frozen=True)
class SelectionOptions:
    """How stage 2 selects: quota blend, spread, seed, quota sharing, near-duplicate threshold,
    and the cap on kept tiles per ground cell (and period); each defaults to the run
    parameter of the same name (:class:`~rsprune_geo.config.RunConfig`)."""

    uniformity: float = default_of("uniformity")
    spread: int = default_of("spread")
    seed: int = default_of("seed")
    quota_by: QuotaMode = default_of("quota_by")
    dedup: float | None = default_of("dedup")
    max_per_cell: int | None = default_of("max_per_cell")
    cell_period: CellPeriod = default_of("cell_period")
    geo_spread: GeoSpread = default_of("geo_spread")

    @classmethod
    def from_config(cls, config: RunConfig, **overrides: Any) -> SelectionOptions:
        """The selection options of a run configuration, with ``overrides`` (``None``: the run's)."""
        values = {f.name: getattr(config, f.name) for f in fields(cls)}
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["quota_by"] = QuotaMode.parse(values["quota_by"], "quota_by")
        values["cell_period"] = CellPeriod.parse(values["cell_period"], "cell_period")
        values["geo_spread"] = GeoSpread.parse(values["geo_spread"], "geo_spread")
        return cls(**values)


@dataclass
class AppliedSelection:
    """A selection applied to a run's :class:`~rsprune_geo.stages.columns.TileColumns` (statuses,
    reasons and ranks are set there) and what it says of each cluster (indexed by cluster id).

    ``pool`` holds the positions of the tiles that passed stage 1 (the selection's candidates),
    ``pool_cluster``/``pool_distance`` their clusters and distances; ``scene_quota`` is what
    stage 1's cut within scenes let each scene keep (bank rule).
    """

    pool: np.ndarray
    pool_cluster: np.ndarray
    pool_distance: np.ndarray
    size: np.ndarray
    duplicates: np.ndarray
    quota: np.ndarray
    kept_per_cluster: np.ndarray
    stage1_decides: bool
    kept: int
    scene_quota: dict[str, int] = field(default_factory=dict)


def apply_selection(
    columns: TileColumns,
    candidates: np.ndarray,
    cluster_scenes: np.ndarray,
    budget: int,
    options: SelectionOptions,
    order_of: Callable[[np.ndarray], np.ndarray],
    scene_cut: int | None = None,
    duplicates: np.ndarray | Callable[[np.ndarray], np.ndarray] | None = None,
    held: HeldBefore | None = None,
) -> AppliedSelection:
    """Stage 2's decisions on a run's columns (in place), shared by a run and a re-selection.

    ``candidates`` are the positions of the tiles stage 1 passed, with their ``cluster`` and
    ``distance`` in ``columns``; ``cluster_scenes`` is the scene of every cluster id; ``order_of``
    gives the tie-break keys of positions (they sort like the tile ids). With ``scene_cut`` (the
    ``bank`` rule, :attr:`~rsprune_geo.stages.budget.Budget.scene_cut`) stage 1's cut is taken
    first within each candidate's scene. Then ``budget`` tiles are kept: every one passed when the
    budget covers them, else per-cluster quotas and centroid-first picks among the tiles that are
    not near-duplicates. ``duplicates``: a mask over the candidates, or a function of the passed
    candidates' indexes (into ``candidates``) returning their mask. With
    ``options.max_per_cell`` the tiles' ground cells (and dates, by ``options.cell_period``) cap
    the tiles kept per cell (:func:`cell_groups`). ``held``: what an earlier selection kept, which
    this one adds to (:func:`select_tiles`).
    """
    candidates = np.asarray(candidates)
    cluster_scenes = np.asarray(cluster_scenes)
    k_all = len(cluster_scenes)
    scene_quota: dict[str, int] = {}
    inner: np.ndarray | None = None  # indexes into candidates of those that pass (None: all)
    if scene_cut is not None:
        passed, scene_quota = _cut_within_scenes(columns, candidates, cluster_scenes, scene_cut, order_of)
        if not passed.all():
            inner = np.flatnonzero(passed)
        del passed
    pool = candidates if inner is None else candidates[inner]
    ids, dist = columns.cluster[pool], columns.distance[pool]
    stage1_decides = budget >= pool.size
    duplicate = None
    if not stage1_decides and duplicates is not None:
        where = inner if inner is not None else np.arange(candidates.size)
        duplicate = np.asarray(duplicates(where) if callable(duplicates) else np.asarray(duplicates)[where], dtype=bool)
    fresh = pool if duplicate is None else pool[~duplicate]
    fresh_ids = ids if duplicate is None else ids[~duplicate]
    scenes_of = cluster_scenes if options.quota_by is QuotaMode.SCENE and not stage1_decides else None
    grounded = bool((columns.cell[fresh, 0] >= 0).any()) if fresh.size else False
    grounded = grounded or (held is not None and bool((np.asarray(held.cells).reshape(-1, 2)[:, 0] >= 0).any()))
    chosen = select_tiles(fresh_ids, dist if duplicate is None else dist[~duplicate], min(int(budget), fresh.size),
                          options.uniformity, options.spread, options.seed, cluster_scenes=scenes_of,
                          cells=columns.cell[fresh] if grounded else None,
                          dates=columns.dates_of(fresh) if columns.several_dates() or held is not None else None,
                          max_per_cell=options.max_per_cell, cell_period=options.cell_period,
                          geo_spread=options.geo_spread, held=held)
    if duplicate is not None:
        columns.mark(pool[duplicate], Status.DUPLICATE, Reason.DUPLICATE)
    columns.mark(fresh[chosen.kept], Status.KEPT)
    columns.mark(fresh[~chosen.kept], Status.NOT_SELECTED, Reason.QUOTA)
    if chosen.capped is not None and chosen.capped.any():
        columns.reason[fresh[chosen.capped]] = Reason.CELL_FULL
    columns.cluster_rank[fresh] = chosen.rank
    quotas = np.zeros(k_all, dtype=np.int64)
    quotas[chosen.clusters] = chosen.quotas
    return AppliedSelection(
        pool=pool, pool_cluster=ids, pool_distance=dist, size=np.bincount(ids, minlength=k_all),
        duplicates=np.bincount(ids[duplicate], minlength=k_all) if duplicate is not None else np.zeros(k_all, np.int64),
        quota=quotas, kept_per_cluster=np.bincount(fresh_ids[chosen.kept], minlength=k_all),
        stage1_decides=bool(stage1_decides), kept=int(chosen.kept.sum()), scene_quota=scene_quota,
    )


def _cut_within_scenes(columns: TileColumns, candidates: np.ndarray, cluster_scenes: np.ndarray, count: int,
                       order_of: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, dict[str, int]]:
    """Stage 1's cut within each candidate's scene (:func:`stratified_entropy_cut`), marked in
    ``columns`` (and each candidate's rank within its scene): ``(passed mask over the
    candidates, each scene's quota)``."""
    names, scene_of_cluster = np.unique(cluster_scenes, return_inverse=True)
    codes = scene_of_cluster.astype(np.int16 if names.size < 1 << 15 else np.int32)[columns.cluster[candidates]]
    passed, rank, quota = stratified_entropy_cut(columns.entropy[candidates], codes, int(count), order_of(candidates),
                                                 scratch=True)
    columns.scene_rank[candidates] = rank
    del rank
    columns.mark(candidates[~passed], Status.LOW_INFORMATION, Reason.SCENE_CUT)
    present = np.unique(codes)
    quota_of_scene = np.zeros(names.size, dtype=np.int64)
    quota_of_scene[codes] = quota
    return passed, {str(names[s]): int(quota_of_scene[s]) for s in present}
