"""A run's tiles as a STAC collection (JSON items or stac-geoparquet), read back with pystac and
stac-geoparquet, on real NAIP imagery."""

import json

import numpy as np
import pyarrow.parquet as pq
import pystac
import pytest
import rasterio
import stac_geoparquet.arrow
from click.testing import CliRunner
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

import rsprune_geo
from rsprune_geo.cli import main
from rsprune_geo.errors import OutputError
from rsprune_geo.outputs.export import export_chips
from rsprune_geo.outputs.stac import export_stac, require_stac

from .conftest import NAIP, shared


def test_the_kept_tiles_as_a_stac_collection_with_their_chips(naip_run, tmp_path):
    kept = naip_run["result"].kept.set_index("tile_id")
    chips = tmp_path / "chips"
    export_chips(naip_run["gpkg"], chips, "png")
    path = export_stac(naip_run["gpkg"], tmp_path / "stac", chips=chips)
    collection = pystac.Collection.from_file(str(path))
    items = list(collection.get_items(recursive=True))
    assert sorted(item.id for item in items) == sorted(kept.index)
    assert collection.summaries.lists["rsprune:scene"] == sorted(set(kept.scene))
    assert collection.summaries.lists["rsprune:status"] == ["kept"]
    assert collection.extra_fields["rsprune:counts"] == naip_run["result"].record.counts
    wgs84 = kept.to_crs(4326)
    west, south, east, north = collection.extent.spatial.bboxes[0]
    for item in items:
        tile = kept.loc[item.id]
        assert np.allclose(item.bbox, wgs84.loc[item.id].geometry.bounds)
        assert west <= item.bbox[0] and item.bbox[2] <= east and south <= item.bbox[1] and item.bbox[3] <= north
        props = item.properties
        assert props["proj:code"] == "EPSG:26914" and props["proj:shape"] == [128, 128]
        assert props["rsprune:scene"] == tile.scene and props["rsprune:cluster"] == int(tile.cluster)
        assert props["rsprune:entropy"] == pytest.approx(tile.entropy) and props["rsprune:datetime_from"] == "run"
        with rasterio.open(item.assets["source"].href) as src:  # the window, as rasterio computes it
            window = Window(tile.col_off, tile.row_off, tile.width, tile.height)
            assert np.allclose(props["proj:transform"], list(window_transform(window, src.transform))[:6])
        chip = item.assets["chip"]
        assert chip.media_type == "image/png" and chip.get_absolute_href() == str(chips / f"{item.id}.png")
    with pytest.raises(OutputError, match="exists"):
        export_stac(naip_run["gpkg"], tmp_path / "stac")


