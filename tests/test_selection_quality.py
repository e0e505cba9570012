"""Selection quality judged against true labels, on a labelled pool built from real UC Merced
scenes (the pool and the prior bank share no image; uneven classes; 20% planted junk)."""

import json
import subprocess
import sys

import geopandas as gpd
import numpy as np
import pytest
from click.testing import CliRunner
from shapely.geometry import box

import rsprune_geo
from rsprune_geo.cli import main
from rsprune_geo.evaluation import labels_from_folders, labels_from_vector, tile_labels, truth_metrics
from rsprune_geo.fixtures.labelled_pool import JUNK_KINDS, PoolSpec, build_labelled_pool

from .conftest import SHARED_DATA

UCMERCED = SHARED_DATA / "scenes" / "ucmerced"
BASELINES = {"random", "entropy only", "stage-1 + random", "rs-prune, paper stage 1", "per-cluster random",
             "proportional quotas", "self-clustering"}


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    if not UCMERCED.is_dir():
        pytest.fail(f"real test data missing: {UCMERCED}")
    root = tmp_path_factory.mktemp("labelled")
    built = build_labelled_pool(UCMERCED, root / "pool")
    return built, root / "cache"


@pytest.fixture(scope="module")
def mosaic_run(pool):
    built, cache = pool
    return rsprune_geo.run([str(built.mosaic)], built.root / "run.gpkg", keep=0.25, prior_bank=(str(built.bank),),
                           evaluate=True, labels=str(built.labels), cache_dir=str(cache))


def test_the_pool_is_split_uneven_and_salted_with_junk(pool):
    built, _ = pool
    assert len(built.classes) == 21
    assert max(built.counts.values()) == 10 and min(built.counts.values()) == 2
    bank_images = {p.resolve() for p in built.bank.rglob("*.png")}
    pool_images = {p.resolve() for cls in built.classes for p in (built.chips / cls).glob("*.png")}
    assert len(bank_images) == 210 and len(pool_images) == sum(built.counts.values())
    assert not bank_images & pool_images  # no image is in both
    junk = sorted((built.chips / "junk").glob("*.png"))
    assert len(junk) == built.junk == round(0.25 * len(pool_images))
    assert {p.stem.rstrip("0123456789") for p in junk} == set(JUNK_KINDS)
    labels = gpd.read_file(built.labels)
    assert set(labels.label) == set(built.classes) | {"junk", "nodata"}
    assert json.loads((built.bank / "bank.json").read_text())["gsd"] == 0.3
    again = build_labelled_pool(UCMERCED, built.root)  # reused, identical
    assert again.counts == built.counts


def test_default_keeps_every_land_cover_no_junk_and_beats_every_baseline(mosaic_run):
    table = mosaic_run.evaluation
    tiles = mosaic_run.tiles
    n_data = int((tiles.status != "nodata").sum())
    assert n_data < len(tiles)  # the mosaic's empty cells are nodata
    ours = table.loc["rs-prune"]
    assert ours.kept == (tiles.status == "kept").sum() == round(0.25 * n_data)
    assert ours.classes_kept == 21
    assert ours.label_balance >= 0.95
    assert ours.junk_kept <= 0.02
    assert BASELINES <= set(table.index)
    others = table.drop(index="rs-prune")
    assert (ours.classes_kept >= others.classes_kept).all()
    assert (ours.label_balance > others.label_balance).all(), table
    # the paper's global entropy cut wipes land covers out on the same pool
    assert table.loc["rs-prune, paper stage 1", "classes_kept"] < 21
    assert mosaic_run.record.stage1.rule == "bank"
    assert mosaic_run.record.stage1.tiles_with_data == n_data


def test_the_floor_removes_the_junk_and_no_scene(mosaic_run, pool):
    built, _ = pool
    tiles = mosaic_run.tiles
    truth = labels_from_vector(tiles, str(built.labels))
    low = (tiles.status == "low_information").to_numpy()
    assert set(truth[low]) == {"junk"}  # blank, cloud and water tiles, nothing else
    assert ((truth == "junk") <= low).all()
    assert set(truth[(tiles.status == "nodata").to_numpy()]) == {"nodata"}
    floor = mosaic_run.record.stage1.floor_bits
    assert 3.5 < floor < 5.5
    assert all("below every prior-bank scene" in r for r in tiles.reason[low])


