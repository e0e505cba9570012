"""Encoders on onnxruntime: exported once and cached by weights and versions, equal to torch
in float32, an int8 variant calibrated on prior-bank images, chosen automatically."""

import pickle

import numpy as np
import pytest

from rsprune_geo.bank.priorbank import find_prior_bank
from rsprune_geo.errors import InputError
from rsprune_geo.features import get_encoder
from rsprune_geo.features import runtime as rt
from rsprune_geo.reading.pixels import read_images

from .conftest import SHARED_DATA


@pytest.fixture(scope="module")
def scenes():
    bank = find_prior_bank([str(SHARED_DATA / "scenes" / "ucmerced")])
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(len(bank), 96, replace=False))
    return read_images([bank.paths[i] for i in pick], 224)


def test_onnx_float32_equals_torch_and_is_exported_once(scenes, tmp_path, monkeypatch):
    from rsprune_geo.features.efficientnet import default_weights_path, shipped_network

    torch_enc = get_encoder("efficientnet-lite0", runtime="torch")
    shipped = get_encoder("efficientnet-lite0", cache_dir=str(tmp_path))  # auto on a CPU: the shipped network
    assert (torch_enc.runtime, shipped.runtime) == ("torch", "onnx")
    # unpacked from the package's xz file once, into the cache: no export
    assert shipped.onnx.path == shipped_network().path(tmp_path) and not list((tmp_path / "onnx").glob("*.onnx"))
    weights = default_weights_path()  # weights given: exported from them, once
    onnx_enc = get_encoder("efficientnet-lite0", weights=weights, cache_dir=str(tmp_path))
    for encoder in (shipped, onnx_enc):
        cosine = (torch_enc.encode(scenes[:32]) * encoder.encode(scenes[:32])).sum(axis=1)
        assert cosine.min() >= 0.9999
        assert encoder.cache_key == torch_enc.cache_key  # the same vectors: the same embedding cache
    exported = sorted((tmp_path / "onnx").glob("*.onnx"))
    assert len(exported) == 1 and f"ort{rt.onnxruntime_version()}" in exported[0].name
    assert onnx_enc._state_digest() in exported[0].name  # keyed by the weights' digest
    assert exported[0].read_bytes() == shipped_network().path(tmp_path).read_bytes()  # what the package ships

    def no_export(*args):
        raise AssertionError("exported again")

    monkeypatch.setattr(rt, "_export", no_export)
    get_encoder("efficientnet-lite0", weights=weights, cache_dir=str(tmp_path))  # the cached file is reused
    # a worker whose install sits elsewhere opens the shipped network from its own
    state = {**shipped.onnx.__getstate__(), "path": str(tmp_path / "elsewhere" / shipped.onnx.path.name)}
    worker = rt.OnnxNetwork.__new__(rt.OnnxNetwork)
    worker.__setstate__(state)
    assert worker.path == shipped_network().path() and worker.path.read_bytes() == shipped.onnx.path.read_bytes()


def test_int8_is_calibrated_on_bank_images_and_keeps_the_neighbours(scenes, tmp_path):
    fp32 = get_encoder("efficientnet-lite0", cache_dir=str(tmp_path))
    int8 = get_encoder("efficientnet-lite0", cache_dir=str(tmp_path), calibration=scenes[:64])
    assert int8.runtime == "onnx-int8" and int8.cache_key != fp32.cache_key and "int8" in int8.cache_key
    a, b = fp32.encode(scenes), int8.encode(scenes)
    assert (a * b).sum(axis=1).mean() > 0.9
    # nearest neighbours mostly survive quantisation
    sim_a, sim_b = a @ a.T, b @ b.T
    np.fill_diagonal(sim_a, -2)
    np.fill_diagonal(sim_b, -2)
    assert (sim_a.argmax(1) == sim_b.argmax(1)).mean() > 0.7
    # a Dask worker gets the encoder pickled and reopens the cached network
    again = pickle.loads(pickle.dumps(int8))
    assert np.allclose(again.encode(scenes[:4]), b[:4], atol=1e-6)


def test_runtime_choice_and_errors():
    assert rt.choose_runtime("auto", "cuda", True, np.zeros((1, 8, 8, 3), np.uint8)) == "torch"
    assert rt.choose_runtime("auto", "cpu", True, None) == "onnx"
    assert rt.choose_runtime("auto", "cpu", False, np.zeros((1, 8, 8, 3), np.uint8)) == "onnx"
    assert rt.choose_runtime("auto", "cpu", True, np.zeros((1, 8, 8, 3), np.uint8)) == "onnx-int8"
    with pytest.raises(InputError, match="calibrates on prior-bank images"):
        rt.choose_runtime("onnx-int8", "cpu", True, None)
    with pytest.raises(InputError, match="`runtime` tpu"):
        rt.choose_runtime("tpu", "cpu", True, None)


