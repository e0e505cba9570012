"""Random convolutional features (torchgeo ``RCF``, MOSAIKS): the weight-free encoder."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from ..errors import InputError
from .base import NetworkEncoder, require_torch
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


@register_encoder("rcf-gaussian", "torchgeo RCF, gaussian filters, no weights, no data", input_size=64, dim=512,
                  torch=True)
@register_encoder("rcf-empirical", "torchgeo RCF (MOSAIKS), filters drawn from the prior bank, no weights",
                  input_size=64, dim=512, needs_bank=True, torch=True)
class RCFEncoder(NetworkEncoder):
    """torchgeo's RCF on 64² RGB in [0, 1]: 512 features from 256 3×3 filters.

    ``mode="empirical"`` draws the filters (ZCA-whitened) from patches of ``fit_images`` (the
    prior bank), seeded; ``mode="gaussian"`` draws them from a normal distribution and needs
    no data. No pretrained weights: it separates textures and colours, not semantics (see
    the README's encoder table). On a CPU it runs on onnxruntime (about 3.7x torch's speed,
    measured in ``benchmarks/bench_encoders.py``); the filters are drawn only when torch runs
    it or its export is not cached yet.
    """

    input_size = 64
    dim = 512

    def __init__(self, mode: str = "empirical", fit_images: np.ndarray | None = None,
                 seed: int = 0, features: int = 512, device: str | None = None, runtime: str = "auto",
                 cache_dir: str | None = None):
        if mode not in ("empirical", "gaussian"):
            raise InputError(f"RCF mode {mode!r}: use empirical or gaussian")
        require_torch(f"the rcf-{mode} encoder (torchgeo's RCF)")
        self.name = f"rcf-{mode}"
        self.dim = features
        digest = hashlib.blake2b(f"{mode}:{seed}:{features}".encode(), digest_size=6)
        if mode == "empirical":
            if fit_images is None or len(fit_images) == 0:
                raise InputError("the rcf-empirical encoder draws its filters from the prior bank: "
                                 "give `prior_bank`, or use rcf-gaussian")
            digest.update(np.ascontiguousarray(fit_images[:, ::7, ::7]).tobytes())
        self._digest = digest.hexdigest()
        self._mode, self._seed = mode, seed
        self._fit_images: np.ndarray | None = fit_images
        self._model: Any = None
        self.device = device
        self._setup_runtime(lambda: self.model, runtime, cache_dir)

    @classmethod
    def build(cls, name, weights=None, fit_images=None, seed=0, device=None, **runtime) -> RCFEncoder:
        """``rcf-empirical`` or ``rcf-gaussian``.

        ``weights`` are not used, nor is an int8 ``calibration`` (no int8 variant is offered for RCF).
        """
        runtime.pop("calibration", None)
        return cls(name.split("-")[1], fit_images, seed, device=device, **runtime)

    @property
    def model(self):
        """The torchgeo RCF module with this encoder's filters (drawn on first use, seeded)."""
        if self._model is None:
            from torchgeo.models import RCF

            dataset: Any = None
            if self._mode == "empirical":
                if self._fit_images is None:  # a worker's copy: it runs the exported network only
                    raise InputError("rcf-empirical: its filters cannot be drawn again without the bank's images")
                dataset = _Patches(self._fit_images)
            self._model = RCF(in_channels=3, features=self.dim, kernel_size=3, bias=-1.0,
                              seed=self._seed + 1,  # torchgeo ignores a seed of 0
                              mode=self._mode, dataset=dataset).eval()
        return self._model

    def _state_digest(self) -> str:
        return self._digest

    def _prepare(self, images: np.ndarray) -> np.ndarray:
        x = images.transpose(0, 3, 1, 2).astype(np.float32)
        x *= np.float32(1 / 255)
        return x

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        if state.get("onnx") is not None:  # workers run the exported network: no filters to draw
            state["_fit_images"] = None
        return state