def test_chips_with_labels_from_their_folders(pool):
    built, cache = pool
    res = rsprune_geo.run([str(built.chips)], chips=True, keep=0.25, prior_bank=(str(built.bank),), evaluate=True,
                          labels="folders", cache_dir=str(cache))
    ours = res.evaluation.loc["rs-prune"]
    assert ours.classes_kept == 21 and ours.label_balance >= 0.95 and ours.junk_kept == 0
    assert (ours.label_balance > res.evaluation.drop(index="rs-prune").label_balance).all()
    # nodata chips (alpha 0) are not part of the data: 25% of the rest is kept
    n_data = int((res.tiles.status != "nodata").sum())
    assert n_data == len(res.tiles) - built.junk // len(JUNK_KINDS)
    assert ours.kept == round(0.25 * n_data)


def test_paper_rule_is_one_option_away_and_reselect_follows_the_rule(mosaic_run, pool, tmp_path):
    built, cache = pool
    paper = rsprune_geo.run([str(built.mosaic)], keep=0.15, stage1="paper", prior_bank=(str(built.bank),),
                            cache_dir=str(cache))
    assert paper.record.stage1.rule == "paper"
    n_data = int((paper.tiles.status != "nodata").sum())
    assert paper.record.stage1.stage1_count == round(0.30 * n_data)
    truth = labels_from_vector(paper.tiles, str(built.labels))
    assert np.unique(truth[(paper.tiles.status == "kept").to_numpy()]).size < 21
    # re-selecting the 25% bank-rule run at 15% equals a fresh bank-rule run at 15%
    fresh = rsprune_geo.run([str(built.mosaic)], keep=0.15, prior_bank=(str(built.bank),), cache_dir=str(cache))
    out = tmp_path / "15.gpkg"
    cli = CliRunner().invoke(main, ["select", str(mosaic_run.output), "--keep", "0.15", "-o", str(out)])
    assert cli.exit_code == 0, cli.output
    again = gpd.read_file(out, layer="tiles")
    assert set(again.tile_id[again.status == "kept"]) == set(fresh.tiles.tile_id[fresh.tiles.status == "kept"])
    assert (again.status == "kept").sum() == round(0.15 * n_data)


def test_cli_evaluate_against_a_labels_layer(mosaic_run, pool):
    built, _ = pool
    out = CliRunner().invoke(main, ["evaluate", str(mosaic_run.output), "--labels", str(built.labels)])
    assert out.exit_code == 0, out.output
    for word in ("classes_kept", "label_balance", "junk_kept", "per-cluster random", "stage-1 + random",
                 "scenes_kept (own)", "rcf-empirical's space"):
        assert word in out.output
    bad = CliRunner().invoke(main, ["evaluate", str(mosaic_run.output), "--labels", str(built.labels),
                                    "--label-column", "nope"])
    assert bad.exit_code == 1 and "no column 'nope'" in bad.output


def test_labels_from_a_vector_layer_in_another_crs_take_the_largest_overlap():
    tiles = gpd.GeoDataFrame({"tile_id": ["a", "b", "c"]},
                             geometry=[box(0, 0, 10, 10), box(10, 0, 20, 10), box(100, 100, 110, 110)],
                             crs="EPSG:32633")
    polys = gpd.GeoDataFrame({"label": ["forest", "river"]},
                             geometry=[box(0, 0, 13, 10), box(13, 0, 20, 10)], crs="EPSG:32633").to_crs(4326)
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/labels.gpkg"
        polys.to_file(path)
        labels = labels_from_vector(tiles, path)
        assert tile_labels(tiles, path).tolist() == labels.tolist()
    assert labels.tolist() == ["forest", "river", ""]


