"""The QGIS plugin's backends, outside QGIS: in-process through the API, and the CLI subprocess.

(The plugin itself is tested in real QGIS by tests_qgis/, run by `make test`.)"""

import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "qgis_plugin"))
from rsprune import backend  # noqa: E402

from rsprune_geo.runs.runfile import read_run  # noqa: E402

from .conftest import shared  # noqa: E402


def test_in_process_backend_runs_reports_and_cancels(tmp_path):
    assert backend.in_process_available()
    params = backend.PruneParams(rasters=[shared("rasterio-tests/RGB.byte.tif")], output=str(tmp_path / "a.gpkg"),
                                 tile_size=128, keep=0.3)
    seen = []
    event = backend.run_in_process(params, lambda pct, stage: seen.append((pct, stage)), lambda: False)
    # keep 0.3 of the 19 tiles with data (11 of the 30 are the nodata collar)
    assert event["event"] == "ok" and event["counts"]["kept"] == round(0.3 * 19)
    assert seen[-1] == (100.0, "writing") and [p for p, _ in seen] == sorted(p for p, _ in seen)
    _, record = read_run(tmp_path / "a.gpkg")  # no bank given: the profile the package ships, as the CLI does
    assert record.stage2 is not None and record.stage2.prior_bank[0].endswith("ucmerced.rsbank")
    canceled = backend.PruneParams(rasters=params.rasters, output=str(tmp_path / "b.gpkg"), tile_size=128)
    with pytest.raises(backend.Canceled):
        backend.run_in_process(canceled, lambda *a: None, lambda: True)
    assert not (tmp_path / "b.gpkg").exists()


def test_cli_backend_uses_an_argument_list(tmp_path, monkeypatch):
    cli = str(Path(sys.executable).with_name("rsprune"))
    params = backend.PruneParams(rasters=[shared("rasterio-tests/RGB.byte.tif")], output=str(tmp_path / "c d.gpkg"),
                                 tile_size=128, keep=0.3, prior_banks=[])
    args = params.cli_arguments()
    assert args[:2] == ["run", params.rasters[0]] and "--progress-json" in args
    seen = []
    event = backend.run_cli(params, lambda pct, stage: seen.append(stage), lambda: False, cli=cli)
    assert event["output"] == params.output and len(gpd.read_file(params.output, layer="tiles")) == 30
    assert "stage1" in seen and "writing" in seen
    with pytest.raises(backend.BackendError, match="no such prior bank folder or profile"):
        backend.run_cli(backend.PruneParams(rasters=params.rasters, output=str(tmp_path / "x.gpkg"),
                                            prior_banks=[str(tmp_path / "nope")]), print, lambda: False, cli=cli)
    monkeypatch.setattr(backend, "configured_cli", lambda: None)
    with pytest.raises(backend.BackendError, match="not configured"):
        backend.run_cli(params, print, lambda: False)
    assert backend.stage_percent({"stage": "encoding", "done": 5, "total": 10}) == 85.0


@settings(max_examples=300, deadline=None)
@given(width=st.integers(1, 3000), height=st.integers(1, 3000), tile=st.integers(8, 1024),
       stride=st.one_of(st.none(), st.integers(1, 1500)), edge=st.sampled_from(["drop", "pad"]))
def test_the_dialogs_grid_arithmetic_is_the_packages(width, height, tile, stride, edge):
    """The dialog's coverage figure (the plugin cannot import rsprune_geo) equals the share of the
    raster the package's own tile grid covers, for any raster, tile size, stride and edge mode."""
    from rsprune_geo.reading.tiling import grid_offsets

    def share(length: int) -> float:
        covered = np.zeros(length, dtype=bool)
        for offset in grid_offsets(length, tile, stride or tile, edge):
            covered[offset:offset + tile] = True
        return covered.mean()

    for length in (width, height):
        assert backend.grid_offsets(length, tile, stride or tile, edge) == \
            grid_offsets(length, tile, stride or tile, edge).tolist()
    assert backend.grid_coverage(width, height, tile, stride, edge) == pytest.approx(share(width) * share(height))


