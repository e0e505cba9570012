"""Random convolutional features (torchgeo ``RCF``, MOSAIKS): the weight-free encoder."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from ..errors import InputError
from .base import Encoder, torch_device
from .registry import register_encoder


class _Patches:
    """The minimal dataset torchgeo's RCF samples empirical filters from."""

    def __init__(self, images: np.ndarray):
        import torch

        self._images = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float() / 255.0

    def __len__(self) -> int:
        return self._images.shape[0]

    def __getitem__(self, index: int) -> dict:
        return {"image": self._images[index]}


@register_encoder("rcf-gaussian", "torchgeo RCF, gaussian filters, no weights, no data", input_size=64, dim=512)
@register_encoder("rcf-empirical", "torchgeo RCF (MOSAIKS), filters drawn from the prior bank, no weights",
                  input_size=64, dim=512, needs_bank=True)
class RCFEncoder(Encoder):
    """torchgeo's RCF on 64² RGB in [0, 1]: 512 features from 256 3×3 filters.

    ``mode="empirical"`` draws the filters (ZCA-whitened) from patches of ``fit_images`` (the
    prior bank), seeded; ``mode="gaussian"`` draws them from a normal distribution and needs
    no data. No pretrained weights: it separates textures and colours, not semantics (see
    the README's encoder table).
    """

    input_size = 64
    dim = 512

    def __init__(self, mode: str = "empirical", fit_images: np.ndarray | None = None,
                 seed: int = 0, features: int = 512, device: str | None = None):
        from torchgeo.models import RCF

        if mode not in ("empirical", "gaussian"):
            raise InputError(f"RCF mode {mode!r}: use empirical or gaussian")
        self.name = f"rcf-{mode}"
        self.dim = features
        torch_seed = seed + 1  # torchgeo ignores a seed of 0
        dataset: Any = None
        digest = hashlib.blake2b(f"{mode}:{seed}:{features}".encode(), digest_size=6)
        if mode == "empirical":
            if fit_images is None or len(fit_images) == 0:
                raise InputError("the rcf-empirical encoder draws its filters from the prior bank: "
                                 "give `prior_bank`, or use rcf-gaussian")
            dataset = _Patches(fit_images)
            digest.update(np.ascontiguousarray(fit_images[:, ::7, ::7]).tobytes())
        self.device = torch_device(device)
        self.model = RCF(in_channels=3, features=features, kernel_size=3, bias=-1.0,
                         seed=torch_seed, mode=mode, dataset=dataset).eval().to(self.device)
        self._digest = digest.hexdigest()

    @classmethod
    def build(cls, name, weights=None, fit_images=None, seed=0, device=None, **runtime) -> RCFEncoder:
        """``rcf-empirical`` or ``rcf-gaussian``; ``weights`` are not used, and it runs on torch
        (a single convolution: onnxruntime would not be faster)."""
        return cls(name.split("-")[1], fit_images, seed, device=device)

    def _state_digest(self) -> str:
        return self._digest

    def _embed(self, images: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(images).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        return self.model(x).cpu().numpy()
