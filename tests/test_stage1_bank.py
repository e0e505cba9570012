"""Stage 1 anchored on the prior bank: floors, stratified cuts, apportioning, bank GSD, centroids."""

import json
import logging

import numpy as np
import pandas as pd
import pytest

from rsprune_geo.bank.priorbank import declared_gsd, find_prior_bank
from rsprune_geo.stages.clustering import fit_scene_centroids
from rsprune_geo.stages.information import (
    apply_information_filter,
    apportion_by_size,
    bank_entropies,
    image_entropy,
    plausibility_floor,
    stratified_entropy_cut,
)
from rsprune_geo.stages.quotas import scene_quotas
from rsprune_geo.stages.selection import select_tiles

from .conftest import SHARED_DATA

UCMERCED = SHARED_DATA / "scenes" / "ucmerced"


def test_plausibility_floor_is_the_lowest_scene_floor():
    entropies = np.array([6.0, 6.2, 6.4, 6.6, 6.8, 7.4, 7.5, 7.6, 7.5, 7.4])
    labels = np.array(["forest"] * 5 + ["urban"] * 5)
    floor = plausibility_floor(entropies, labels, z=2.0)
    mad = np.median(np.abs(entropies[:5] - 6.4)) * 1.4826
    assert floor.per_scene["forest"] == pytest.approx(6.4 - 2 * mad)
    assert floor.bits == min(floor.per_scene.values()) == floor.per_scene["forest"]
    with pytest.raises(ValueError):
        plausibility_floor(entropies, labels[:3])


def test_floor_on_real_bank_separates_real_scenes_from_junk():
    bank = find_prior_bank([str(UCMERCED)])
    entropies = bank_entropies(bank.paths[::10])
    assert entropies.min() > 5.0  # every real scene carries > 5 bits at 0.3 m
    floor = plausibility_floor(bank_entropies(bank.paths), bank.labels)
    assert 3.5 < floor.bits < 5.5
    flat_water = np.full((64, 64, 3), (20, 60, 90), np.uint8)
    flat_water[::2] += 2
    assert image_entropy(flat_water) < 1.5 < floor.bits
    # brought to a coarser pixel size, the bank's images still load (at least 32 px a side)
    coarse = bank_entropies(bank.paths[:3], scale=0.01)
    assert coarse.shape == (3,) and (coarse > 0).all()


def test_information_filter_marks_tiles_below_the_floor():
    stats = pd.DataFrame({"tile_id": list("abcd"), "entropy": [1.0, 6.0, 4.9, 7.0],
                          "nodata_fraction": [0.0, 0.0, 0.0, 0.9]})
    floor = plausibility_floor(np.array([6.0, 6.5, 7.0]), np.array(["x", "x", "x"]), z=1.0)
    out = apply_information_filter(stats, 0.25, None, None, floor)
    assert out.status.tolist() == ["low_information", "kept", "low_information", "nodata"]
    assert "below every prior-bank scene" in out.reason[0]


def test_apportion_by_size_is_exact_proportional_and_keeps_every_group():
    sizes = np.array([100, 10, 1, 0])
    q = apportion_by_size(sizes, 30)
    assert q.sum() == 30 and (q <= sizes).all() and q[2] == 1 and q[3] == 0 and q[0] > q[1]
    assert apportion_by_size(sizes, 2).tolist() == [1, 1, 0, 0]
    assert apportion_by_size(sizes, 1000).tolist() == sizes.tolist()


def test_stratified_entropy_cut_never_wipes_out_a_low_entropy_scene():
    entropy = np.array([7.9, 7.8, 7.7, 7.6, 7.5, 7.4, 5.0, 5.1])
    strata = np.array(["urban"] * 6 + ["forest"] * 2)
    ids = np.array([f"t{i}" for i in range(8)])
    kept, rank, quota = stratified_entropy_cut(entropy, strata, 4, ids)
    assert kept.sum() == 4
    assert kept[6:].any()  # a global top-4 cut would keep no forest tile
    assert rank[7] == 1 and rank[6] == 2  # within forest, the higher entropy first
    assert quota[0] == quota[5]


