"""Building a prior-bank profile (``rsprune bank build``): a bank folder's centroids, metric and entropies, in one file.

See :mod:`~rsprune_geo.bank.profile` for what a profile holds and how runs read it.
"""

from __future__ import annotations

import io
import json
import logging
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..choices import MetricMode, Runtime
from ..config import DEFAULT_ENCODER
from ..errors import InputError
from ..features import Encoder, encoder_info, get_encoder
from ..features.base import NetworkEncoder
from ..features.cache import default_cache_dir
from ..features.runtime import Calibration
from ..files import write_atomically
from ..progress import ProgressCallback, no_progress
from ..reading.pixels import read_image, resized, scaled_size
from ..stages.information import image_entropy
from .metric import MetricEncoder, with_views_and_metric
from .priorbank import CentroidSpec, PriorBank, bank_centroids, bank_model, load_prior_bank
from .profile import FORMAT, MIN_SIDE, BankProfile, bank_encoder, centroid_layout, load_profile, packed_arrays

__all__ = ["build_profile", "entropy_table"]

log = logging.getLogger(__name__)


def entropy_table(paths: Sequence[str], on_progress: ProgressCallback = no_progress
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each image's own size, and its entropy at every size a run's scale can bring it to.

    Each image's own (width, height), and its entropy at every size a run's scale can bring it to (rows
    of (image, width, height) and their bits); images in parallel on every core.
    """
    from concurrent.futures import ThreadPoolExecutor

    sizes = np.zeros((len(paths), 2), dtype=np.int32)
    index: list[tuple[int, int, int]] = []
    values: list[float] = []
    with ThreadPoolExecutor(max(1, os.cpu_count() or 1)) as pool:  # Pillow's resize releases the GIL
        for i, (size, rows) in enumerate(pool.map(_image_entropies, paths)):
            sizes[i] = size
            index.extend((i, width, height) for width, height, _ in rows)
            values.extend(bits for _, _, bits in rows)
            on_progress("entropy", i + 1, len(paths))
    return sizes, np.array(index, dtype=np.int32).reshape(-1, 3), np.array(values, dtype=np.float64)


def _image_entropies(path: str) -> tuple[tuple[int, int], list[tuple[int, int, float]]]:
    """One image's own size and its entropy at every reachable size."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            rgb: Any = img.convert("RGB")
    except OSError:
        rgb = None  # not for Pillow: read_image reads it through rasterio, size by size
    size = rgb.size if rgb is not None else read_image(path).shape[1::-1]
    rows = []
    for width, height in sorted(_reachable_sizes((int(size[0]), int(size[1])))):
        pixels = resized(rgb, (width, height)) if rgb is not None else read_image(path, (width, height))
        rows.append((width, height, image_entropy(pixels)))
    return (int(size[0]), int(size[1])), rows


def _reachable_sizes(size: tuple[int, int]) -> set[tuple[int, int]]:
    """Every (width, height) :func:`~rsprune_geo.reading.pixels.scaled_size` gives ``size`` at some scale.

    Probed at each rounding step of either side and between them.
    """
    lowest = min(1.0, MIN_SIDE / max(min(size), 1))
    steps = {lowest, 1.0}
    for side in size:
        steps.update(f for k in range(side + 1) if lowest <= (f := (k + 0.5) / side) <= 1.0)
    ordered = sorted(steps)
    probes = ordered + [(a + b) / 2 for a, b in zip(ordered, ordered[1:])] + [lowest / 2]
    return {scaled_size(size, f, MIN_SIDE) for f in probes} | {(size[0], size[1])}


def build_profile(roots: Sequence[str | os.PathLike], output: str | os.PathLike, encoder: str = DEFAULT_ENCODER,
                  runtime: Runtime | str = Runtime.AUTO, spec: CentroidSpec | None = None,
                  cache_dir: str | os.PathLike | None = None, source: str = "", terms: str = "",
                  on_progress: ProgressCallback = no_progress, views: int = 1,
                  input_sizes: Sequence[int] = ()) -> BankProfile:
    """Build the profile of the bank folders ``roots`` for ``encoder``.

    It runs on this machine's CPU runtime, with its rotation ``views`` averaged, and is written
    atomically at ``output``; see the module's docstring. The bank's scene metric and its centroids are
    stored beside the raw ones when every class has images enough. ``input_sizes``: the encoder's
    input sizes, the first the profile's own (default: the encoder's); the others share its
    network, calibrated at the first.
    """
    spec = spec or CentroidSpec(4, 10, None, None, 0)
    if encoder_info(encoder).needs_bank:
        raise InputError(f"{encoder} draws its filters from the bank's images: a profile cannot carry them; "
                         "give the bank folder to runs")
    sizes_asked = list(dict.fromkeys(int(size) for size in input_sizes))
    cache_root = Path(cache_dir) if cache_dir else default_cache_dir()
    bank, skipped = load_prior_bank(roots, cache_root)
    model = bank_encoder(encoder, bank.paths, None, spec.seed, "cpu", runtime, str(cache_root),
                         sizes_asked[0] if sizes_asked else None)
    int8 = model.runtime is Runtime.ONNX_INT8
    stored, metric_about = _centroid_arrays(bank, model, views, spec, cache_root, on_progress, "")
    centroid_labels = stored.pop("centroid_labels")
    other_sizes: dict[str, dict] = {}
    for size in sizes_asked[1:]:
        same_network = (Calibration.made(getattr(model, "_calibration_digest", ""), str(model.onnx.path))
                        if int8 and isinstance(model, NetworkEncoder) else None)
        sized = get_encoder(encoder, None, None, spec.seed, "cpu", model.runtime, str(cache_root), same_network,
                            size)
        at_size, about_metric = _centroid_arrays(bank, sized, views, spec, cache_root, on_progress, f".{size}")
        assert np.array_equal(at_size.pop("centroid_labels"), centroid_labels)
        stored.update(at_size)
        other_sizes[str(size)] = {"key": sized.cache_key, "metric": about_metric}
    sizes, index, values = entropy_table(bank.paths, on_progress)
    about = {
        "format": FORMAT, "name": Path(output).stem, "source": source or ", ".join(bank.roots), "terms": terms,
        "roots": [os.path.basename(r.rstrip("/")) for r in bank.roots], "fingerprint": bank.fingerprint,
        "gsd": bank.gsd, "image_side": bank.image_side, "images": len(bank), "skipped": len(skipped),
        "classes": bank.class_counts(),
        "encoder": {"name": model.name, "key": model.cache_key, "runtime": str(model.runtime),
                    "calibration": getattr(model, "_calibration_digest", "") if int8 else "",
                    "input_size": model.input_size, "dim": model.dim, "views": views, "metric": metric_about,
                    "centroids": {**centroid_layout(spec), "seed": spec.seed}, "sizes": other_sizes},
    }
    arrays = io.BytesIO()
    stored.update({"labels": bank.labels.astype(str), "sizes": sizes, "entropy_index": index,
                   "entropy_values": values, "centroid_labels": centroid_labels})
    packed: dict[str, Any] = packed_arrays(stored)  # numpy's stubs take **kwargs as its own options
    np.savez_compressed(arrays, **packed)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("profile.json", json.dumps(about, indent=1))
        z.writestr("arrays.npz", arrays.getvalue())
        if isinstance(model, NetworkEncoder) and model.runtime is Runtime.ONNX_INT8:
            z.writestr("int8.onnx", Path(model.onnx.path).read_bytes())
    write_atomically(Path(output), buffer.getvalue())
    log.info("prior-bank profile %s: %d images, %d classes, %d centroids, encoder %s", output, len(bank),
             len(bank.classes), len(centroid_labels), model.cache_key)
    return load_profile(output)


def _centroid_arrays(bank: PriorBank, model: Encoder, views: int, spec: CentroidSpec, cache_root: Path,
                     on_progress: ProgressCallback, suffix: str) -> tuple[dict[str, np.ndarray], dict | None]:
    """The scene centroids (and metric) of ``model`` on the bank as a profile stores them; the metric's JSON.

    Their names end with ``suffix``, but for the centroids' labels, which every input size shares.
    """
    viewed = with_views_and_metric(model, views, None)
    centroids = bank_centroids(bank, viewed, spec, cache_root, on_progress)
    stored = {"centroids" + suffix: centroids.vectors, "centroid_labels": centroids.labels.astype(str),
              "centroid_purity" + suffix: centroids.purity, "centroid_members" + suffix: centroids.members}
    mapped = bank_model(bank, model, MetricMode.BANK, views, cache_root, on_progress)
    if not isinstance(mapped, MetricEncoder):
        return stored, None
    in_metric = bank_centroids(bank, mapped, spec, cache_root, on_progress)
    # both sets share the stored labels: k-means per class gives each class as many centroids in either space
    assert np.array_equal(in_metric.labels, centroids.labels)
    stored.update({"metric_mean" + suffix: mapped.metric.mean, "metric_transform" + suffix: mapped.metric.transform,
                   "metric_centroids" + suffix: in_metric.vectors, "metric_centroid_purity" + suffix: in_metric.purity,
                   "metric_centroid_members" + suffix: in_metric.members})
    return stored, {"dims": mapped.metric.dim, "shrinkage": mapped.metric.shrinkage, "digest": mapped.metric.digest}
