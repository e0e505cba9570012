"""The run folder is a first-class output: the tile table as GeoParquet parts written by the tasks
that read the pixels, run.json, the clusters table, and a GeoPackage up to a size; info, select,
evaluate, report, export and the loaders read it as they read a GeoPackage, with the same tiles
and decisions (real NAIP acquisitions, UC Merced bank)."""

import json

import geopandas as gpd
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import rsprune_geo
from rsprune_geo.cli import main
from rsprune_geo.errors import InputError, OutputError
from rsprune_geo.reselect import reselect
from rsprune_geo.runs.runfile import count_tiles, describe_run, read_layer, read_run, read_run_columns, run_layers

from .conftest import NAIP, UCMERCED, shared


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same run written both ways (and once more without the folder's GeoPackage)."""
    root = tmp_path_factory.mktemp("runfolder")
    bank = root / "bank"
    for cls in ("agricultural", "forest", "river", "golfcourse"):
        (bank / cls).mkdir(parents=True)
        for f in sorted((UCMERCED / cls).iterdir())[:5]:
            (bank / cls / f.name).symlink_to(f)
    inputs = [shared(p) for p in NAIP]
    options = dict(tile_size=128, keep=0.3, prior_bank=(str(bank),), encoder="rcf-empirical",
                   cache_dir=str(root / "cache"), group_px=256)
    with pytest.MonkeyPatch.context() as patch:  # a task per row band: several parts to read back
        patch.setattr("rsprune_geo.reading.grid.TASK_MIN_TILES", 1)
        gpkg = rsprune_geo.run(inputs, root / "run.gpkg", **options)
        folder = rsprune_geo.run(inputs, root / "run", **options)
        parts_only = rsprune_geo.run(inputs, root / "parts-only", gpkg_max_tiles=0, **options)
    return {"root": root, "gpkg": gpkg, "folder": folder, "parts_only": parts_only, "options": options,
            "inputs": inputs}


def _decisions(tiles: pd.DataFrame) -> pd.DataFrame:
    columns = ["status", "reason", "cluster", "scene", "cluster_rank", "entropy_rank", "ground_cell"]
    return tiles.set_index("tile_id").sort_index()[columns]


def test_a_run_folder_holds_the_same_tiles_and_decisions_as_the_geopackage(runs):
    root = runs["root"]
    folder = root / "run"
    assert (folder / "run.json").is_file() and (folder / "clusters.parquet").is_file()
    parts = sorted((folder / "tiles").glob("part-*.parquet"))
    assert len(parts) > 2  # one part per task of windows (256-px windows here)
    assert all(b"geo" in pq.ParquetFile(p).metadata.metadata for p in parts)  # each part is GeoParquet
    from_folder, record = read_run(folder)
    from_gpkg, _ = read_run(root / "run.gpkg")
    assert _decisions(from_folder).equals(_decisions(from_gpkg))
    assert from_folder.crs == from_gpkg.crs and len(from_folder) == count_tiles(folder) == 70
    inside = gpd.read_file(folder / "tiles.gpkg", layer="tiles")
    assert _decisions(inside).equals(_decisions(from_gpkg))  # the folder's GeoPackage, up to gpkg_max_tiles
    assert not (root / "parts-only" / "tiles.gpkg").exists() and count_tiles(root / "parts-only") == 70
    assert record.stage2.encoder == "rcf-empirical" and record.counts == runs["gpkg"].record.counts
    assert run_layers(folder) == ["tiles", "runs", "clusters"]
    assert read_layer(folder, "clusters").equals(read_layer(root / "run.gpkg", "clusters"))
    assert list(read_run_columns(folder, ["status"]).columns) == ["status"]
    assert not list(root.glob(".rsprune-*"))  # nothing staged is left behind


def test_info_select_and_export_read_a_run_folder(runs, tmp_path):
    folder = runs["root"] / "parts-only"
    info = describe_run(folder)
    assert info["form"] == "run folder" and info["tiles"] == 70 and info["counts"] == runs["gpkg"].record.counts
    shown = CliRunner().invoke(main, ["info", str(folder), "--json"])
    assert shown.exit_code == 0 and json.loads(shown.output)["counts"] == info["counts"]
    again = reselect(folder, tmp_path / "re", keep=0.2)
    as_gpkg = reselect(runs["root"] / "run.gpkg", tmp_path / "re.gpkg", keep=0.2)
    assert _decisions(read_run(again.output)[0]).equals(_decisions(read_run(as_gpkg.output)[0]))
    assert again.record.counts["kept"] == round(0.2 * 70) and again.record.reselected_from == str(folder)
    into_gpkg = reselect(folder, tmp_path / "folder-to.gpkg", keep=0.2)
    assert _decisions(read_run(into_gpkg.output)[0]).equals(_decisions(read_run(as_gpkg.output)[0]))
    with pytest.raises(InputError, match="into a GeoPackage"):
        reselect(runs["root"] / "run.gpkg", tmp_path / "folder-from-gpkg", keep=0.2)
    cli = CliRunner().invoke(main, ["export", str(folder), "--footprints", str(tmp_path / "all.gpkg"),
                                    "--status", "all", "--to", str(tmp_path / "chips"), "--format", "png"])
    assert cli.exit_code == 0, cli.output
    everything = gpd.read_file(tmp_path / "all.gpkg", layer="tiles")
    statuses = set(read_run(folder)[0].status)
    assert len(everything) == 70 and set(everything.status) == statuses and len(statuses) > 1
    import sqlite3

    with sqlite3.connect(tmp_path / "all.gpkg") as db:  # the footprints open in QGIS coloured by status
        assert db.execute("select count(*) from layer_styles where f_table_name='tiles'").fetchone()[0] == 1
    assert len(list((tmp_path / "chips").glob("*.png"))) == 70


def test_report_evaluate_and_loaders_read_a_run_folder(runs, tmp_path):
    from rsprune_geo.loaders import TileDataset
    from rsprune_geo.outputs.report import write_report

    folder = runs["root"] / "run"
    html = write_report(folder, tmp_path / "report.html", galleries=False)
    assert "rsprune report" in html.read_text()
    kept = TileDataset(folder, pixels="rgb")
    assert len(kept) == runs["gpkg"].record.counts["kept"] and kept[0]["image"].shape == (3, 128, 128)
    evaluated = CliRunner().invoke(main, ["evaluate", str(folder), "-o", str(tmp_path / "evaluated")])
    assert evaluated.exit_code == 0, evaluated.output
    assert "evaluation" in run_layers(tmp_path / "evaluated")
    table = read_layer(tmp_path / "evaluated", "evaluation")
    assert {"random", "rs-prune"} <= set(table["method"])


def test_an_output_that_cannot_be_a_run_folder_is_refused_before_any_work(runs, tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine")
    with pytest.raises(OutputError, match="not a run folder"):
        rsprune_geo.run(runs["inputs"], tmp_path / "notes", overwrite=True, **runs["options"])
    with pytest.raises(OutputError, match="exists"):
        rsprune_geo.run(runs["inputs"], runs["root"] / "run", **runs["options"])
    replaced = rsprune_geo.run(runs["inputs"], runs["root"] / "run", overwrite=True, **runs["options"])
    assert replaced.output == runs["root"] / "run" and (tmp_path / "notes" / "a.txt").read_text() == "mine"
    assert replaced.record.counts == runs["gpkg"].record.counts


def test_cluster_ranks_rise_with_distance_within_each_cluster_in_both_forms(runs):
    """``cluster_rank`` is the order of selection within a cluster: centroid-first (spread 1), so
    within a cluster it rises with the distance to the centroid, from 0 with no gap."""
    root = runs["root"]
    for path in (root / "run.gpkg", root / "run"):
        tiles, _ = read_run(path)
        ranked = tiles[tiles["cluster_rank"] >= 0]
        assert len(ranked) > 10 and ranked["cluster"].nunique() > 2
        for cluster, members in ranked.groupby("cluster"):
            ordered = members.sort_values("cluster_rank")
            assert ordered["cluster_rank"].tolist() == list(range(len(members))), (path, cluster)
            assert ordered["centroid_distance"].is_monotonic_increasing, (path, cluster)
