"""Where an encoder's network runs: onnxruntime on the CPU (exported once, cached), else torch.

On a CPU, onnxruntime runs the same network several times faster than torch eager; an int8
variant, calibrated on prior-bank images (static QDQ quantisation, per-channel weights, reduced
range for CPUs without VNNI), is faster again where it keeps accuracy. Exported files are cached
under ``<cache>/onnx`` with a key made of the encoder's weights digest, its input, the torch and
onnxruntime versions and (int8) the calibration images' digest, so a new version or new weights
export again and nothing stale is reused.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..choices import Runtime
from ..errors import InputError, param, require_extra
from ..files import SHIPPED, file_fingerprint, write_atomically
from .cache import default_cache_dir

__all__ = ["CALIBRATION_IMAGES", "PACKED_SUFFIX", "Calibration", "OnnxNetwork", "can_quantize", "choose_runtime",
           "images_digest", "onnxruntime_version", "pack_network", "unpacked_network"]

log = logging.getLogger(__name__)

#: Calibration images used for int8 quantisation (a seeded sample of the prior bank).
CALIBRATION_IMAGES = 128


def can_quantize() -> bool:
    """Whether this install can quantise a network to int8.

    Onnxruntime's quantisation needs the onnx package, which the ``quantize`` and ``torch`` extras
    bring.
    """
    import importlib.util

    return importlib.util.find_spec("onnx") is not None


def onnxruntime_version() -> str | None:
    """The installed onnxruntime's version, ``None`` when it is not installed."""
    try:
        import onnxruntime
    except ImportError:
        return None
    return str(onnxruntime.__version__)


@dataclass(frozen=True)
class Calibration:
    """Calibration images for the int8 variant, read only when a quantisation must be made.

    ``key`` names them (it keys the quantised file and the embedding cache), ``read()`` returns them as
    uint8 (N, S, S, 3). ``quantized``: the int8 network they made already (a prior-bank profile carries
    it with the images' digest, ``named``, so nothing is read).
    """

    key: str
    read: Callable[[], np.ndarray]
    quantized: str | None = None
    named: str = ""

    @classmethod
    def of(cls, images: np.ndarray) -> Calibration:
        """Images at hand, named by their digest."""
        return cls(images_digest(images), lambda: images)

    @classmethod
    def made(cls, digest: str, quantized: str) -> Calibration:
        """The int8 network ``quantized`` that images named ``digest`` calibrated."""

        def unread() -> np.ndarray:
            raise InputError(f"{quantized}: the calibration images of this int8 network are not at hand")

        return cls("", unread, quantized, named=digest)

    @property
    def digest(self) -> str:
        """A short id of the images."""
        return self.named or hashlib.blake2b(self.key.encode(), digest_size=6).hexdigest()


def choose_runtime(requested: Runtime | str, device: Any, int8_allowed: bool,
                   calibration: np.ndarray | Calibration | None) -> Runtime:
    """The runtime an encoder uses: ``torch``, ``onnx`` (float32) or ``onnx-int8``."""
    requested = Runtime.parse(requested, "runtime")
    on_cpu = getattr(device, "type", str(device)) == "cpu"
    auto = requested is Runtime.AUTO
    if requested is Runtime.TORCH or (auto and (not on_cpu or onnxruntime_version() is None)):
        return Runtime.TORCH
    if requested is Runtime.ONNX_INT8 or (auto and int8_allowed and calibration is not None):
        if calibration is None:
            raise InputError(f"{param('runtime')} onnx-int8 calibrates on prior-bank images: give "
                             f"{param('prior_bank')}")
        return Runtime.ONNX_INT8
    return Runtime.ONNX


def images_digest(images: np.ndarray) -> str:
    """A short digest of calibration images (their shape and a strided sample of pixels)."""
    h = hashlib.blake2b(str(images.shape).encode(), digest_size=6)
    h.update(np.ascontiguousarray(images[:, ::7, ::7]).tobytes())
    return h.hexdigest()