def test_stac_geoparquet_items_read_back_with_stac_geoparquet(naip_run, tmp_path):
    tiles = naip_run["result"].tiles
    path = export_stac(naip_run["gpkg"], tmp_path / "stac", status=None, items="geoparquet")
    collection = pystac.Collection.from_file(str(path))
    table = pq.read_table(path.parent / collection.assets["items"].href)
    items = list(stac_geoparquet.arrow.stac_table_to_items(table))
    assert len(items) == len(tiles) and {i["id"] for i in items} == set(tiles.tile_id)
    by_id = tiles.set_index("tile_id")
    for item in items[:: max(1, len(items) // 20)]:
        assert item["properties"]["rsprune:status"] == by_id.loc[item["id"], "status"]
        assert pystac.Item.from_dict(item).geometry["type"] == "Polygon"
    assert not list(collection.get_items())  # no JSON file an item


def test_the_cli_exports_every_tile_with_its_acquisition_date(tmp_path):
    run = rsprune_geo.run([shared(p) for p in NAIP], tmp_path / "dated.gpkg", tile_size=256, keep=0.3,
                          date_pattern=r"_(\d{8})\.tif$")
    out = CliRunner().invoke(main, ["export", str(run.output), "--stac", str(tmp_path / "stac"), "--status", "all"])
    assert out.exit_code == 0, out.output
    assert "stac:" in out.output and "json items" in out.output
    collection = pystac.Collection.from_file(str(tmp_path / "stac" / "collection.json"))
    items = list(collection.get_items(recursive=True))
    assert len(items) == len(run.tiles)
    dates = {item.datetime.date().isoformat() for item in items}
    assert dates == {"2009-08-18", "2010-06-29"}
    assert all(item.properties["rsprune:datetime_from"] == "acquisition" for item in items)
    start, end = collection.extent.temporal.intervals[0]
    assert start.date().isoformat() == "2009-08-18" and end.date().isoformat() == "2010-06-29"
    saved = json.loads((tmp_path / "stac" / items[0].id / f"{items[0].id}.json").read_text())
    assert saved["collection"] == collection.id and saved["stac_extensions"]  # self-contained, with projection


def test_exports_start_from_the_tiles_with_the_status_asked_for(naip_run, tmp_path):
    from rsprune_geo.errors import InputError
    from rsprune_geo.outputs.export import export_chips
    from rsprune_geo.outputs.stac import export_stac
    from rsprune_geo.runs.runfile import read_tiles_with_status

    chosen, record = read_tiles_with_status(naip_run["gpkg"], "kept")
    assert (chosen["status"] == "kept").all() and len(chosen) == record.counts["kept"] > 0
    assert len(read_tiles_with_status(naip_run["gpkg"], None)[0]) == sum(record.counts.values())
    for export in (lambda: export_chips(naip_run["gpkg"], tmp_path / "chips", status="duplicate"),
                   lambda: export_stac(naip_run["gpkg"], tmp_path / "stac", status="duplicate")):
        with pytest.raises(InputError, match="no tile has status 'duplicate'"):
            export()
    assert not (tmp_path / "chips").exists() and not (tmp_path / "stac").exists()


@pytest.mark.parametrize(("missing", "items", "needs"), [
    ("pystac", "json", "a STAC collection needs pystac"),
    ("stac_geoparquet", "geoparquet", "stac-geoparquet items needs stac-geoparquet"),
])
def test_without_the_stac_extra_the_export_names_it_before_writing(naip_run, tmp_path, monkeypatch, missing, items,
                                                                   needs):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == missing else find_spec(name, *a))
    with pytest.raises(rsprune_geo.InputError, match=rf"^{needs}, which the default install leaves out: "
                                                     r"pip install 'rsprune_geo\[stac\]'$"):
        export_stac(naip_run["gpkg"], tmp_path / "stac", items=items)
    assert not (tmp_path / "stac").exists() and list(tmp_path.iterdir()) == []
    if missing == "stac_geoparquet":
        require_stac("json")  # JSON items need pystac alone


def test_proj_fields_are_each_tiles_own_window_for_non_square_chips_and_edge_tiles(tmp_path, make_raster):
    """``proj:shape`` is (rows, columns), ``proj:bbox`` and ``proj:transform`` the tile's own
    window, for chips that are not square and for the padded tiles at a mosaic's edge."""
    from rasterio.transform import from_origin

    rng = np.random.default_rng(3)
    chips = tmp_path / "chips"
    chips.mkdir()
    for k, (h, w) in enumerate([(40, 64), (64, 24), (33, 50)]):
        path = make_raster(rng.integers(0, 255, (3, h, w), dtype=np.uint8), name=f"chip{k}.tif",
                           transform=from_origin(500000 + 1000 * k, 4000000, 2.0, 3.0))
        (chips / f"chip{k}.tif").write_bytes(open(path, "rb").read())
    mosaic = make_raster(rng.integers(0, 255, (3, 70, 90), dtype=np.uint8), name="mosaic.tif",
                         transform=from_origin(600000, 4100000, 5.0, 5.0))
    runs = [rsprune_geo.run([str(chips)], tmp_path / "chips.gpkg", chips=True),
            rsprune_geo.run([mosaic], tmp_path / "mosaic.gpkg", tile_size=32, edge="pad")]
    assert any(t.width != t.height for t in runs[0].tiles.itertuples())
    for run in runs:
        tiles = run.tiles.set_index("tile_id")
        path = export_stac(run.output, tmp_path / f"stac-{run.output.stem}", status=None)
        items = list(pystac.Collection.from_file(str(path)).get_items(recursive=True))
        assert len(items) == len(tiles)
        for item in items:
            tile = tiles.loc[item.id]
            with rasterio.open(tile.source) as src:
                window = Window(tile.col_off, tile.row_off, tile.width, tile.height)
                expected_bounds = rasterio.windows.bounds(window, src.transform)
                expected_transform = list(window_transform(window, src.transform))[:6]
            props = item.properties
            assert props["proj:shape"] == [int(tile.height), int(tile.width)], item.id
            assert np.allclose(props["proj:bbox"], expected_bounds), item.id
            assert np.allclose(props["proj:transform"], expected_transform), item.id
