"""The scene-encoder contract: uint8 RGB images in, L2-normalised float32 vectors out."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np

from ..choices import Runtime
from ..errors import InputError, require_extra
from ..files import file_fingerprint
from .runtime import Calibration, OnnxNetwork, choose_runtime


def require_torch(what: str) -> None:
    """An :class:`InputError` naming the ``torch`` extra when it is needed and missing.

    ``what`` (an encoder, a runtime, a loader) needs PyTorch. Looked up, not imported: an encoder whose
    export is cached never imports torch.
    """
    require_extra("torch", "torch", what, named="PyTorch")


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
    #: Other input sizes the encoder runs at (measured; ``input_size`` is its default).
    sizes: tuple[int, ...] = ()
    dim: int = 0
    batch_size: int = 32
    #: Where the network runs: ``torch``, ``onnx`` (onnxruntime, float32) or ``onnx-int8``.
    runtime: Runtime = Runtime.TORCH

    @property
    def cache_key(self) -> str:
        """A short id of this encoder's exact configuration and weights.

        And, for int8, its calibration: its vectors differ from float32's.
        """
        key = f"{self.name.replace('.', '_')}-{self.input_size}-{self._state_digest()}"
        return key + (f"-int8-{self._calibration_digest}" if self.runtime is Runtime.ONNX_INT8 else "")

    _calibration_digest: str = ""

    def _state_digest(self) -> str:
        return "0"

    @classmethod
    def build(cls, name: str, weights: str | None = None, fit_images: np.ndarray | None = None, seed: int = 0,
              device: str | None = None, **runtime: Any) -> Encoder:
        """Build the encoder registered as ``name`` (see :func:`~rsprune_geo.features.get_encoder`).

        By default ``cls(weights, device, **runtime)``; ``runtime`` holds ``runtime``, ``cache_dir`` and
        ``calibration`` for encoders with a network (:class:`NetworkEncoder`).
        """
        factory: Any = cls
        return factory(weights, device, **runtime)

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


class NetworkEncoder(Encoder):
    """An encoder whose network is a torch module, run by torch or by onnxruntime.

    Subclasses call :meth:`_setup_runtime` with their network (a torch module mapping float32
    (N, 3, S, S) to (N, D) features, or a function that loads and returns it: then it is loaded
    only when torch runs it or it must be exported, so a run whose export is cached never imports
    torch) and implement :meth:`_prepare` (uint8 images → the network's float32 input). ``int8``
    says whether the int8 variant keeps the encoder's accuracy (measured; see the README).
    """

    int8: bool = False
    device: Any = None
    module: Any = None
    onnx: Any = None

    def _setup_runtime(self, module: Any, runtime: Runtime | str = Runtime.AUTO, cache_dir: str | None = None,
                       calibration: Any = None, network: str | os.PathLike | None = None) -> None:
        """Choose the runtime and, for onnxruntime, export and open the network.

        Choose the runtime (see :func:`~rsprune_geo.features.runtime.choose_runtime`) and, for onnxruntime,
        export (once, cached) and open the network; on failure, fall back to torch. ``calibration``: uint8
        images, or a :class:`~rsprune_geo.features.runtime.Calibration` read only when the int8 file must be
        made. ``network``: the network already exported (the one the package ships), so onnxruntime runs it
        without torch.
        """
        load = module if callable(module) and not hasattr(module, "forward") else (lambda: module)
        self.device = resolve_device(self.device)
        self.runtime = choose_runtime(runtime, self.device, self.int8, calibration)
        if self.runtime is Runtime.TORCH:
            asked = "runtime torch" if Runtime.parse(runtime, "runtime") is Runtime.TORCH else f"device {self.device}"
            require_torch(f"{self.name} on torch ({asked})")
            self.module = load().eval().to(torch_device(self.device))
            return
        calibrated, quantized = None, None
        if self.runtime is Runtime.ONNX_INT8:
            assert calibration is not None
            images = calibration if isinstance(calibration, Calibration) else Calibration.of(calibration)
            self._calibration_digest = images.digest
            calibrated = (images.digest, lambda: self._prepare(images.read()))
            quantized = images.quantized
        if network is None and quantized is None:
            require_torch(f"{self.name} (its network is exported to ONNX with torch on first use)")
        side = self._prepare(np.zeros((1, self.input_size, self.input_size, 3), dtype=np.uint8)).shape[-1]
        try:
            key = f"{self.name.replace('.', '_')}-{self._state_digest()}"
            self.onnx = OnnxNetwork(lambda: load().to("cpu"), int(side), key, cache_dir, calibrated, network,
                                    quantized, any_size=bool(self.sizes))
        except InputError:
            raise
        except Exception as exc:  # an operator the exporter cannot write: torch still works
            if Runtime.parse(runtime, "runtime") is not Runtime.AUTO:
                raise InputError(f"{self.name}: cannot run on onnxruntime ({str(exc).splitlines()[0]})") from None
            import logging

            logging.getLogger(__name__).warning("%s: onnxruntime export failed (%s); using torch",
                                                self.name, str(exc).splitlines()[0])
            self.runtime, self.onnx = Runtime.TORCH, None
            self.module = load().eval().to(torch_device(self.device))

    @abstractmethod
    def _prepare(self, images: np.ndarray) -> np.ndarray:
        """The network's float32 (N, 3, S, S) input from uint8 (N, S, S, 3) images."""

    def _embed(self, images: np.ndarray) -> np.ndarray:
        x = self._prepare(images)
        if self.onnx is not None:
            return self.onnx(x)
        import torch

        with torch.inference_mode():
            features = self.module(torch.from_numpy(x).to(torch_device(self.device)))
        return features.flatten(1).cpu().numpy()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if state.get("onnx") is not None:  # workers run the exported network; torch's stays here
            state["module"] = None
            state.pop("model", None)
            if "_model" in state:
                state["_model"] = None
        return state


def torch_network(model: Any, call: Callable[[Any, Any], Any]) -> Any:
    """A torch module holding ``model`` whose forward is ``call(model, x)``.

    The forward gives pooled features from a backbone, or from the image tower of a two-tower model,
    ready for torch or an ONNX export.
    """
    import torch

    class Network(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return call(self.model, x)

    return Network()


def unit_range(images: np.ndarray) -> np.ndarray:
    """uint8 (N, S, S, 3) images as float32 (N, 3, S, S) in [-1, 1]."""
    x = np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32)
    x *= np.float32(1 / 127.5)
    x -= np.float32(1.0)
    return x


def file_digest(path: str, length: int = 12) -> str:
    """Content key of a weights file (size, head and tail; not its mtime, so a copy keeps it)."""
    return file_fingerprint(path, with_mtime=False, chunk=1 << 20, digest_size=length // 2)


def require_file(path: str, what: str, hint: str) -> str:
    """Return ``path`` if it exists, else raise a clear error naming where to put the file."""
    if not os.path.isfile(path):
        raise InputError(f"{what} not found at {path}; {hint}")
    return path


def resolve_device(device: Any = None) -> str:
    """``cuda`` or ``cpu`` (or the device asked for).

    Without importing torch on a machine with no NVIDIA device.
    """
    if device:
        return str(device)
    if not any(os.path.exists(p) for p in ("/dev/nvidia0", "/dev/nvidiactl", "/proc/driver/nvidia/version")):
        return "cpu"
    try:
        import torch
    except ImportError:  # the lean install: onnxruntime on the CPU
        return "cpu"

    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_device(device: str | None = None):
    """The torch device to use: the one asked for, else CUDA when present, else the CPU (with all cores)."""
    import torch

    if device:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    return torch.device("cpu")
