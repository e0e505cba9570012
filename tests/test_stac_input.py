"""STAC catalogues as a run's input, made by the test from the real NAIP rasters: a Catalog with a
Collection of Items, the same items as an ItemCollection and as stac-geoparquet, an item whose
bands are separate files, over a loopback HTTP server too; each run selects what a run over the
same rasters by path selects, dated by the items; wrong catalogues get one line."""

import http.server
import json
import shutil
import threading

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

import rsprune_geo
from rsprune_geo.cli import main
from rsprune_geo.errors import InputError

from .conftest import NAIP, shared
from .test_remote import RangeHandler

DATES = {"20090818": "2009-08-18T17:00:00Z", "20100629": "2010-06-29T17:00:00Z"}
OPTIONS = dict(tile_size=256, keep=0.5, stage1="paper", stage1_keep=0.5)


def _item(name: str, href: str, assets: dict | None = None) -> dict:
    stamp = name.rsplit("_", 1)[1][:8]
    with rasterio.open(shared(f"opengeos-data/naip/{name}")) as src:
        shape, transform, epsg = [src.height, src.width], list(src.transform)[:6], src.crs.to_epsg()
    return {"type": "Feature", "stac_version": "1.1.0", "id": f"naip-{stamp}",
            "geometry": None, "bbox": None, "links": [],
            "properties": {"datetime": DATES[stamp], "proj:code": f"EPSG:{epsg}", "proj:shape": shape,
                           "proj:transform": transform},
            "assets": assets or {"visual": {"href": href, "type": "image/tiff; application=geotiff"},
                                 "thumbnail": {"href": "thumb.png"}}}


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """catalog.json -> collection/collection.json -> items/<id>.json, the rasters in data/ (hrefs
    relative to each file), the same items as items.geojson and items.parquet."""
    root = tmp_path_factory.mktemp("stac")
    (root / "data").mkdir()
    names = [p.split("/")[-1] for p in NAIP]
    for name in names:
        shutil.copy(shared(f"opengeos-data/naip/{name}"), root / "data" / name)
    (root / "collection" / "items").mkdir(parents=True)
    items = [_item(name, f"../../data/{name}") for name in names]
    for item in items:
        (root / "collection" / "items" / f"{item['id']}.json").write_text(json.dumps(item))
    (root / "collection" / "collection.json").write_text(json.dumps({
        "type": "Collection", "stac_version": "1.1.0", "id": "naip", "description": "NAIP", "license": "PD",
        "extent": {}, "links": [{"rel": "item", "href": f"./items/{i['id']}.json"} for i in items]}))
    links = [{"rel": "child", "href": "./collection/collection.json"}, {"rel": "self", "href": "./catalog.json"}]
    (root / "catalog.json").write_text(json.dumps({
        "type": "Catalog", "stac_version": "1.1.0", "id": "root", "description": "test", "links": links}))
    flat = [_item(name, f"data/{name}") for name in names]
    (root / "items.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": flat}))
    import pyarrow.parquet as pq
    import stac_geoparquet.arrow

    with_geometry = [dict(i, geometry={"type": "Point", "coordinates": [0, 0]}, bbox=[0, 0, 0, 0]) for i in flat]
    pq.write_table(stac_geoparquet.arrow.parse_stac_items_to_arrow(with_geometry).read_all(), root / "items.parquet")
    return {"root": root, "names": names, "rasters": [str(root / "data" / n) for n in names]}


def _decisions(result):
    return result.tiles.set_index("tile_id").sort_index()[["status", "entropy", "reason"]]


def test_a_catalogue_an_item_collection_and_stac_geoparquet_select_as_the_rasters_do(catalogue, tmp_path):
    root = catalogue["root"]
    by_path = rsprune_geo.run(catalogue["rasters"], None, **OPTIONS)
    for given in ("catalog.json", "items.geojson", "items.parquet"):
        result = rsprune_geo.run([str(root / given)], None, **OPTIONS)
        assert _decisions(result).equals(_decisions(by_path)), given
        assert result.record.input_paths == catalogue["rasters"]  # in the items' order, hrefs resolved
        items = [result.record.input(p)["stac_item"] for p in result.record.input_paths]
        assert items == ["naip-20090818", "naip-20100629"]
        dates = sorted({str(d)[:10] for d in result.tiles["date"]})
        assert dates == ["2009-08-18", "2010-06-29"]  # each tile dated by its item