class OnnxNetwork:
    """A torch network exported to ONNX and run by onnxruntime on every CPU core.

    A batch is split into one part per core, each run by a single-threaded session call on a thread of
    its own (no synchronisation inside a call, so a core taken by another thread of the run, a reader
    decoding the next windows, slows one part, not all of them).

    ``load()`` returns the torch module mapping float32 (N, 3, S, S) inputs to (N, D) features
    (called only when the export is not cached yet); ``key`` names its weights and input. With
    ``calibration`` (the images' digest, and a function giving them as the network's prepared
    float32 input, called only when the int8 file is not cached yet) the int8 variant is used.
    ``any_size``: an export takes any height and width (see :func:`_export`); a network given
    (``network``, ``quantized``) must take ``input_size``, else an :class:`InputError`.
    """

    def __init__(self, load: Any, input_size: int, key: str, cache_dir: str | os.PathLike | None = None,
                 calibration: tuple[str, Callable[[], np.ndarray]] | None = None,
                 network: str | os.PathLike | None = None, quantized: str | os.PathLike | None = None,
                 any_size: bool = False):
        import onnxruntime as ort

        self.variant = "int8" if quantized is not None or calibration is not None else "float32"
        self.input_size = input_size
        if quantized is not None:  # quantised already (a prior-bank profile carries its int8 network)
            self.path = Path(quantized)
            self._open()
            return
        folder = Path(cache_dir) if cache_dir else default_cache_dir()
        folder = folder / "onnx"
        folder.mkdir(parents=True, exist_ok=True)
        if network is not None:  # exported already (shipped with the package): torch is not needed
            fp32 = Path(network)
            stem = f"{key}-{input_size}-shipped{file_fingerprint(str(fp32), with_mtime=False, digest_size=4)}"
        else:
            from importlib.metadata import version

            stem = f"{key}-{input_size}-torch{version('torch').split('+')[0]}"
            fp32 = folder / f"{stem}-ort{ort.__version__}.onnx"
            if not fp32.exists():
                _export(load(), input_size, fp32, any_size)
        stem += f"-ort{ort.__version__}"
        path = fp32
        if calibration is not None:
            digest, prepared = calibration
            path = folder / f"{stem}-int8-{digest}.onnx"
            if not path.exists():
                _quantize(fp32, path, prepared())
        self.path = path
        self._open()

    def _open(self) -> None:
        self.session = _session(self.path)
        self.input_name = self.session.get_inputs()[0].name
        fixed = [d for d in self.session.get_inputs()[0].shape[2:] if isinstance(d, int)]
        if any(d != self.input_size for d in fixed):
            raise InputError(f"{self.path}: this network takes {fixed[0]}-px images only, not {self.input_size}: "
                             "export it again (this version's exports take any size), or build its profile again "
                             "with `rsprune bank build`")
        self.lanes = inference_threads()
        self._pool = ThreadPoolExecutor(self.lanes) if self.lanes > 1 else None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Features of a float32 (N, 3, S, S) batch."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self._pool is None or len(x) < 2 * self.lanes:
            return self._run(x)
        parts = np.array_split(x, self.lanes)
        return np.concatenate(list(self._pool.map(self._run, parts)))

    def _run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {self.input_name: x})[0])

    def __getstate__(self) -> dict:
        """Pickled as its file.

        A Dask worker reopens the cached model (the cache folder is shared), or the network the package
        ships from its own install.
        """
        return {"path": str(self.path), "variant": self.variant, "input_size": self.input_size}

    def __setstate__(self, state: dict) -> None:
        self.path, self.variant, self.input_size = Path(state["path"]), state["variant"], state["input_size"]
        packed = SHIPPED / (self.path.name + PACKED_SUFFIX)
        if not self.path.exists() and packed.is_file():
            self.path = unpacked_network(packed)  # the shipped network, from this worker's install
        self._open()


#: How the package ships a network: xz-compressed (about 8% smaller; unpacked once, into the cache).
PACKED_SUFFIX = ".xz"


def unpacked_network(packed: Path, cache_dir: str | os.PathLike | None = None) -> Path:
    """The network of the xz file ``packed``, unpacked once under ``<cache>/onnx`` (named as it ships, unpacked)."""
    import lzma

    digest = file_fingerprint(str(packed), with_mtime=False, digest_size=6)
    target = (Path(cache_dir) if cache_dir else default_cache_dir()) / "onnx" / f"shipped-{digest}" / packed.stem
    if not target.is_file():
        write_atomically(target, lzma.decompress(packed.read_bytes()))
    return target


def pack_network(network: Path) -> Path:
    """Compress ``network`` to ``NAME.xz`` beside it (as the package ships it) and remove it."""
    import lzma

    packed = network.with_name(network.name + PACKED_SUFFIX)
    with lzma.open(packed, "wb", preset=9 | lzma.PRESET_EXTREME) as out:
        out.write(network.read_bytes())
    network.unlink()
    return packed


def inference_threads() -> int:
    """Threads an onnxruntime session may use here.

    A Dask worker's own thread count (its siblings on the machine run sessions too), else every core.
    """
    try:
        from distributed import get_worker

        return max(1, int(get_worker().state.nthreads))
    except (ImportError, ValueError, AttributeError):
        return max(1, os.cpu_count() or 1)


def _session(path: Path) -> Any:
    """An onnxruntime session on the CPU whose calls run on their caller's thread.

    Callers run several at once, see :class:`OnnxNetwork`.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _export(module: Any, input_size: int, target: Path, any_size: bool = False) -> None:
    """Export ``module`` to ONNX (opset 17, dynamic batch) atomically at ``target``.

    Traced at ``input_size``; with ``any_size`` its height and width are dynamic too (a network that
    pools its last feature map runs at any size).
    """
    import warnings

    import torch

    fd, tmp = tempfile.mkstemp(prefix=".export-", suffix=".onnx", dir=target.parent)
    os.close(fd)
    try:
        with warnings.catch_warnings(), torch.inference_mode(False):
            warnings.simplefilter("ignore")
            torch.onnx.export(module.eval(), (torch.zeros(2, 3, input_size, input_size),), tmp,
                              input_names=["images"], output_names=["features"],
                              dynamic_axes={"images": {0: "batch", **({2: "height", 3: "width"} if any_size else {})},
                                            "features": {0: "batch"}}, opset_version=17,
                              dynamo=False)
        os.replace(tmp, target)
        log.info("exported %s to ONNX: %s", type(module).__name__, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _quantize(fp32: Path, target: Path, calibration: np.ndarray) -> None:
    """Static int8 quantisation of ``fp32`` calibrated on ``calibration``, atomically at ``target``."""
    require_extra("onnx", "quantize", "int8 quantisation (calibrating a network on images)")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"images": calibration[i : i + 16]} for i in range(0, len(calibration), 16)])

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    try:  # symbolic shape inference needs sympy, which comes with torch: the lean install goes without
        import sympy  # noqa: F401

        symbolic = True
    except ImportError:  # the same int8 outputs for EfficientNet-Lite0 (measured: bit-identical features)
        symbolic = False
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=not symbolic)
        out = Path(tmp) / "int8.onnx"
        quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        os.replace(out, target)
    log.info("quantised to int8 on %d calibration images: %s", len(calibration), target)