def test_the_dialogs_budget_line_counts_tiles_with_data_like_a_run(tmp_path):
    """The dialog's estimate of the tiles with data (from GDAL's mask band, sampled) against a
    real run on RGB.byte.tif: exact on the full mask, close on the sampled one; the line it shows
    says how many are kept, that a fraction rounding to none keeps one, and offers a tile size."""
    import rasterio

    import rsprune_geo

    path = shared("rasterio-tests/RGB.byte.tif")
    run = rsprune_geo.run([path], tmp_path / "run.gpkg", tile_size=128, keep=0.3, encoder="rcf-empirical",
                          cache_dir=str(tmp_path / "cache"))
    truth = int((run.tiles.status != "nodata").sum())
    with rasterio.open(path) as src:
        width, height = src.width, src.height
        full = src.read_masks(1)
        sampled = src.read_masks(1, out_shape=(height // 4, width // 4))
    assert backend.tiles_with_data(full.tobytes(), width, height, width, height, 128) == (len(run.tiles), truth)
    tiles, estimate = backend.tiles_with_data(sampled.tobytes(), width // 4, height // 4, width, height, 128)
    assert tiles == len(run.tiles) and abs(estimate - truth) <= 1
    assert backend.kept_count(truth, 0.3) == (run.tiles.status == "kept").sum()
    assert backend.kept_count(3, 0.15) == 1 and backend.kept_count(0, 0.15) == 0
    few = backend.tiles_with_data(full.tobytes(), width, height, width, height, 256)
    suggestion = backend.suggested_tile_size(width, height, 256, few[1] / few[0])
    assert few[1] < backend.FEW_TILES and suggestion is not None and suggestion < 256
    assert backend.suggested_tile_size(width, height, 64, truth / len(run.tiles)) is None
    text = backend.budget_text(few[0], few[1], 0.15, suggestion)
    assert f"{few[0]} tiles, about {few[1]} with data" in text and "keeps 1" in text
    assert "rounds to none" in text and f"tile size {suggestion}" in text


@settings(max_examples=300, deadline=None)
@given(with_data=st.integers(0, 10_000), keep=st.floats(0.0, 1.0, allow_nan=False))
def test_the_plugins_budget_arithmetic_is_the_packages(with_data, keep):
    from rsprune_geo.stages.budget import budget_count

    assert backend.kept_count(with_data, keep) == budget_count(keep, with_data)


def _item_collection(folder: Path, rasters: list[str]) -> Path:
    """An ItemCollection of the rasters, one item each, as the plugin's STAC field takes it."""
    import json

    import rasterio

    features = []
    for i, path in enumerate(rasters):
        with rasterio.open(path) as src:
            features.append({"type": "Feature", "stac_version": "1.1.0", "id": f"item-{i}", "geometry": None,
                             "bbox": None, "links": [],
                             "properties": {"datetime": "2020-06-01T00:00:00Z", "proj:code": str(src.crs),
                                            "proj:shape": [src.height, src.width],
                                            "proj:transform": list(src.transform)[:6]},
                             "assets": {"image": {"href": path}}})
    target = folder / "items.geojson"
    target.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return target


def test_a_stac_catalogue_goes_to_the_run_beside_the_rasters_with_its_asset(tmp_path):
    cli = str(Path(sys.executable).with_name("rsprune"))
    raster = shared("rasterio-tests/RGB.byte.tif")
    items = _item_collection(tmp_path, [raster])
    params = backend.PruneParams(rasters=[], output=str(tmp_path / "stac.gpkg"), tile_size=128, keep=0.3,
                                 prior_banks=["none"], stac=str(items), asset="image")
    args = params.cli_arguments()
    assert args[:2] == ["run", str(items)] and args[args.index("--asset") + 1] == "image"
    event = backend.run_cli(params, lambda *a: None, lambda: False, cli=cli)
    by_path = backend.run_cli(backend.PruneParams(rasters=[raster], output=str(tmp_path / "path.gpkg"),
                                                  tile_size=128, keep=0.3, prior_banks=["none"]),
                              lambda *a: None, lambda: False, cli=cli)
    assert event["counts"] == by_path["counts"]
    tiles, record = read_run(tmp_path / "stac.gpkg")
    assert record.inputs[0]["stac_item"] == "item-0"
    in_process = backend.run_in_process(backend.PruneParams(rasters=[], output=str(tmp_path / "in.gpkg"),
                                                            tile_size=128, keep=0.3, prior_banks=["none"],
                                                            stac=str(items), asset="image"),
                                        lambda *a: None, lambda: False)
    assert in_process["counts"] == by_path["counts"]


def test_a_missing_stac_catalogue_or_no_input_at_all_is_one_line(tmp_path):
    with pytest.raises(backend.BackendError, match="no such STAC catalogue"):
        backend.PruneParams(rasters=[], output=str(tmp_path / "a.gpkg"), stac=str(tmp_path / "nope.json")).validate()
    with pytest.raises(backend.BackendError, match="or a STAC catalogue"):
        backend.PruneParams(rasters=[], output=str(tmp_path / "a.gpkg")).validate()
    remote = backend.PruneParams(rasters=[], output=str(tmp_path / "a.gpkg"), stac="https://example.com/items.json")
    remote.validate()  # a URL is the run's to read
    assert remote.values()["asset"] is None
