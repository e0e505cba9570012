"""Exports (chips, footprints) and the HTML report, on real data and on the demo."""

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from click.testing import CliRunner
from PIL import Image

import rsprune_geo
from rsprune_geo.cli import main
from rsprune_geo.errors import InputError, OutputError
from rsprune_geo.fixtures.demo import DemoSpec, write_demo_mosaic, write_prior_bank
from rsprune_geo.outputs.export import export_chips, export_footprints
from rsprune_geo.outputs.report import make_plots, write_report

from .conftest import shared


@pytest.fixture(scope="module")
def landsat_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("landsat") / "run.gpkg"
    return rsprune_geo.run([shared("rasterio-tests/RGB.byte.tif")], out, tile_size=128)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    mosaic = write_demo_mosaic(root / "m.tif", DemoSpec(size=1024))
    bank = write_prior_bank(root / "bank", per_class=4)
    return rsprune_geo.run([str(mosaic)], root / "demo.gpkg", tile_size=128, keep=0.15,
                           prior_bank=(str(bank),), encoder="rcf-empirical", evaluate=True,
                           cache_dir=str(root / "cache"))


def test_geotiff_chips_reopen_with_the_footprint_bounds(landsat_run, tmp_path):
    done = export_chips(landsat_run.output, tmp_path / "chips", "tif")
    kept = landsat_run.kept
    assert done["chips"] == done["written"] == len(kept)
    with rasterio.open(shared("rasterio-tests/RGB.byte.tif")) as src:
        source_crs, count, dtype = src.crs, src.count, src.dtypes[0]
    for tile in kept.itertuples():
        with rasterio.open(tmp_path / "chips" / f"{tile.tile_id}.tif") as chip:
            assert chip.bounds == pytest.approx(tile.geometry.bounds, abs=1e-6)
            assert chip.crs == source_crs and chip.count == count and chip.dtypes[0] == dtype
            assert (chip.width, chip.height) == (128, 128)
            with rasterio.open(shared("rasterio-tests/RGB.byte.tif")) as src:
                window = rasterio.windows.Window(tile.col_off, tile.row_off, 128, 128)
                assert np.array_equal(chip.read(), src.read(window=window))
    manifest = pd.read_csv(tmp_path / "chips" / "manifest.csv")
    assert sorted(manifest.tile_id) == sorted(kept.tile_id)


def test_png_chips_with_metadata_and_resume(demo_run, tmp_path):
    folder = tmp_path / "png"
    first = export_chips(demo_run.output, folder, "png")
    assert first["written"] == len(demo_run.kept) > 0
    lines = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    assert {line["file_name"] for line in lines} == {p.name for p in folder.glob("*.png")}
    assert all(line["scene"] and line["crs"] == "EPSG:32633" for line in lines)
    with Image.open(folder / lines[0]["file_name"]) as img:
        assert img.size == (128, 128) and img.mode == "RGB"
    (folder / lines[0]["file_name"]).unlink()  # an interrupted export: one chip missing …
    (folder / f".{lines[0]['file_name']}.tmp").write_bytes(b"\x89PNG half")  # … and half-written
    again = export_chips(demo_run.output, folder, "png")
    assert again["written"] == 1 and again["skipped"] == first["written"] - 1
    assert not list(folder.glob(".*.tmp"))
    with Image.open(folder / lines[0]["file_name"]) as img:
        img.load()  # whole
    with pytest.raises(InputError, match="`format`"):
        export_chips(demo_run.output, folder, "bmp")


@pytest.mark.parametrize("suffix", [".gpkg", ".parquet", ".fgb", ".geojson"])
def test_footprints_in_every_format(landsat_run, tmp_path, suffix):
    path = export_footprints(landsat_run.output, tmp_path / f"kept{suffix}")
    layer = "tiles" if suffix == ".gpkg" else None  # a GeoPackage also holds its QGIS style
    frame = gpd.read_parquet(path) if suffix == ".parquet" else gpd.read_file(path, layer=layer)
    assert sorted(frame.tile_id) == sorted(landsat_run.kept.tile_id)
    if suffix == ".geojson":
        assert frame.crs.to_epsg() == 4326
    else:
        assert frame.crs == landsat_run.tiles.crs
    with pytest.raises(OutputError, match="exists"):
        export_footprints(landsat_run.output, path)
    with pytest.raises(OutputError, match=".gpkg, .parquet"):
        export_footprints(landsat_run.output, tmp_path / "kept.csv")


def test_export_status_chooses_the_tiles(landsat_run, tmp_path):
    tiles = landsat_run.tiles
    low = sorted(tiles.loc[tiles.status == "low_information", "tile_id"])
    assert low and set(low).isdisjoint(landsat_run.kept.tile_id)
    path = export_footprints(landsat_run.output, tmp_path / "low.gpkg", status="low_information")
    assert sorted(gpd.read_file(path, layer="tiles").tile_id) == low
    cli = CliRunner().invoke(main, ["export", str(landsat_run.output), "--to", str(tmp_path / "chips"),
                                    "--format", "png", "--status", "nodata"])
    assert cli.exit_code == 0, cli.output
    nodata = set(tiles.loc[tiles.status == "nodata", "tile_id"])
    assert {p.stem for p in (tmp_path / "chips").glob("*.png")} == nodata