def test_rcf_runs_on_onnxruntime_equal_to_torch_and_ships_no_filters_to_workers(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    bank = rng.integers(0, 256, (24, 64, 64, 3), dtype=np.uint8)
    tiles = rng.integers(0, 256, (16, 64, 64, 3), dtype=np.uint8)
    for name in ("rcf-gaussian", "rcf-empirical"):
        fast = get_encoder(name, fit_images=bank, seed=2, cache_dir=str(tmp_path))
        slow = get_encoder(name, fit_images=bank, seed=2, runtime="torch")
        assert (fast.runtime, slow.runtime) == ("onnx", "torch") and fast.cache_key == slow.cache_key
        assert (fast.encode(tiles) * slow.encode(tiles)).sum(axis=1).min() >= 0.9999
        shipped = pickle.loads(pickle.dumps(fast))  # what a Dask worker gets: the cached file, no bank
        assert shipped._fit_images is None and shipped._model is None
        assert np.array_equal(shipped.encode(tiles), fast.encode(tiles))
    # a cached export is reused without drawing the filters again (torchgeo's RCF not built)
    monkeypatch.setattr(type(fast), "model", property(lambda self: pytest.fail("filters drawn again")))
    again = get_encoder("rcf-empirical", fit_images=bank, seed=2, cache_dir=str(tmp_path))
    assert np.array_equal(again.encode(tiles), fast.encode(tiles))


def test_exports_are_kept_in_the_default_cache_folder(private_cache, monkeypatch):
    # RSPRUNE_CACHE names the folder (the test session points it at its own, cold one)
    encoder = get_encoder("rcf-gaussian", seed=11)
    assert encoder.onnx.path.parent == private_cache / "onnx"
    monkeypatch.setenv("RSPRUNE_CACHE", str(private_cache / "elsewhere"))
    assert get_encoder("rcf-gaussian", seed=11).onnx.path.parent == private_cache / "elsewhere" / "onnx"


def test_a_cached_export_opens_without_importing_torch(tmp_path):
    import subprocess
    import sys

    code = ("import sys; from rsprune_geo.features import get_encoder; "
            f"get_encoder('rcf-gaussian', cache_dir={str(tmp_path)!r}); print('torch' in sys.modules)")
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    again = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert first.stdout.strip() == "True"  # exported with torch once
    assert again.stdout.strip() == "False"  # then opened by onnxruntime alone


def test_a_network_of_fixed_size_refuses_another_size(tmp_path):
    """The shipped network takes any size; one exported for one size says so in one line."""
    import onnx

    from rsprune_geo.features.efficientnet import shipped_network

    model = onnx.load(str(shipped_network().path(tmp_path)))
    assert [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim[2:]] == ["height", "width"]
    for dim in model.graph.input[0].type.tensor_type.shape.dim[2:]:
        dim.dim_value = 224
    fixed = tmp_path / "fixed.onnx"
    onnx.save(model, str(fixed))
    assert rt.OnnxNetwork(None, 224, "fixed", tmp_path, quantized=fixed)(np.zeros((1, 3, 224, 224))).shape == (1, 1280)
    with pytest.raises(InputError, match="fixed.onnx: this network takes 224-px images only, not 128"):
        rt.OnnxNetwork(None, 128, "fixed", tmp_path, quantized=fixed)


def test_the_default_encoder_runs_at_its_measured_sizes_only(scenes, tmp_path):
    small = get_encoder("efficientnet-lite0", cache_dir=str(tmp_path), input_size=128)
    assert small.input_size == 128 and "-128-" in small.cache_key
    assert small.encode(read_images_at(scenes[:4], 128)).shape == (4, 1280)
    with pytest.raises(InputError, match="`input_size` 100: efficientnet-lite0 runs at 224 px; or 128, 160"):
        get_encoder("efficientnet-lite0", input_size=100)
    with pytest.raises(InputError, match="`input_size` 128: rcf-gaussian runs at 64 px$"):
        get_encoder("rcf-gaussian", input_size=128)
    assert get_encoder("rcf-gaussian", input_size=64).input_size == 64  # its own size is always fine


def read_images_at(images, size):
    """Images resized to ``size`` (Pillow), as a run reads them at the encoder's input size."""
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(image).resize((size, size))) for image in images])


def test_a_packed_network_unpacks_once_into_the_cache(tmp_path):
    network = tmp_path / "net.onnx"
    network.write_bytes(b"onnx bytes " * 1000)
    packed = rt.pack_network(network)
    assert packed.name == "net.onnx.xz" and not network.exists() and packed.stat().st_size < 11000
    unpacked = rt.unpacked_network(packed, tmp_path / "cache")
    assert unpacked.read_bytes() == b"onnx bytes " * 1000 and unpacked.name == "net.onnx"
    unpacked.write_bytes(b"kept")  # unpacked once: a file already there is used as it is
    assert rt.unpacked_network(packed, tmp_path / "cache").read_bytes() == b"kept"
