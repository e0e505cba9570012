"""Loaders: a torch Dataset over a run's tiles and a torchgeo sampler of exactly the kept footprints,
on real NAIP imagery from ../shared/data (two acquisition dates of one quarter-quad)."""

from __future__ import annotations

import os
import pickle
import shutil

import numpy as np
import pytest
import rasterio
import shapely
import torch
from rasterio.windows import Window
from torch.utils.data import DataLoader

from rsprune_geo.errors import InputError
from rsprune_geo.loaders import TileDataset, choose_tiles
from rsprune_geo.reading.pixels import read_chip

from .conftest import NAIP, shared


def _window(tile) -> Window:
    return Window(int(tile.col_off), int(tile.row_off), int(tile.width), int(tile.height))


def test_choose_tiles_filters_by_status(naip_run):
    tiles = naip_run["result"].tiles
    assert len(choose_tiles(tiles)) == (tiles["status"] == "kept").sum()
    assert len(choose_tiles(tiles, None)) == len(tiles)
    assert len(choose_tiles(tiles, ["kept", "not_selected"])) == tiles["status"].isin(["kept", "not_selected"]).sum()
    with pytest.raises(InputError, match="unknown status"):
        choose_tiles(tiles, "maybe")


def test_tile_dataset_reads_each_exact_window(naip_run):
    dataset = TileDataset(naip_run["gpkg"])
    kept = naip_run["result"].kept.reset_index(drop=True)
    assert len(dataset) == len(kept)
    record = naip_run["result"].record
    for k, tile in enumerate(kept.itertuples()):
        sample = dataset[k]
        with rasterio.open(tile.source) as src:
            expected = src.read(window=_window(tile))
            bounds = rasterio.windows.bounds(_window(tile), src.transform)
        assert sample["image"].dtype == torch.float32 and sample["image"].shape == (4, 128, 128)
        assert torch.equal(sample["image"], torch.from_numpy(expected).float())
        assert sample["tile_id"] == tile.tile_id and sample["source"] == tile.source
        assert sample["scene"] == tile.scene and sample["cluster"] == tile.cluster
        assert sample["crs"] == "EPSG:26914"
        assert sample["bounds"].tolist() == pytest.approx(list(bounds))
        assert shapely.box(*bounds).equals(tile.geometry)
    # the run's bands in the file's dtype, and the run's RGB rendering as encoded
    bands = TileDataset(naip_run["gpkg"], pixels="bands", dtype=None)[0]["image"]
    assert bands.dtype == torch.uint8 and bands.shape[0] == len(record.inputs[0]["bands"]) == 3
    rgb = TileDataset(naip_run["gpkg"], pixels="rgb", dtype=None)[0]["image"]
    source, scaling = record.source(kept.iloc[0]["source"])
    assert torch.equal(rgb, torch.from_numpy(read_chip(source, _window(kept.iloc[0]), scaling).transpose(2, 0, 1)))
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_tile_dataset_other_statuses_and_bad_arguments(naip_run):
    pruned = TileDataset(naip_run["gpkg"], status="not_selected")
    assert len(pruned) == (naip_run["result"].tiles["status"] == "not_selected").sum()
    assert set(pruned.tiles["status"]) == {"not_selected"}
    with pytest.raises(InputError, match="pixels"):
        TileDataset(naip_run["gpkg"], pixels="bgr")


def test_tile_dataset_in_a_dataloader_with_worker_processes(naip_run):
    dataset = TileDataset(naip_run["gpkg"], pixels="rgb", dtype=None)
    dataset[0]  # the parent has a file open: workers must open their own
    assert dataset._handles
    restored = pickle.loads(pickle.dumps(dataset))
    assert restored._handles == {} and torch.equal(restored[1]["image"], dataset[1]["image"])
    batches = list(DataLoader(dataset, batch_size=4, num_workers=2))
    images = torch.cat([b["image"] for b in batches])
    assert images.shape == (len(dataset), 3, 128, 128) and images.dtype == torch.uint8
    assert [t for b in batches for t in b["tile_id"]] == dataset.tiles["tile_id"].tolist()
    assert torch.equal(images, torch.stack([dataset[k]["image"] for k in range(len(dataset))]))
    dataset.close()


def test_tile_dataset_refuses_a_changed_source(naip_run, tmp_path):
    run_file = tmp_path / "run.gpkg"
    shutil.copy(naip_run["gpkg"], run_file)
    victim = naip_run["folder"] / os.path.basename(NAIP[0])
    original, stat = victim.read_bytes(), victim.stat()
    try:
        shutil.copy(shared(NAIP[1]), victim)  # another acquisition under the same name
        with pytest.raises(InputError, match="changed since the run"):
            TileDataset(run_file)
    finally:
        victim.write_bytes(original)
        os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))


