"""The whole two-stage method at 85% pruning on real scene images with planted junk."""

import os
import shutil

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
from click.testing import CliRunner
from PIL import Image

import rsprune_geo
from rsprune_geo.cli import main
from rsprune_geo.evaluation import label_balance
from rsprune_geo.features.base import Encoder

from .conftest import SHARED_DATA

UCMERCED = SHARED_DATA / "scenes" / "ucmerced"


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Bank: images 00-09 of each class. Pool: 10, 5 or 3 of images 10-19 per class (uneven),
    plus 24 planted junk chips (cloud, blank, open water)."""
    root = tmp_path_factory.mktemp("scenes")
    bank, pool = root / "bank", root / "pool"
    classes = sorted(p.name for p in UCMERCED.iterdir() if p.is_dir())
    assert len(classes) == 21, "UC Merced missing from ../shared/data"
    pool.mkdir()
    for i, cls in enumerate(classes):
        files = sorted((UCMERCED / cls).iterdir())
        (bank / cls).mkdir(parents=True)
        for f in files[:10]:
            os.symlink(f, bank / cls / f.name)
        for f in files[10 : 10 + [10, 5, 3][i % 3]]:
            os.symlink(f, pool / f.name)
    rng = np.random.default_rng(0)
    for j in range(24):
        if j % 3 == 0:
            img = np.full((256, 256, 3), 250, np.uint8) - rng.integers(0, 6, (256, 256, 3), dtype=np.uint8)
        elif j % 3 == 1:
            img = np.zeros((256, 256, 3), np.uint8)
        else:
            img = np.full((256, 256, 3), (20, 60, 90), np.uint8) + rng.integers(0, 4, (256, 256, 3), dtype=np.uint8)
        Image.fromarray(img).save(pool / f"junk{j:02d}.png")
    return {"bank": bank, "pool": pool, "classes": classes, "cache": root / "cache", "root": root}


def true_label(paths):
    return paths.str.extract(r"/([a-z]+)\d\d\.(?:png|tif)$")[0].fillna("junk")


@pytest.fixture(scope="module")
def result(scenes):
    out = scenes["root"] / "run.gpkg"
    res = rsprune_geo.run(
        [str(scenes["pool"])], out, chips=True, prior_bank=(str(scenes["bank"]),), keep=0.15,
        stage1_keep=0.8, k_per_class=1, cache_dir=str(scenes["cache"]), evaluate=True,
    )
    return res


def test_budget_is_exact_and_junk_is_gone(result, scenes):
    tiles = result.tiles
    n = len(tiles)
    assert n == 7 * 10 + 7 * 5 + 7 * 3 + 24
    kept = tiles[tiles.status == "kept"]
    assert len(kept) == round(0.15 * n)
    assert (true_label(kept.source) != "junk").all()
    assert set(tiles.status) == {"kept", "not_selected", "low_information"}


def test_rs_prune_beats_random_on_balance_and_keeps_the_scenes(result, scenes):
    tiles = result.tiles
    labels = true_label(tiles.source)
    kept = (tiles.status == "kept").to_numpy()
    real = (labels != "junk").to_numpy()
    rng = np.random.default_rng(1)
    random_balance, random_junk, random_classes = [], [], []
    for _ in range(50):
        pick = np.zeros(len(tiles), dtype=bool)
        pick[rng.choice(len(tiles), kept.sum(), replace=False)] = True
        random_balance.append(label_balance(labels[pick & real].to_numpy(), 21))
        random_junk.append((pick & ~real).sum() / pick.sum())
        random_classes.append(labels[pick & real].nunique())
    ours = label_balance(labels[kept].to_numpy(), 21)
    assert ours > max(random_balance)
    assert 0 == (kept & ~real).sum() < np.mean(random_junk) * kept.sum()
    # every scene of the prior bank is represented, as the method sees scenes
    assert set(tiles[kept].scene) == set(scenes["classes"])
    # and by true labels, nearly all (EfficientNet-Lite0 mislabels a few chips: see the README)
    assert labels[kept].nunique() >= 19 and labels[kept].nunique() > max(random_classes), (
        labels[kept].nunique(), max(random_classes))


def test_geopackage_has_stage2_columns_clusters_and_record(result):
    tiles = gpd.read_file(result.output, layer="tiles")
    for column in ("cluster", "scene", "centroid_distance", "cluster_rank"):
        assert column in tiles
    clusters = pyogrio.read_dataframe(result.output, layer="clusters")
    assert len(clusters) == 21 and clusters.kept.sum() == (tiles.status == "kept").sum()
    assert (clusters.quota >= clusters.kept).all() and (clusters.quota <= clusters["size"]).all()
    _, record = rsprune_geo.read_run(result.output)
    st2 = record.stage2
    assert st2.encoder == "efficientnet-lite0" and st2.n_centroids == 21 and record.seed == 0
    assert not hasattr(st2, "seed")  # the seed is stored once, in the parameters
    evaluation = pyogrio.read_dataframe(result.output, layer="evaluation")
    assert set(evaluation.method) >= {"random", "entropy only", "self-clustering", "proportional quotas", "rs-prune",
                                      "stage-1 + random", "per-cluster random", "rs-prune, paper stage 1"}


def test_a_second_run_encodes_nothing_and_select_is_exact(result, scenes, monkeypatch):
    calls = []
    real = Encoder.encode

    def counting(self, images):
        calls.append(len(images))
        return real(self, images)

    monkeypatch.setattr(Encoder, "encode", counting)
    again = rsprune_geo.run(
        [str(scenes["pool"])], chips=True, prior_bank=(str(scenes["bank"]),), keep=0.10,
        stage1_keep=0.8, k_per_class=1, cache_dir=str(scenes["cache"]),
    )
    assert calls == []  # bank centroids and tile embeddings all come from the cache
    assert (again.tiles.status == "kept").sum() == round(0.10 * len(again.tiles))
    out = scenes["root"] / "reselected.gpkg"
    cli = CliRunner().invoke(main, ["select", str(result.output), "--keep", "0.1", "-o", str(out)])
    assert cli.exit_code == 0, cli.output
    tiles = gpd.read_file(out, layer="tiles")
    assert (tiles.status == "kept").sum() == round(0.1 * len(tiles))
    kept_ids = set(tiles[tiles.status == "kept"].tile_id)
    assert kept_ids == set(again.tiles[again.tiles.status == "kept"].tile_id)


def test_same_inputs_and_seed_give_the_same_selection(result, scenes, tmp_path, monkeypatch):
    """A second run with its own, empty cache encodes everything again and decides the same."""
    encoded = []
    real = Encoder.encode
    monkeypatch.setattr(Encoder, "encode", lambda self, images: encoded.append(len(images)) or real(self, images))
    again = rsprune_geo.run(
        [str(scenes["pool"])], chips=True, prior_bank=(str(scenes["bank"]),), keep=0.15,
        stage1_keep=0.8, k_per_class=1, cache_dir=str(tmp_path / "fresh-cache"),
    )
    encoded_tiles = again.tiles.cluster >= 0  # without evaluate, only stage 2's candidates are embedded
    assert sum(encoded) == 210 + encoded_tiles.sum()  # the bank's 21 x 10 images and every candidate, anew
    columns = ["tile_id", "status", "reason", "cluster_rank"]
    assert again.tiles[columns].equals(result.tiles[columns])
    mine, theirs = again.tiles[encoded_tiles], result.tiles[encoded_tiles]
    assert mine[["cluster", "scene"]].equals(theirs[["cluster", "scene"]])
    assert np.allclose(mine.centroid_distance, theirs.centroid_distance, atol=1e-5)


def test_keep_at_or_above_stage1_means_stage1_alone(scenes, monkeypatch):
    monkeypatch.setattr(Encoder, "encode", lambda *a: pytest.fail("stage 2 ran"))
    res = rsprune_geo.run([str(scenes["pool"])], chips=True, prior_bank=(str(scenes["bank"]),),
                          keep=0.5, stage1_keep=0.3, stage1="paper")
    assert res.record.stage2 is None
    assert (res.tiles.status == "kept").sum() == round(0.5 * len(res.tiles))


def test_bank_rule_at_or_above_stage1_keeps_the_cut_within_every_scene(result, scenes):
    # cached embeddings: the bank rule needs every candidate's scene, stage 1 then decides
    res = rsprune_geo.run([str(scenes["pool"])], chips=True, prior_bank=(str(scenes["bank"]),), keep=0.5,
                          stage1_keep=0.3, k_per_class=1, cache_dir=str(scenes["cache"]))
    assert res.record.stage2.stage1_decides
    kept = res.tiles[res.tiles.status == "kept"]
    assert len(kept) == round(0.5 * len(res.tiles))
    assert set(kept.scene) == set(scenes["classes"])  # no scene wiped out
    assert (true_label(kept.source) != "junk").all()


def test_self_clustering_and_dedup(scenes, tmp_path):
    pool = tmp_path / "pool"
    shutil.copytree(scenes["pool"], pool, symlinks=True)
    source = next(p for p in sorted(pool.iterdir()) if p.name.startswith("denseresidential"))
    for k in range(3):  # exact copies: near-duplicates of each other
        shutil.copy(source.resolve(), pool / f"copy{k}-{source.name}")
    res = rsprune_geo.run([str(pool)], chips=True, prior_bank=(str(scenes["bank"]),), keep=0.15,
                          stage1_keep=0.8, k_per_class=1, cache_dir=str(scenes["cache"]),
                          dedup=0.999, clustering="self")
    assert (res.tiles.status == "duplicate").sum() >= 3
    assert (res.tiles.status == "kept").sum() == round(0.15 * len(res.tiles))
    assert res.record.stage2.clustering == "self"


def test_cli_evaluate_and_encoders(result, tmp_path):
    runner = CliRunner()
    out = runner.invoke(main, ["evaluate", str(result.output)])
    assert out.exit_code == 0, out.output
    for method in ("random", "entropy only", "self-clustering", "proportional quotas", "rs-prune"):
        assert method in out.output
    listing = runner.invoke(main, ["encoders"])
    assert "efficientnet-lite0" in listing.output and "ResNet18_Weights.SENTINEL2_RGB_MOCO" in listing.output
    assert "[224px (or 128, 160, 192), 1280-d] (default)" in listing.output  # the sizes it runs at
    single = [str(result.tiles.source.iloc[0])]
    tiny = rsprune_geo.run(single, tmp_path / "tiny.gpkg", chips=True)
    assert (tiny.tiles.status == "kept").sum() == 1
    assert any("rounds to none; keeping 1" in w for w in tiny.record.warnings)
    plain = rsprune_geo.run(single, tmp_path / "plain.gpkg", chips=True, keep=1.0)
    bad = runner.invoke(main, ["evaluate", str(plain.output)])
    assert bad.exit_code == 1 and "not a stage-2 run" in bad.output