def test_an_item_of_separate_band_files_is_read_as_one_rgb_raster(catalogue, tmp_path):
    source = catalogue["rasters"][0]
    bands = {}
    with rasterio.open(source) as src:
        profile = dict(src.profile, count=1)
        for key, index in (("red", 1), ("green", 2), ("blue", 3)):
            bands[key] = tmp_path / f"B{index}.tif"
            with rasterio.open(bands[key], "w", **profile) as dst:
                dst.write(src.read(index), 1)
    item = _item(catalogue["names"][0], "", {k: {"href": p.name} for k, p in bands.items()})
    (tmp_path / "item.json").write_text(json.dumps(item))
    stacked = rsprune_geo.run([str(tmp_path / "item.json")], None, **OPTIONS)
    plain = rsprune_geo.run([source], None, **OPTIONS)
    assert np.allclose(np.sort(stacked.tiles["entropy"]), np.sort(plain.tiles["entropy"]))
    assert stacked.record.input_paths[0].endswith(".vrt")


def test_asset_picks_an_asset_and_wrong_catalogues_get_one_line(catalogue, tmp_path):
    root = catalogue["root"]
    with pytest.raises(InputError, match=r"item naip-20090818 has no asset 'nir' \(it has thumbnail, visual\)"):
        rsprune_geo.run([str(root / "items.geojson")], None, asset="nir", **OPTIONS)
    broken = json.loads((root / "items.geojson").read_text())
    broken["features"][0]["assets"]["visual"]["href"] = "data/missing.tif"
    (tmp_path / "broken.geojson").write_text(json.dumps(broken))
    empty = {"type": "Catalog", "stac_version": "1.1.0", "id": "empty", "description": "", "links": []}
    (tmp_path / "empty.json").write_text(json.dumps(empty))
    for given, said in (("broken.geojson", "missing.tif: item naip-20090818's asset is not there"),
                        ("empty.json", "no STAC item in it")):
        out = CliRunner().invoke(main, ["run", str(tmp_path / given), "-o", str(tmp_path / "o.gpkg"), "--tile-size",
                                        "256", "--prior-bank", "none"])
        lines = [line for line in out.output.splitlines() if line.strip()]
        assert out.exit_code == 1 and len(lines) == 1 and said in lines[0], out.output
        assert not (tmp_path / "o.gpkg").exists()