def test_labels_from_folders_and_truth_metrics():
    frame = gpd.GeoDataFrame({"source": ["/d/forest/a.png", "/d/river/b.png", "/d/junk/c.png"]})
    labels = labels_from_folders(frame)
    assert labels.tolist() == ["forest", "river", "junk"]
    junk = labels == "junk"
    row = truth_metrics(np.array([True, True, True]), labels, junk, n_classes=2)
    assert row == {"kept": 3, "classes_kept": 2, "label_balance": 1.0, "junk_kept": pytest.approx(1 / 3)}
    with pytest.raises(rsprune_geo.InputError, match="no such labels file"):
        tile_labels(frame, "/nonexistent.gpkg")


def test_a_bank_far_from_the_tiles_pixel_size_warns_and_says_what_to_do():
    from rsprune_geo.bank.priorbank import find_prior_bank
    from rsprune_geo.config import RunConfig
    from rsprune_geo.reading.sources import open_source
    from rsprune_geo.stages.stage1 import Stage1Options, bank_tile_size, scale_warnings

    bank = find_prior_bank([str(UCMERCED)])
    assert bank.gsd == 0.3  # known by the folder's name
    landsat = open_source(str(SHARED_DATA / "geotiff" / "rasterio-tests" / "RGB.byte.tif"))
    lines = scale_warnings(bank, [landsat], Stage1Options.from_config(RunConfig(prior_bank=(str(UCMERCED),))))
    assert len(lines) == 1 and "300 m/pixel" in lines[0] and "use a prior bank at about 300 m" in lines[0]
    s2 = open_source(str(SHARED_DATA / "geotiff" / "opengeos-data" / "naip" / "m_4709963_se_14_1_20090818.tif"))
    lines = scale_warnings(bank, [s2], Stage1Options.from_config(RunConfig(prior_bank=(str(UCMERCED),))))  # 5 m NAIP
    assert len(lines) == 1 and "`tile_size` 15" not in lines[0]
    aerial = open_source(str(SHARED_DATA / "geotiff" / "rasterio-tests" / "cogeo.tif"))  # 0.6 m
    assert scale_warnings(bank, [aerial], Stage1Options.from_config(RunConfig(prior_bank=(str(UCMERCED),)))) == []
    assert bank_tile_size(bank, [aerial]) == round(256 * 0.3 / aerial.pixel_size_m) == 129  # 0.597 m pixels


def test_match_bank_scale_sets_the_tile_size(pool):
    built, cache = pool
    cog = str(SHARED_DATA / "geotiff" / "rasterio-tests" / "cogeo.tif")
    res = rsprune_geo.run([cog], match_bank_scale=True, prior_bank=(str(built.bank),), stage1="paper",
                          keep=0.30, cache_dir=str(cache))
    assert set(res.tiles.width) == {129}
    assert res.record.warnings == []


def test_git_rsclip_cache_key_is_the_same_in_two_processes(tmp_path):
    from transformers import SiglipConfig, SiglipModel

    config = SiglipConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, image_size=32, patch_size=16),
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, vocab_size=100),
    )
    folder = tmp_path / "git-rsclip"
    SiglipModel(config).save_pretrained(folder)
    code = ("from rsprune_geo.features import get_encoder; "
            f"print(get_encoder('git-rsclip', weights={str(folder)!r}).cache_key)")
    keys = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
            for _ in range(2)]
    assert keys[0] == keys[1] and keys[0].startswith("git-rsclip-32-")
    SiglipModel(config).save_pretrained(folder)  # other random values: other key
    third = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert third != keys[0]


def test_pool_spec_is_deterministic(tmp_path):
    a = build_labelled_pool(UCMERCED, tmp_path / "a", PoolSpec(seed=3))
    b = build_labelled_pool(UCMERCED, tmp_path / "b", PoolSpec(seed=3))
    assert a.counts == b.counts
    assert gpd.read_file(a.labels).label.tolist() == gpd.read_file(b.labels).label.tolist()


def test_cli_builds_the_labelled_pool(tmp_path):
    out = CliRunner().invoke(main, ["labelled-pool", str(UCMERCED), str(tmp_path / "p"), "--seed", "2"])
    assert out.exit_code == 0, out.output
    assert "21 classes" in out.output and (tmp_path / "p" / "mosaic.tif").exists()
    assert (tmp_path / "p" / "labels.gpkg").exists() and (tmp_path / "p" / "chips" / "junk").is_dir()
