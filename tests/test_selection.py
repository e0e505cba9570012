"""Selection: exact budgets, water-filling, the uniformity blend, centroid-first ranking."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rsprune_geo.errors import InputError
from rsprune_geo.stages.quotas import blended_quotas, proportional_quotas, water_fill_quotas
from rsprune_geo.stages.selection import centroid_first_order, select_tiles


def test_water_filling_takes_small_clusters_whole_and_shares_the_rest():
    sizes = np.array([2, 50, 10, 100])
    q = water_fill_quotas(sizes, 40)
    assert q.sum() == 40
    assert q.tolist() == [2, 14, 10, 14]  # cap 14: clusters of 2 and 10 taken whole
    assert water_fill_quotas(sizes, 1000).tolist() == sizes.tolist()
    assert water_fill_quotas(sizes, 0).sum() == 0


def test_water_filling_remainder_is_seeded():
    sizes = np.array([10, 10, 10, 10])
    a = water_fill_quotas(sizes, 6, seed=1)
    assert a.sum() == 6 and a.max() == 2 and a.min() == 1
    assert np.array_equal(a, water_fill_quotas(sizes, 6, seed=1))
    seen = {tuple(water_fill_quotas(sizes, 6, seed=s)) for s in range(20)}
    assert len(seen) > 1


def test_proportional_quotas_follow_sizes():
    q = proportional_quotas(np.array([10, 30, 60]), 10)
    assert q.tolist() == [1, 3, 6]


def test_blend_moves_from_equal_to_proportional():
    sizes = np.array([100, 300, 600])
    equal = blended_quotas(sizes, 150, uniformity=1.0)
    prop = blended_quotas(sizes, 150, uniformity=0.0)
    half = blended_quotas(sizes, 150, uniformity=0.5)
    assert equal.tolist() == [50, 50, 50]
    assert prop.tolist() == [15, 45, 90]
    assert half.sum() == 150 and equal[2] < half[2] < prop[2]
    with pytest.raises(InputError):
        blended_quotas(sizes, 10, uniformity=1.5)


def test_centroid_first_order_and_spread():
    labels = np.array([0, 0, 0, 0, 1, 1])
    dist = np.array([0.4, 0.1, 0.3, 0.2, 0.9, 0.5])
    assert centroid_first_order(labels, dist).tolist() == [3, 0, 2, 1, 1, 0]
    labels = np.zeros(8, dtype=int)
    dist = np.arange(8) / 10
    spread = centroid_first_order(labels, dist, spread_bins=2)
    # two bins {0..3} and {4..7}: picks alternate nearest-of-each
    assert np.argsort(spread).tolist() == [0, 4, 1, 5, 2, 6, 3, 7]


def test_select_tiles_keeps_the_nearest_of_each_cluster():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], [5, 50, 500])
    dist = rng.random(labels.size)
    sel = select_tiles(labels, dist, budget=35)
    assert sel.kept.sum() == 35
    assert sel.quotas.tolist() == [5, 15, 15]
    for k in (1, 2):
        members = labels == k
        kept_d = dist[members & sel.kept]
        assert kept_d.max() < dist[members & ~sel.kept].min()


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 60), min_size=1, max_size=12),
    ratio=st.floats(0, 1.2),
    uniformity=st.floats(0, 1),
    seed=st.integers(0, 10),
    spread=st.integers(1, 5),
)
def test_selection_properties(sizes, ratio, uniformity, seed, spread):
    """Exact budget, quotas within cluster sizes, determinism — for any sizes and parameters."""
    labels = np.repeat(np.arange(len(sizes)), sizes)
    dist = np.random.default_rng(seed).random(labels.size)
    budget = int(round(ratio * labels.size))
    sel = select_tiles(labels, dist, budget, uniformity, spread, seed)
    assert sel.kept.sum() == min(budget, labels.size)
    assert (sel.quotas <= sel.sizes).all()
    assert sel.quotas.sum() == min(budget, labels.size)
    again = select_tiles(labels, dist, budget, uniformity, spread, seed)
    assert np.array_equal(sel.kept, again.kept) and np.array_equal(sel.rank, again.rank)
    for cluster, quota in zip(sel.clusters, sel.quotas):
        assert sel.kept[labels == cluster].sum() == quota


def test_water_filling_never_gives_a_cluster_more_than_it_holds():
    """Clusters of (2, 5, 5) and a budget of 7: the water level is 2, and the cluster of 2 is
    already whole; the remainder goes to the larger ones only."""
    for seed in range(10):
        q = water_fill_quotas(np.array([2, 5, 5]), 7, seed=seed)
        assert q[0] == 2 and sorted(q[1:].tolist()) == [2, 3]


@settings(max_examples=300, deadline=None)
@given(sizes=st.lists(st.integers(0, 12), min_size=1, max_size=10), budget=st.integers(0, 130),
       seed=st.integers(0, 5))
def test_water_filling_quotas_fit_sum_to_the_budget_and_are_level(sizes, budget, seed):
    """Quotas never exceed sizes, always sum to the budget (or every tile), and are level: a
    cluster left short of its size holds at least the largest quota less one."""
    sizes = np.array(sizes)
    for quotas in (water_fill_quotas(sizes, budget, seed), blended_quotas(sizes, budget, 1.0, seed)):
        assert (quotas >= 0).all() and (quotas <= sizes).all()
        assert quotas.sum() == min(budget, sizes.sum())
        short = quotas < sizes
        if short.any():
            assert quotas[short].min() >= quotas.max() - 1
