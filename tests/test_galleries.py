"""Galleries and plots: Figures returned (files only when asked), per-cluster picks nearest and
farthest from the centroid, HTML pages per scene with lazily loaded thumbnails (real NAIP run)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import rasterio
from matplotlib.figure import Figure
from rasterio.windows import Window

from rsprune_geo import read_run, run
from rsprune_geo.errors import InputError, OutputError
from rsprune_geo.outputs.galleries import (
    GALLERY_GROUPS,
    Thumbnails,
    gallery_picks,
    plot_cluster_gallery,
    plot_gallery,
    plot_scene_gallery,
    sampled_picks,
    write_galleries,
)
from rsprune_geo.outputs.maps import plot_map
from rsprune_geo.outputs.report import plot_cluster_sizes, plot_entropy_histogram, plot_scene_balance, write_report

from .conftest import shared


@pytest.fixture(scope="module")
def naip(naip_run):
    tiles, record = read_run(naip_run["gpkg"])
    return tiles, record, naip_run


def test_gallery_picks_are_nearest_and_farthest_without_repeats(naip):
    tiles, _, _ = naip
    for cluster in tiles.loc[tiles["cluster"] >= 0, "cluster"].unique():
        picks = gallery_picks(tiles, int(cluster), n=2)
        assert tuple(picks) == GALLERY_GROUPS
        members = tiles[tiles["cluster"] == cluster]
        for label in ("kept", "left out"):
            statuses = {"kept"} if label == "kept" else {"not_selected", "duplicate"}
            pool = members[members["status"].isin(statuses)].sort_values(["centroid_distance", "tile_id"])
            near, far = picks[f"{label}, nearest"], picks[f"{label}, farthest"]
            assert near["tile_id"].tolist() == pool["tile_id"].head(2).tolist()
            assert not set(near["tile_id"]) & set(far["tile_id"])
            assert len(near) + len(far) == min(4, len(pool))
            if len(pool) >= 4:
                assert far["tile_id"].tolist() == pool["tile_id"].tail(2).tolist()


def test_plot_functions_return_figures_and_write_only_when_asked(naip, tmp_path, monkeypatch):
    tiles, record, naip_run = naip
    monkeypatch.chdir(tmp_path)
    cluster = int(tiles.loc[tiles["status"] == "kept", "cluster"].iloc[0])
    scene = str(tiles.loc[tiles["cluster"] == cluster, "scene"].iloc[0])
    import pyogrio

    clusters = pyogrio.read_dataframe(naip_run["gpkg"], layer="clusters")
    figures = [plot_entropy_histogram(tiles, record), plot_cluster_sizes(clusters), plot_scene_balance(tiles),
               plot_gallery(tiles, record, n=4), plot_cluster_gallery(tiles, record, cluster, n=2),
               plot_scene_gallery(tiles, record, scene, n=2), plot_map(tiles, record.input_paths, record=record)]
    assert all(isinstance(f, Figure) for f in figures)
    assert list(tmp_path.iterdir()) == []  # nothing written unasked
    plot_cluster_gallery(tiles, record, cluster, n=2, path=tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 5000
    captions = [ax.get_xlabel() for ax in figures[4].axes if ax.get_xlabel()]
    kept = tiles[(tiles["cluster"] == cluster) & (tiles["status"] == "kept")].sort_values("centroid_distance")
    assert any(kept["tile_id"].iloc[0] in c and scene in c and "bits" in c for c in captions)  # the nearest kept
    with pytest.raises(InputError, match="cluster 9999"):
        plot_cluster_gallery(tiles, record, 9999)


def test_thumbnails_match_the_tiles_and_say_what_they_cannot_read(naip):
    """Each thumbnail shows its own tile: closer to that tile's pixels (read here at full size and
    averaged down) than to any other tile's, across both dates of the run."""
    tiles, record, _ = naip
    picked = tiles.iloc[np.linspace(0, len(tiles) - 1, 8).astype(int)]
    images = Thumbnails(record, size=32).read(picked)
    assert [im.shape for im in images] == [(32, 32, 3)] * len(picked)
    references = []
    for tile in picked.itertuples():
        with rasterio.open(tile.source) as src:
            data = src.read([1, 2, 3], window=Window(tile.col_off, tile.row_off, tile.width, tile.height))
        references.append(data.reshape(3, 32, 4, 32, 4).mean(axis=(2, 4)).transpose(1, 2, 0))
    error = np.array([[np.abs(im.astype(float) - ref).mean() for ref in references] for im in images])
    assert (error.argmin(axis=1) == np.arange(len(picked))).all(), error.round(1)
    broken = tiles.head(2).copy()
    broken["source"] = "/nowhere/gone.tif"
    with pytest.raises(KeyError):
        Thumbnails(record, 32).read(broken)  # not one of the run's inputs: a caller's error


def test_write_galleries_one_page_per_scene_bounded_thumbnails(naip, tmp_path):
    tiles, record, naip_run = naip
    pages = write_galleries(naip_run["gpkg"], tmp_path, n=1)
    clustered = tiles[tiles["cluster"] >= 0]
    assert sorted(p.title for p in pages) == sorted(clustered["scene"].unique())
    n_clusters = clustered["cluster"].nunique()
    thumbs = list((tmp_path / "thumbs").glob("*.jpg"))
    assert len(thumbs) <= 4 * n_clusters < len(tiles)  # at most 4·n per cluster, whatever the run's size
    for page in pages:
        text = page.path.read_text()
        sources = re.findall(r"src='thumbs/([^']+)'", text)
        assert sources and all((tmp_path / "thumbs" / s).exists() for s in sources)
        assert "loading='lazy'" in text and page.title in text
        members = clustered[clustered["scene"] == page.title]
        assert page.tiles == len(members) and page.clusters == members["cluster"].nunique()
        assert text.count("<h2>") == page.clusters


def test_galleries_of_a_run_without_stage_2_sample_each_status(tmp_path):
    result = run([shared("rasterio-tests/RGB.byte.tif")], tmp_path / "s1.gpkg", tile_size=64)
    picks = sampled_picks(result.tiles, n=5, seed=0)
    assert set(picks) == set(result.tiles["status"]) and all(len(p) <= 5 for p in picks.values())
    pages = write_galleries(result.output, tmp_path / "g", n=2)
    assert [p.title for p in pages] == ["all tiles"] and (tmp_path / "g" / "all_tiles.html").exists()


def test_report_links_the_gallery_pages_and_makes_its_folder(naip, tmp_path):
    _, _, naip_run = naip
    report = write_report(naip_run["gpkg"], tmp_path / "r.html", gallery_size=2)
    text = report.read_text()
    links = re.findall(r"href='(r_galleries/[^']+)'", text)
    assert links and all((tmp_path / link).exists() for link in links)
    again = write_report(naip_run["gpkg"], tmp_path / "r.html", overwrite=True, galleries=False)
    assert "Galleries" not in again.read_text()
    made = write_report(naip_run["gpkg"], tmp_path / "new" / "folder" / "r.html", galleries=False)
    assert made.is_file()  # its folder made, as `export --to` makes its own
    assert "overflow-x:auto" in made.read_text()  # wide tables scroll within themselves, not the page
    (tmp_path / "a-file").write_text("")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        write_report(naip_run["gpkg"], tmp_path / "a-file" / "r.html")
    assert np.all([not p.name.startswith(".") for p in tmp_path.iterdir()])  # no staging left behind
