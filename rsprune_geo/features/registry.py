"""The encoder registry: classes registered by name with their input size and dimension."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from ..config import DEFAULT_ENCODER
from ..errors import InputError, param
from .base import Encoder, require_torch

E = TypeVar("E", bound=type[Encoder])


@dataclass(frozen=True)
class EncoderInfo:
    """What an encoder takes and gives, known without loading it.

    ``input_size``: the square side images are resized to by default; ``dim``: the vector length
    (``None`` when only the weights tell); ``needs_bank``: it fits on prior-bank images (``fit_images``);
    ``weights``: what ``weights=`` may point at (``file`` or ``folder``); ``int8``: its int8
    variant keeps accuracy, so it is used on CPUs when prior-bank images calibrate it; ``torch``:
    it needs PyTorch whatever the runtime (the ``torch`` extra); ``sizes``: the input sizes it also
    runs at (measured), empty when only ``input_size``.
    """

    name: str
    cls: type[Encoder]
    description: str
    input_size: int
    dim: int | None
    needs_bank: bool = False
    weights: str = "file"
    int8: bool = False
    torch: bool = False
    sizes: tuple[int, ...] = ()

    def require_installed(self, what: str | None = None) -> None:
        """An :class:`InputError` naming the ``torch`` extra when it is needed and missing.

        ``what`` is the subject of the message (default: the encoder).
        """
        if self.torch:
            require_torch(what or f"the {self.name} encoder")


_REGISTRY: dict[str, EncoderInfo] = {}


def register_encoder(name: str, description: str, input_size: int, dim: int | None,
                     needs_bank: bool = False, weights: str = "file", int8: bool = False,
                     torch: bool = False) -> Callable[[E], E]:
    """Class decorator: register an :class:`Encoder` subclass under ``name``.

    The class is built as ``cls.build(name, weights, fit_images, seed, device, **runtime)``; its
    ``sizes`` are the input sizes it also runs at.
    """

    def decorate(cls: E) -> E:
        if name in _REGISTRY:
            raise ValueError(f"encoder {name!r} is registered twice")
        _REGISTRY[name] = EncoderInfo(name, cls, description, input_size, dim, needs_bank, weights, int8, torch,
                                      tuple(cls.sizes))
        return cls

    return decorate


def list_encoders(torchgeo: bool = False) -> list[str]:
    """Names of the registered encoders.

    Args:
        torchgeo: also every 3-band torchgeo weight.

    Returns:
        The names.
    """
    names = list(_REGISTRY)
    if torchgeo:
        from .torchgeo_weights import torchgeo_weight_names

        names += torchgeo_weight_names()
    return names


def encoder_info(name: str) -> EncoderInfo:
    """What an encoder is: its input size, dimension, extra and weights.

    Args:
        name: a registered name or a torchgeo weight name.

    Returns:
        Its :class:`EncoderInfo`.

    Raises:
        InputError: no encoder has that name.
    """
    if name in _REGISTRY:
        return _REGISTRY[name]
    if "_Weights." in name:
        from .torchgeo_weights import TorchgeoEncoder, torchgeo_weight

        weight = torchgeo_weight(name)
        return EncoderInfo(name, TorchgeoEncoder, f"torchgeo {weight}", TorchgeoEncoder.input_size, None,
                           torch=True)
    raise InputError(f"unknown encoder {name!r}; `rsprune encoders` lists them")


def get_encoder(name: str | None = None, weights: str | None = None, fit_images: np.ndarray | None = None,
                seed: int = 0, device: str | None = None, runtime: str = "auto", cache_dir: str | None = None,
                calibration: Any = None, input_size: int | None = None) -> Encoder:
    """Build the encoder ``name``.

    Args:
        name: a registered name or a torchgeo weight name; ``None`` for the offline default.
        weights: a local weights file or folder, for encoders that take one.
        fit_images: prior-bank images at the encoder's input size, for encoders that fit on
            them (``rcf-empirical``).
        seed: the seed of encoders that draw (``rcf``).
        device: ``cpu`` or ``cuda``; ``None`` picks.
        runtime: where the network runs: ``auto`` (onnxruntime on a CPU, torch on CUDA),
            ``torch``, ``onnx`` or ``onnx-int8`` (see :mod:`~rsprune_geo.features.runtime`).
        cache_dir: where exported networks are kept.
        calibration: uint8 images at the input size that calibrate the int8 variant, or a
            :class:`~rsprune_geo.features.runtime.Calibration` read only when needed.
        input_size: the side images are resized to, one of the encoder's ``sizes``; ``None``
            for its own.

    Returns:
        The encoder.

    Raises:
        InputError: the name is unknown, its extra (``torch``) is not installed, or it does not
            run at ``input_size``.
    """
    info = encoder_info(name or DEFAULT_ENCODER)
    sized = {} if input_size is None or input_size == info.input_size else {"input_size": input_size}
    if sized and input_size not in info.sizes:
        others = f"; or {', '.join(map(str, info.sizes))}" if info.sizes else ""
        raise InputError(f"{param('input_size')} {input_size}: {info.name} runs at {info.input_size} px{others}")
    return info.cls.build(info.name, weights, fit_images, seed, device, runtime=runtime, cache_dir=cache_dir,
                          calibration=calibration, **sized)


def independent_encoder_name(run_encoder: str, requested: str | None = None) -> str:
    """The encoder coverage and Fréchet are measured with.

    ``requested``, else one unlike the run's (``rcf-empirical``, or ``efficientnet-lite0`` when the run
    used RCF).
    """
    if requested:
        return requested
    return "efficientnet-lite0" if run_encoder.startswith("rcf") else "rcf-empirical"