def test_scene_quotas_share_the_budget_by_scene_then_centroid():
    sizes = np.array([10, 10, 10, 10, 2])  # scene a: 4 centroids; scene b: 1
    scenes = np.array(["a", "a", "a", "a", "b"])
    q = scene_quotas(sizes, scenes, 4)
    assert q.sum() == 4 and q[4] == 2 and q[:4].sum() == 2
    per_centroid = select_tiles(np.repeat(np.arange(5), sizes), np.zeros(sizes.sum()), 4).quotas
    assert per_centroid[4] <= 1  # shared by centroid, the 4-centroid scene takes most
    sel = select_tiles(np.repeat(np.arange(5), sizes), np.zeros(sizes.sum()), 4, cluster_scenes=scenes)
    assert sel.kept.sum() == 4 and sel.quotas[4] == 2


def test_bank_declares_its_gsd(tmp_path):
    bank = tmp_path / "mybank"
    from PIL import Image

    for cls in ("forest", "river"):
        (bank / cls).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(bank / cls / "a.png")
    assert declared_gsd(bank) is None
    (bank / "bank.json").write_text(json.dumps({"gsd": 10}))
    assert declared_gsd(bank) == 10.0
    assert find_prior_bank([str(bank)]).gsd == 10.0
    (bank / "bank.json").write_text("[1, 2]")
    with pytest.raises(Exception, match="numeric"):
        declared_gsd(bank)
    assert declared_gsd(UCMERCED) == 0.3


def test_centroids_use_every_image_and_say_when_a_class_is_small(caplog):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(53, 8)).astype(np.float32)
    labels = np.array(["big"] * 50 + ["tiny"] * 3)
    with caplog.at_level(logging.WARNING):
        c = fit_scene_centroids(x, labels, k_per_class=4, seed=0)
    assert "'tiny' has 3 images for 4 centroids: using 3 centroids" in caplog.text
    assert (c.labels == "big").sum() == 4 and (c.labels == "tiny").sum() == 3
    every = fit_scene_centroids(x, labels, k_per_class=4, samples_per_class=50, seed=0)
    assert np.allclose(c.vectors, every.vectors)  # all 50 images trained on by default
    equalised = fit_scene_centroids(x, labels, k_per_class=4, samples_per_class=3, seed=0)
    assert (equalised.labels == "big").sum() == 3  # the old equalisation, now only when asked
    fewer = fit_scene_centroids(x, labels, k_per_class=4, images_per_centroid=20, seed=0)
    assert (fewer.labels == "big").sum() == 2 and (fewer.labels == "tiny").sum() == 1
    sampled = fit_scene_centroids(x, labels, k_per_class=1, samples_per_class=3, seed=0)
    assert len(sampled) == 2


def test_the_bank_floor_is_judged_at_the_tiles_pixel_size(tmp_path):
    """Tiles ten times coarser than the bank: its images are brought to the tiles' pixel size
    before their entropy is measured (a coarse tile of a fine texture carries less entropy), in a
    folder bank and in the shipped profile alike."""
    from types import SimpleNamespace

    from rsprune_geo.bank.profile import default_profile, load_profile
    from rsprune_geo.config import RunConfig
    from rsprune_geo.stages.stage1 import Stage1Options, bank_floor

    bank_dir = tmp_path / "bank"
    for cls in ("agricultural", "forest", "denseresidential", "beach"):
        (bank_dir / cls).mkdir(parents=True)
        for f in sorted((UCMERCED / cls).iterdir())[:3]:
            (bank_dir / cls / f.name).symlink_to(f)
    (bank_dir / "bank.json").write_text('{"gsd": 0.3}')
    options = Stage1Options.from_config(RunConfig(cache_dir=str(tmp_path / "cache")))
    coarse = [SimpleNamespace(pixel_size_m=3.0, crs="EPSG:32618")]
    for bank in (find_prior_bank([str(bank_dir)]), load_profile(default_profile())):
        assert bank.gsd == pytest.approx(0.3)
        seen = bank_floor(bank, coarse, options)
        entropies = (bank.entropies(0.1) if hasattr(bank, "entropies") else bank_entropies(bank.paths, 0.1))
        at_tiles = plausibility_floor(entropies, bank.labels, options.plausibility_z)
        native = plausibility_floor(bank.entropies(1.0) if hasattr(bank, "entropies") else bank_entropies(bank.paths),
                                    bank.labels, options.plausibility_z)
        assert seen.per_scene == pytest.approx(at_tiles.per_scene)
        assert seen.per_scene != pytest.approx(native.per_scene)  # the scale matters here
