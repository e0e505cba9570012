"""The scene-encoder contract: uint8 RGB images in, L2-normalised float32 vectors out."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from ..errors import InputError


class Encoder(ABC):
    """A scene encoder.

    Subclasses set ``name``, ``input_size`` (square side in pixels the images are resized to
    before :meth:`encode`) and ``dim``, and implement :meth:`_embed`. :meth:`encode` takes a
    batch of uint8 RGB images shaped (N, input_size, input_size, 3) and returns (N, dim)
    float32 rows of unit length. ``cache_key`` names everything that changes the vectors
    (model, weights, input size, fitted state), so cached embeddings never mix encoders.
    """

    name: str = ""
    input_size: int = 224
    dim: int = 0
    batch_size: int = 32

    @property
    def cache_key(self) -> str:
        """A short id of this encoder's exact configuration and weights."""
        return f"{self.name.replace('.', '_')}-{self.input_size}-{self._state_digest()}"

    def _state_digest(self) -> str:
        return "0"

    @classmethod
    def build(cls, name: str, weights: str | None = None, fit_images: np.ndarray | None = None, seed: int = 0,
              device: str | None = None) -> Encoder:
        """Build the encoder registered as ``name`` (see :func:`~rsprune_geo.features.get_encoder`);
        by default ``cls(weights, device)``."""
        factory: Any = cls
        return factory(weights, device)

    def encode(self, images: np.ndarray) -> np.ndarray:
        """Embed (N, S, S, 3) uint8 images as (N, dim) L2-normalised float32 vectors."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError("images must be uint8 shaped (N, size, size, 3)")
        if images.shape[0] == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = np.asarray(self._embed(images), dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms > 0, norms, 1)

    @abstractmethod
    def _embed(self, images: np.ndarray) -> np.ndarray:
        """Raw (N, dim) features of a batch of uint8 images."""


def file_digest(path: str, length: int = 12) -> str:
    """Content key of a weights file (size, head and tail; not its mtime, so a copy keeps it)."""
    from ..pixels import file_fingerprint

    return file_fingerprint(path, with_mtime=False, chunk=1 << 20, digest_size=length // 2)


def require_file(path: str, what: str, hint: str) -> str:
    """Return ``path`` if it exists, else raise a clear error naming where to put the file."""
    if not os.path.isfile(path):
        raise InputError(f"{what} not found at {path}; {hint}")
    return path


def torch_device(device: str | None = None):
    """The torch device to use: the one asked for, else CUDA when present, else the CPU
    (with all cores)."""
    import torch

    if device:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    return torch.device("cpu")