def test_a_catalogue_over_http_reads_its_items_and_rasters_through_the_server(catalogue):
    handler = type("Handler", (RangeHandler,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: handler(*a, directory=str(catalogue["root"])))
    server.requests, server.fail, server.ok, server.failed = 0, 0, 0, 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/catalog.json"
        remote = rsprune_geo.run([url], None, **OPTIONS)
    finally:
        server.shutdown()
    local = rsprune_geo.run(catalogue["rasters"], None, **OPTIONS)
    assert all(p.startswith("/vsicurl/http://127.0.0.1:") for p in remote.record.input_paths)
    assert sorted(remote.tiles["status"]) == sorted(local.tiles["status"])
    assert np.allclose(np.sort(remote.tiles["entropy"]), np.sort(local.tiles["entropy"]))


def test_the_stac_export_links_kept_tiles_back_to_their_items(catalogue, tmp_path):
    from rsprune_geo.outputs.stac import export_stac

    run = rsprune_geo.run([str(catalogue["root"] / "catalog.json")], tmp_path / "run.gpkg", **OPTIONS)
    collection = json.loads(export_stac(run.output, tmp_path / "stac").read_text())
    items = [json.loads(p.read_text()) for p in (tmp_path / "stac").glob("*/*.json")]
    assert collection["type"] == "Collection" and len(items) == (run.tiles.status == "kept").sum() > 0
    for item in items:
        link = next(link for link in item["links"] if link["rel"] == "derived_from")
        assert item["properties"]["rsprune:stac_item"] in ("naip-20090818", "naip-20100629")
        assert link["href"].endswith(f"collection/items/{item['properties']['rsprune:stac_item']}.json")


def _with_raster_bands(item: dict, count: int = 4, dtype: str = "uint8", nodata: float | None = 0) -> dict:
    """The item with the raster extension's bands on each image asset, as catalogues publish them."""
    bands = [{"data_type": dtype, **({"nodata": nodata} if nodata is not None else {})} for _ in range(count)]
    assets = {k: dict(v, **{"raster:bands": bands}) if k != "thumbnail" else v for k, v in item["assets"].items()}
    return dict(item, assets=assets)


def test_a_dry_run_plans_items_from_their_metadata_without_opening_their_files(catalogue, tmp_path, monkeypatch):
    from rsprune_geo.planning import estimate_run

    flat = [_with_raster_bands(_item(n, str(catalogue["root"] / "data" / n))) for n in catalogue["names"]]
    (tmp_path / "items.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": flat}))
    by_path = estimate_run(catalogue["rasters"], prior_bank=(), tile_size=128)
    opened = []
    real_open = rasterio.open
    monkeypatch.setattr(rasterio, "open", lambda path, *a, **k: opened.append(str(path)) or real_open(path, *a, **k))
    planned = estimate_run([str(tmp_path / "items.geojson")], prior_bank=(), tile_size=128)
    assert planned.from_metadata == planned.inputs == len(catalogue["names"])
    assert (planned.tiles, planned.tasks, planned.bytes_to_decode) == (by_path.tiles, by_path.tasks,
                                                                      by_path.bytes_to_decode)
    assert opened == [catalogue["rasters"][0]]  # the one sample window that times decoding, nothing else
    assert "inputs: 2 (2 planned from their STAC metadata; only the sample window below opens a file)" in \
        planned.text()
    opened.clear()  # items without the raster extension's data type are opened, as a run opens them
    unplanned = estimate_run([str(catalogue["root"] / "items.geojson")], prior_bank=(), tile_size=128)
    assert unplanned.from_metadata == 0 and unplanned.tiles == by_path.tiles and len(opened) > len(flat)


def test_a_dry_run_plans_an_item_of_separate_band_files_as_three_bands_without_stacking_them(catalogue, tmp_path,
                                                                                              monkeypatch):
    from rsprune_geo.planning import estimate_run
    from rsprune_geo.reading import stac

    name = catalogue["names"][0]
    bands = {}
    with rasterio.open(catalogue["rasters"][0]) as src:
        profile = dict(src.profile, count=1)
        for key, index in (("red", 1), ("green", 2), ("blue", 3)):
            bands[key] = tmp_path / f"B{index}.tif"
            with rasterio.open(bands[key], "w", **profile) as dst:
                dst.write(src.read(index), 1)
    item = _with_raster_bands(_item(name, "", {k: {"href": p.name} for k, p in bands.items()}), count=1)
    (tmp_path / "item.json").write_text(json.dumps(item))
    by_path = estimate_run([catalogue["rasters"][0]], prior_bank=(), tile_size=128)

    def no_stacking(*args, **kwargs):
        raise AssertionError("a plan from metadata stacks no band files")

    monkeypatch.setattr(stac, "_stacked_vrt", no_stacking)
    plan = estimate_run([str(tmp_path / "item.json")], prior_bank=(), tile_size=128)
    assert plan.from_metadata == 1 and (plan.tiles, plan.bytes_to_decode) == (by_path.tiles, by_path.bytes_to_decode)


def _planned_catalogue(catalogue, folder, names=None, change=None) -> str:
    """An item collection of the NAIP items with the raster extension (so they are planned from metadata)."""
    flat = [_with_raster_bands(_item(n, str(catalogue["root"] / "data" / n)), nodata=None)
            for n in names or catalogue["names"]]
    if change is not None:
        change(flat[0])
    path = folder / "planned.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": flat}))
    return str(path)