# ---- torchgeo -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def naip_dataset(naip_run):
    from torchgeo.datasets import RasterDataset

    class NAIPStack(RasterDataset):
        filename_glob = "m_*.tif"
        filename_regex = r"m_\d+_\w\w_\d+_\d_(?P<date>\d{8})\.tif$"
        date_format = "%Y%m%d"
        is_image = True

    return NAIPStack(paths=str(naip_run["folder"]))


def test_sampler_yields_exactly_the_kept_footprints_at_their_own_date(naip_run, naip_dataset):
    from rsprune_geo.loaders import TileGeoSampler

    sampler = TileGeoSampler(naip_dataset, naip_run["gpkg"])
    kept = naip_run["result"].kept.reset_index(drop=True)
    assert len(sampler) == len(kept) and len(list(sampler)) == len(kept)
    reference = TileDataset(naip_run["gpkg"])
    for k, (x, y, t) in enumerate(sampler):
        tile = kept.iloc[k]
        assert shapely.box(x.start, y.start, x.stop, y.stop).equals(tile.geometry)  # no pixel outside the tile
        date = os.path.basename(tile["source"])[-12:-4]
        assert t.start.strftime("%Y%m%d") == date  # the tile's own acquisition, not the other date
        sample = naip_dataset[x, y, t]
        assert torch.equal(sample["image"], reference[k]["image"])
    # pruned tiles are never sampled, and a shuffled epoch is a permutation of the same tiles
    pruned = TileGeoSampler(naip_dataset, naip_run["gpkg"], status="not_selected")
    kept_boxes = {(x.start, y.start, t.start) for x, y, t in sampler}
    assert not kept_boxes & {(x.start, y.start, t.start) for x, y, t in pruned}
    generator = torch.Generator().manual_seed(1)
    shuffled = list(TileGeoSampler(naip_dataset, naip_run["gpkg"], shuffle=True, generator=generator))
    assert {(x.start, y.start, t.start) for x, y, t in shuffled} == kept_boxes


def test_sampler_in_another_crs_stays_inside_each_footprint(naip_run):
    from torchgeo.datasets import RasterDataset

    from rsprune_geo.loaders import TileGeoSampler

    warped = RasterDataset(paths=[str(naip_run["folder"] / os.path.basename(NAIP[0]))], crs="EPSG:3857")
    sampler = TileGeoSampler(warped, naip_run["gpkg"])
    kept = naip_run["result"].kept
    kept = kept[kept["source"].str.endswith(os.path.basename(NAIP[0]))]
    footprints = kept.to_crs(3857).geometry.values
    assert len(sampler) == len(kept)
    boxes = [shapely.box(x.start, y.start, x.stop, y.stop) for x, y, _ in sampler]
    assert all(f.covers(b) for f, b in zip(footprints, boxes))
    assert min(b.area / f.area for f, b in zip(footprints, boxes)) > 0.9
    assert warped[next(iter(sampler))]["image"].shape[0] == 4


def test_sampler_roi_keeps_tiles_inside_it(naip_run, naip_dataset):
    from rsprune_geo.loaders import TileGeoSampler

    kept = naip_run["result"].kept
    roi = shapely.box(*kept.iloc[:1].total_bounds).buffer(1)
    sampler = TileGeoSampler(naip_dataset, naip_run["gpkg"], roi=roi)
    assert 1 <= len(sampler) < len(kept)
    assert all(roi.covers(shapely.box(x.start, y.start, x.stop, y.stop)) for x, y, _ in sampler)


def test_a_tiny_model_trains_on_the_kept_tiles_through_torchgeo(naip_run, naip_dataset):
    """The hand-off a data team needs: a torchgeo DataLoader over exactly the kept tiles feeds
    a training loop (a tiny convolutional autoencoder), and the loss goes down."""
    from torchgeo.datasets import stack_samples

    from rsprune_geo.loaders import TileGeoSampler

    torch.manual_seed(0)
    sampler = TileGeoSampler(naip_dataset, naip_run["gpkg"], shuffle=True, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(naip_dataset, sampler=sampler, batch_size=4, collate_fn=stack_samples)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(4, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1),
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses, seen = [], 0
    for _ in range(6):
        for batch in loader:
            image = batch["image"] / 255.0
            loss = torch.nn.functional.mse_loss(model(image), image)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
            seen += len(image)
    assert seen == 6 * len(naip_run["result"].kept)
    assert np.isfinite(losses).all() and np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])


def test_sampler_over_copies_of_the_rasters_matches_files_by_name(naip_run, naip_dataset, tmp_path):
    from rsprune_geo.loaders import TileGeoSampler

    for name in os.listdir(naip_run["folder"]):
        shutil.copy(naip_run["folder"] / name, tmp_path / name)
    copies = type(naip_dataset)(paths=str(tmp_path))
    here, there = TileGeoSampler(naip_dataset, naip_run["gpkg"]), TileGeoSampler(copies, naip_run["gpkg"])
    assert list(here) == list(there) and len(there) == len(naip_run["result"].kept)
