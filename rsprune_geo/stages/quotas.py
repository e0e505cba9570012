"""How a budget is shared among clusters and scenes.

Water-filling (uniform up to each cluster's size), proportional, a blend of the two, and each
scene's share of stage 1's cut.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError


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
    """New quotas (each at most its cap) that raise the lowest of ``held + quota`` first.

    The budget goes to the groups an earlier selection holds least of. Exact total (``min(budget,
    caps.sum())``); the last units go to the lowest groups, ties by index.
    """
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


def scene_quotas(
    sizes: np.ndarray, scenes: np.ndarray, budget: int, uniformity: float = 1.0, seed: int = 0,
    held: dict[str, int] | None = None,
) -> np.ndarray:
    """Quotas per cluster shared by scene first.

    The scenes' quotas blend equal and size-proportional shares (as :func:`blended_quotas` does for
    clusters), then each scene's quota is water-filled over its clusters. Exact total, none above a
    cluster's size. With ``held`` (tiles per scene an earlier selection kept), the equal share goes
    first to the scenes it holds least of (:func:`water_fill_above`).
    """
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