def test_report_plots_and_html(demo_run, landsat_run, tmp_path):
    plots = make_plots(demo_run.output, tmp_path / "plots")
    assert set(plots) == {"entropy", "clusters", "scenes", "map", "gallery"}
    for path in plots.values():
        with Image.open(path) as img:
            assert img.size[0] >= 600 and img.size[1] >= 250
            assert np.asarray(img.convert("L")).std() > 5  # not blank
    html = write_report(demo_run.output, tmp_path / "report.html")
    text = html.read_text()
    assert text.count("data:image/png;base64,") == 5
    scenes = sorted(demo_run.tiles.loc[demo_run.tiles["cluster"] >= 0, "scene"].unique())
    assert [p.name for p in sorted((tmp_path / "report_galleries").glob("*.html"))] == [f"{s}.html" for s in scenes]
    assert all(f"report_galleries/{s}.html" in text for s in scenes)
    assert "rs-prune" in text and "random" in text and "tile_size" in text
    stage1_only = make_plots(landsat_run.output, tmp_path / "plots1")
    assert set(stage1_only) == {"entropy", "map", "gallery"}


def test_cli_report_and_export(demo_run, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["report", str(demo_run.output), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["export", str(demo_run.output), "--to", str(tmp_path / "c"),
                                  "--format", "jpg", "--footprints", str(tmp_path / "k.fgb")])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "c").glob("*.jpg"))) == len(demo_run.kept)
    result = runner.invoke(main, ["export", str(demo_run.output)])
    assert result.exit_code == 1 and "--to DIR" in result.output


def test_export_refuses_a_source_changed_since_the_run(tmp_path):
    import shutil

    raster = tmp_path / "RGB.byte.tif"
    shutil.copy(shared("rasterio-tests/RGB.byte.tif"), raster)
    run = rsprune_geo.run([str(raster)], tmp_path / "run.gpkg", tile_size=128)
    with rasterio.open(raster, "r+") as dst:  # the file is edited after the run
        dst.write(np.zeros((3, 10, 10), dtype=np.uint8), window=rasterio.windows.Window(0, 0, 10, 10))
    with pytest.raises(InputError, match="changed since the run"):
        export_chips(run.output, tmp_path / "chips", "png")
    assert not list((tmp_path / "chips").glob("*.png"))


def test_png_export_loads_with_hugging_face_imagefolder(naip_run, tmp_path, monkeypatch):
    """The chips and metadata.jsonl load with `datasets` as they are (offline, no script)."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    from datasets import load_dataset

    done = export_chips(naip_run["gpkg"], tmp_path / "chips", "png")
    loaded = load_dataset("imagefolder", data_dir=str(tmp_path / "chips"), split="train")
    kept = naip_run["result"].kept.set_index("tile_id")
    assert len(loaded) == done["chips"] == len(kept)
    assert {"image", "tile_id", "scene", "cluster", "entropy", "bounds", "crs"} <= set(loaded.column_names)
    for row in loaded:
        tile = kept.loc[row["tile_id"]]
        assert row["image"].size == (128, 128) and row["image"].mode == "RGB"
        assert (row["scene"], row["cluster"]) == (tile["scene"], tile["cluster"])
        assert row["bounds"] == pytest.approx(list(tile.geometry.bounds))


def test_by_scene_layout_is_a_torchvision_image_folder(naip_run, tmp_path):
    from torchvision.datasets import ImageFolder

    done = export_chips(naip_run["gpkg"], tmp_path / "chips", "jpg", layout="by-scene")
    kept = naip_run["result"].kept
    folder = ImageFolder(str(tmp_path / "chips"))
    assert len(folder) == done["chips"] == len(kept) and done["layout"] == "by-scene"
    assert folder.classes == sorted(kept["scene"].unique())
    names = {p.rsplit("/", 1)[-1][:-4]: folder.classes[label] for p, label in folder.samples}
    assert names == dict(zip(kept["tile_id"], kept["scene"]))
    meta = [json.loads(line) for line in (tmp_path / "chips" / "metadata.jsonl").read_text().splitlines()]
    assert all(m["file_name"] == f"{m['scene']}/{m['tile_id']}.jpg" for m in meta)
    again = export_chips(naip_run["gpkg"], tmp_path / "chips", "jpg", layout="by-scene")
    assert again["written"] == 0 and again["skipped"] == len(kept)


def test_by_scene_layout_needs_scenes(landsat_run, tmp_path):
    with pytest.raises(InputError, match="by-scene"):
        export_chips(landsat_run.output, tmp_path / "chips", "png", layout="by-scene")
    with pytest.raises(InputError, match="layout"):
        export_chips(landsat_run.output, tmp_path / "chips", "png", layout="nested")


def test_partitioned_geoparquet_footprints(naip_run, tmp_path):
    from rsprune_geo.outputs.export import export_partitioned

    kept = naip_run["result"].kept
    out = export_partitioned(naip_run["gpkg"], tmp_path / "kept", rows_per_file=3)
    folders = sorted(p.name for p in out.iterdir())
    assert len(folders) == kept["source"].nunique() == 2 and all(f.startswith("source_key=") for f in folders)
    files = sorted(out.rglob("*.parquet"))
    assert len(files) == sum(-(-n // 3) for n in kept.groupby("source").size())  # at most 3 rows a file
    back = gpd.read_parquet(out)
    assert sorted(back["tile_id"]) == sorted(kept["tile_id"]) and back.crs == kept.crs
    assert all(gpd.read_parquet(f).crs == kept.crs for f in files)  # each file is GeoParquet on its own
    with pytest.raises(OutputError, match="exists"):
        export_partitioned(naip_run["gpkg"], out)
    result = CliRunner().invoke(main, ["export", str(naip_run["gpkg"]), "--footprints", str(tmp_path / "cli") + "/"])
    assert result.exit_code == 0, result.output
    assert sorted(gpd.read_parquet(tmp_path / "cli")["tile_id"]) == sorted(kept["tile_id"])