def test_a_run_plans_items_from_their_metadata_and_selects_as_the_rasters_do(catalogue, tmp_path, monkeypatch):
    """The scan opens no item's file: each is described by its item and opened by the window tasks,
    which check it; its fingerprint is the file's, so exports and the embedding cache work as ever."""
    from rsprune_geo.reading import scan

    by_path = rsprune_geo.run(catalogue["rasters"], None, **OPTIONS)
    items = _planned_catalogue(catalogue, tmp_path)

    def no_open(*args, **kwargs):
        raise AssertionError("the scan opened an item planned from its metadata")

    monkeypatch.setattr(scan, "open_source", no_open)
    result = rsprune_geo.run([items], tmp_path / "run.gpkg", **OPTIONS)
    monkeypatch.undo()
    assert _decisions(result).equals(_decisions(by_path))
    for path in result.record.input_paths:
        entry, opened = result.record.input(path), by_path.record.input(path)
        assert entry["fingerprint"] == opened["fingerprint"] and entry["mask"] == "file"
    exported = CliRunner().invoke(main, ["export", str(tmp_path / "run.gpkg"), "--to", str(tmp_path / "chips"),
                                         "--format", "png"])
    assert exported.exit_code == 0, exported.output  # the run's inputs reopen, fingerprints checked
    assert len(list((tmp_path / "chips").rglob("*.png"))) == len(result.kept)


def test_a_planned_item_keeps_the_files_own_validity(tmp_path):
    """An alpha band the item does not mention still marks the invalid pixels, as a scan would."""
    raster = shared("rio-tiler/pix4d_alpha_nodata.tif")
    with rasterio.open(raster) as src:
        item = {"type": "Feature", "stac_version": "1.1.0", "id": "pix4d", "geometry": None, "bbox": None,
                "links": [], "properties": {"proj:code": f"EPSG:{src.crs.to_epsg()}",
                                            "proj:shape": [src.height, src.width],
                                            "proj:transform": list(src.transform)[:6]},
                "assets": {"visual": {"href": raster, "raster:bands": [{"data_type": "uint8"}] * src.count}}}
    (tmp_path / "item.json").write_text(json.dumps(item))
    options = dict(tile_size=64, keep=0.5, stage1="paper", stage1_keep=0.5)
    by_path = rsprune_geo.run([raster], None, **options)
    planned = rsprune_geo.run([str(tmp_path / "item.json")], None, **options)
    assert (by_path.tiles.status == "nodata").sum() > 0
    assert _decisions(planned).equals(_decisions(by_path))


@pytest.mark.parametrize("change, said", [
    (lambda item: item["properties"].__setitem__("proj:shape", [800, 1000]), "size 1000x800 \\(the file: 934x724"),
    (lambda item: item["assets"]["visual"]["raster:bands"][0].__setitem__("data_type", "uint16"),
     "data type uint16 \\(the file: uint8\\)"),
    (lambda item: item["properties"].__setitem__("proj:code", "EPSG:4326"), "CRS EPSG:4326 \\(the file: EPSG:"),
])
def test_an_item_whose_metadata_is_wrong_is_unreadable_and_said(catalogue, tmp_path, change, said):
    """Its tiles are nodata, for a reason that says so, and the warning names what differs; the
    other items are selected as ever; with strict the run stops on it."""
    import re

    items = _planned_catalogue(catalogue, tmp_path, change=change)
    result = rsprune_geo.run([items], None, **OPTIONS)
    wrong = result.tiles[result.tiles.source == catalogue["rasters"][0]]
    assert (wrong.status == "nodata").all() and wrong.reason.str.startswith("its pixels cannot be read").all()
    assert any(re.search(f"item naip-20090818 says {said}", w) for w in result.record.warnings), \
        result.record.warnings
    right = result.tiles[result.tiles.source == catalogue["rasters"][1]]
    assert (right.status == "kept").any()
    with pytest.raises(InputError, match=f"item naip-20090818 says {said}.*fix its proj: and raster: fields"):
        rsprune_geo.run([items], None, strict=True, **OPTIONS)
