"""Prior-bank profiles: what a run takes from a labelled bank, in one small file.

A profile (``NAME.rsbank``, a zip) holds, for one encoder (keyed by its weights, its runtime and,
for int8, its calibration): the bank's scene centroids (and scene metric) at one or more input
sizes, the int8 network the bank's images calibrated, every image's entropy at every pixel size a
run can bring it to (so the stage-1 floor is the folder's), the bank's ground sample distance,
class names and counts, and its source and terms. ``prior_bank`` takes a profile as it takes a
folder, and the run selects the same tiles; ``prior_bank="default"`` is the profile the package
ships (the UC Merced scenes).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..choices import MetricMode, Runtime
from ..errors import InputError, SkippedInput, counted, param
from ..features import Encoder, encoder_info, get_encoder
from ..features.cache import default_cache_dir
from ..features.runtime import CALIBRATION_IMAGES, Calibration, can_quantize
from ..files import SHIPPED, write_atomically
from ..reading.pixels import read_images, scaled_size
from ..stages.clustering import SceneCentroids
from .metric import MetricEncoder, SceneMetric, with_views_and_metric
from .priorbank import CentroidSpec, PriorBank, load_prior_bank

__all__ = ["DEFAULT_PROFILE", "PROFILE_SUFFIX", "Bank", "BankProfile", "SizedCentroids", "bank_encoder",
           "banks_or_default", "default_profile", "is_profile", "load_profile", "open_bank", "profile_model"]

log = logging.getLogger(__name__)

PROFILE_SUFFIX = ".rsbank"
FORMAT = 1
#: The word ``prior_bank`` takes for the profile the package ships.
DEFAULT_WORD = "default"
#: The word that asks for no prior bank where the faces would use the default.
NO_BANK_WORD = "none"
DEFAULT_PROFILE = SHIPPED / "ucmerced.rsbank"
#: The shorter side :func:`~rsprune_geo.reading.pixels.read_image` never goes below.
MIN_SIDE = 32


@dataclass
class SizedCentroids:
    """A profile's scene centroids for its encoder at one input size.

    The raw ``centroids``; with the bank's scene ``metric`` fitted at that size, the centroids in
    the metric's space too (``metric_centroids``).
    """

    centroids: SceneCentroids
    metric: SceneMetric | None = None
    metric_centroids: SceneCentroids | None = None


@dataclass
class BankProfile:
    """A prior bank as a profile.

    ``about`` (its JSON: source, terms, classes, encoder…), each image's class ``labels`` and own
    ``sizes`` (width, height), its entropies at every pixel size (rows of ``entropy_index``: image,
    width, height; ``entropy_values``: bits), the scene ``centroids`` and the int8 network
    (``quantized`` bytes) for its encoder; with the bank's scene ``metric`` (when its classes have
    images enough), the centroids in the metric's space too. ``other_sizes``: the centroids (and
    metric) at the other input sizes it was built at, the same network run at them.
    """

    path: str
    about: dict
    labels: np.ndarray
    sizes: np.ndarray
    entropy_index: np.ndarray
    entropy_values: np.ndarray
    centroids: SceneCentroids
    quantized: bytes | None
    metric: SceneMetric | None = None
    metric_centroids: SceneCentroids | None = None
    other_sizes: dict[int, SizedCentroids] = field(default_factory=dict)

    @property
    def input_sizes(self) -> list[int]:
        """The encoder's input sizes the profile has centroids for, its own first."""
        return [int(self.about["encoder"]["input_size"]), *sorted(self.other_sizes)]

    def at_size(self, input_size: int) -> BankProfile:
        """The profile as a run at ``input_size`` takes it: the centroids and metric made at that size.

        Raises:
            InputError: the profile was not built at that size.
        """
        built = self.about["encoder"]
        if int(input_size) == int(built["input_size"]):
            return self
        if int(input_size) not in self.other_sizes:
            raise InputError(f"{self.path}: its centroids were made at {' and '.join(map(str, self.input_sizes))} px; "
                             f"this run asks for {param('input_size')} {input_size}: build a profile at it (`rsprune "
                             f"bank build --input-size {input_size}`), or give the bank folder")
        point = self.other_sizes[int(input_size)]
        encoder = {**built, **built["sizes"][str(input_size)], "input_size": int(input_size)}
        encoder.pop("sizes")
        return replace(self, about={**self.about, "encoder": encoder}, centroids=point.centroids,
                       metric=point.metric, metric_centroids=point.metric_centroids, other_sizes={})

    @property
    def roots(self) -> list[str]:
        """The profile file, as a run records where its bank came from."""
        return [self.path]

    @property
    def fingerprint(self) -> str:
        """The fingerprint of the bank the profile was built from."""
        return str(self.about["fingerprint"])

    @property
    def gsd(self) -> float | None:
        """The bank's ground sample distance (metres), when it declared one."""
        return self.about.get("gsd")

    @property
    def image_side(self) -> int:
        """The shorter side (pixels) of the bank's first image."""
        return int(self.about["image_side"])

    @property
    def classes(self) -> list[str]:
        """The class names, sorted."""
        return sorted(self.about["classes"])

    def class_counts(self) -> dict[str, int]:
        """Images per class."""
        return {str(k): int(v) for k, v in self.about["classes"].items()}

    def __len__(self) -> int:
        return int(self.labels.size)

    def entropies(self, scale: float) -> np.ndarray:
        """Each image's entropy (bits) brought to ``scale`` as the folder's images would be."""
        sizes = [scaled_size(tuple(size), scale, MIN_SIDE) for size in self.sizes.tolist()]
        wanted = np.array([(i, *size) for i, size in enumerate(sizes)], dtype=np.int64).reshape(-1, 3)
        keys, asked = _packed(self.entropy_index), _packed(wanted)
        order = np.argsort(keys, kind="stable")
        found = order[np.minimum(np.searchsorted(keys, asked, sorter=order), len(keys) - 1)]
        missing = np.flatnonzero(keys[found] != asked)
        if missing.size:
            i, width, height = wanted[missing[0]]
            raise InputError(f"{self.path}: no entropy of image {i} at {width}x{height} px (scale {scale:.4g}); "
                             "give the bank folder")
        return self.entropy_values[found].astype(np.float64)


#: Numeric arrays of at least this many values are stored as byte planes (see :func:`packed_arrays`).
PLANES_MIN = 1024
_PLANES, _LAYOUT = "@planes", "@layout"


def packed_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays as a profile stores them.

    Each numeric one of :data:`PLANES_MIN` values or more as the byte planes of its column-major values
    (all first bytes, then all second bytes…), with its dtype and shape beside it. Lossless; the planes
    compress about a fifth smaller, which keeps the default install within a gigabyte.
    """
    out: dict[str, np.ndarray] = {}
    for name, value in arrays.items():
        array = np.asarray(value)
        if array.dtype.kind in "fiu" and array.size >= PLANES_MIN:
            flat = array.ravel(order="F")
            out[name + _PLANES] = np.ascontiguousarray(flat.view(np.uint8).reshape(-1, array.dtype.itemsize).T)
            out[name + _LAYOUT] = np.array([array.dtype.str, *map(str, array.shape)])
        else:
            out[name] = array
    return out


def unpacked_arrays(stored: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays :func:`packed_arrays` stored, as they were.

    A profile written before byte planes holds them as they are.
    """
    out: dict[str, np.ndarray] = {}
    for key, value in stored.items():
        if key.endswith(_LAYOUT):
            continue
        if key.endswith(_PLANES):
            name = key[: -len(_PLANES)]
            dtype, *shape = stored[name + _LAYOUT].tolist()
            flat = np.ascontiguousarray(value.T).view(np.dtype(dtype)).ravel()
            out[name] = np.ascontiguousarray(flat.reshape([int(s) for s in shape], order="F"))
        else:
            out[key] = value
    return out


def _packed(rows: np.ndarray) -> np.ndarray:
    """(image, width, height) rows as one sortable int64 each."""
    rows = np.asarray(rows, dtype=np.int64)
    return (rows[:, 0] << 32) | (rows[:, 1] << 16) | rows[:, 2]


#: A prior bank as a run takes it: folders of labelled images, or a profile of them.
Bank = PriorBank | BankProfile


def is_profile(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a profile.

    The word ``default``, a file (a bank is a folder), or a name ending in ``.rsbank``.
    """
    if str(path) == DEFAULT_WORD:
        return True
    return not os.path.isdir(path) and (os.path.isfile(path) or str(path).endswith(PROFILE_SUFFIX))


def default_profile() -> Path | None:
    """The profile the package ships, ``None`` in a source checkout before ``make shipped``."""
    return DEFAULT_PROFILE if DEFAULT_PROFILE.is_file() else None


def banks_or_default(given: Sequence[str]) -> tuple[str, ...]:
    """The prior bank the faces (``rsprune run``, the QGIS plugin) use.

    The one given, else the profile the package ships; ``none`` for no bank (stage 1 alone).
    """
    given = tuple(str(g) for g in given)
    if given == (NO_BANK_WORD,):
        return ()
    if NO_BANK_WORD in given:
        raise InputError(f"{param('prior_bank')} {NO_BANK_WORD} stands alone")
    return given or ((DEFAULT_WORD,) if default_profile() is not None else ())


def open_bank(entries: Sequence[str | os.PathLike], cache_root: str | os.PathLike | None = None
              ) -> tuple[Bank, list[SkippedInput]]:
    """The prior bank a run names.

    Folders (indexed, unreadable images skipped, see
    :func:`~rsprune_geo.bank.priorbank.load_prior_bank`) or one profile; and what was skipped.
    """
    profiles = [e for e in entries if is_profile(e)]
    if not profiles:
        return load_prior_bank(entries, cache_root)
    if len(entries) > 1:
        raise InputError(f"{param('prior_bank')}: a profile stands alone; give one profile or folders, not both")
    return load_profile(profiles[0]), []


def load_profile(path: str | os.PathLike) -> BankProfile:
    """Read a profile written by :func:`~rsprune_geo.bank.building.build_profile` (``default``: the shipped one)."""
    if str(path) == DEFAULT_WORD:
        shipped = default_profile()
        if shipped is None:
            raise InputError("this install ships no default prior-bank profile (a source checkout: run "
                             "`make shipped`); give a bank folder or a profile file")
        path = shipped
    try:
        with zipfile.ZipFile(path) as z:
            about = json.loads(z.read("profile.json"))
            with np.load(io.BytesIO(z.read("arrays.npz")), allow_pickle=False) as arrays:
                data = unpacked_arrays({k: arrays[k] for k in arrays.files})
            quantized = z.read("int8.onnx") if "int8.onnx" in z.namelist() else None
    except FileNotFoundError:
        raise InputError(f"{path}: no such prior-bank profile") from None
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise InputError(f"{path}: not a prior-bank profile written by `rsprune bank build` ({exc})") from None
    if about.get("format") != FORMAT:
        raise InputError(f"{path}: profile format {about.get('format')}; this rsprune_geo reads format {FORMAT}: "
                         "build it again with `rsprune bank build`")
    main = _sized_centroids(data, about["encoder"], "")
    others = {int(size): _sized_centroids(data, point, f".{size}")
              for size, point in about["encoder"].get("sizes", {}).items()}
    return BankProfile(str(path), about, data["labels"], data["sizes"], data["entropy_index"], data["entropy_values"],
                       main.centroids, quantized, main.metric, main.metric_centroids, others)


def _sized_centroids(data: dict[str, np.ndarray], encoder: dict, suffix: str) -> SizedCentroids:
    """The centroids (and metric) a profile stores for one input size, under names ending ``suffix``."""
    labels = data["centroid_labels"]
    centroids = SceneCentroids(data["centroids" + suffix], labels, data["centroid_purity" + suffix],
                               data["centroid_members" + suffix])
    if "metric_transform" + suffix not in data:  # a profile built before the bank metric has none
        return SizedCentroids(centroids)
    metric = SceneMetric(data["metric_mean" + suffix], data["metric_transform" + suffix],
                         float(encoder["metric"]["shrinkage"]))
    in_metric = SceneCentroids(data["metric_centroids" + suffix], labels, data["metric_centroid_purity" + suffix],
                               data["metric_centroid_members" + suffix])
    return SizedCentroids(centroids, metric, in_metric)


#: Prior-bank images used to draw empirical RCF filters (a seeded sample).
RCF_FIT_IMAGES = 1000


def bank_encoder(name: str, bank_paths: list[str], weights: str | None = None, seed: int = 0,
                 device: str | None = None, runtime: Runtime | str = Runtime.AUTO,
                 cache_dir: str | None = None, input_size: int | None = None) -> Encoder:
    """The encoder ``name`` for a bank folder, at ``input_size`` (``None``: its own).

    One that fits on the bank (``rcf-empirical``) draws a seeded sample of the bank's images, and one
    whose int8 variant keeps its accuracy is calibrated on another (``CALIBRATION_IMAGES`` of them, at
    its own input size whatever size it runs at, as a profile's sizes share one network) when it runs
    on onnxruntime. Where this install cannot quantise (onnx, an extra, is not installed) the
    default encoder runs the int8 network of the shipped profile, calibrated on its scenes, and says so.
    """
    info = encoder_info(name)
    rng = np.random.default_rng(seed)

    def sample(n: int) -> list[str]:
        pick = np.sort(rng.choice(len(bank_paths), min(n, len(bank_paths)), replace=False))
        return [bank_paths[i] for i in pick]

    fit_images = read_images(sample(RCF_FIT_IMAGES), info.input_size) if info.needs_bank else None
    calibration = None
    if info.int8 and Runtime.parse(runtime, "runtime") in (Runtime.AUTO, Runtime.ONNX_INT8):
        calibration = None if can_quantize() else shipped_calibration(name, weights, cache_dir)
        if calibration is None:
            # read only when the int8 file must be made; named by the files, so a cached one is reused
            paths = sample(CALIBRATION_IMAGES)
            key = f"{info.input_size}:" + "\n".join(
                f"{os.path.abspath(p)}:{os.stat(p).st_size}:{os.stat(p).st_mtime_ns}" for p in paths)
            calibration = Calibration(key, lambda: read_images(paths, info.input_size))
    return get_encoder(name, weights, fit_images, seed, device, runtime, cache_dir, calibration, input_size)


def shipped_calibration(encoder: str, weights: str | None, cache_dir: str | os.PathLike | None
                        ) -> Calibration | None:
    """The int8 network the shipped profile carries.

    For its own encoder and weights (``None`` for any other, or without a shipped profile), logged as
    standing in for a calibration on the bank: what an install without onnx runs.
    """
    shipped = default_profile()
    if shipped is None or weights:
        return None
    profile = load_profile(shipped)
    built = profile.about["encoder"]
    if built["name"] != encoder or profile.quantized is None:
        return None
    log.warning("onnx is not installed: %s runs the int8 network calibrated on the shipped profile's scenes (%s), "
                "not on this bank; pip install 'rsprune_geo[quantize]' to calibrate on it", encoder,
                profile.about.get("name", shipped.stem))
    return Calibration.made(built["calibration"], str(_extracted(profile.quantized, cache_dir)))


def profile_model(profile: BankProfile, encoder: str, weights: str | None, spec: CentroidSpec,
                  device: str | None, runtime: Runtime | str, cache_dir: str | os.PathLike | None,
                  metric: MetricMode = MetricMode.BANK, views: int | None = None,
                  input_size: int | None = None) -> tuple[Encoder, SceneCentroids]:
    """The encoder a profile was built for.

    With its int8 network, its views, its input size (``input_size``: another it was built at)
    and (``bank``) its scene metric, and its scene centroids in that space; an :class:`InputError`
    when the run asks for another encoder, runtime, centroid layout, input size or number of
    views. A profile built before the bank metric gives the raw cosine, said once.
    """
    if input_size is not None:
        profile = profile.at_size(input_size)
    built = profile.about["encoder"]
    made_with = int(built.get("views", 1))
    if views is not None and views != made_with:
        raise InputError(f"{profile.path}: its centroids were made with {counted(made_with, 'view')}; this run "
                         f"asks for {param('views')} {views}: build a profile with them (`rsprune bank build "
                         f"--views {views}`), or give the bank folder")
    if encoder != built["name"] or weights:
        raise InputError(f"{profile.path}: a profile for the {built['name']} encoder ({built['key']}); this run "
                         f"asks for {encoder}{' with ' + str(weights) if weights else ''}: build a profile for it "
                         "with `rsprune bank build`, or give the bank folder")
    ours, theirs = centroid_layout(spec), built["centroids"]
    if any(theirs.get(k) != v for k, v in ours.items()):
        changed = ", ".join(f"{k} {theirs.get(k)} (this run: {v})" for k, v in ours.items() if theirs.get(k) != v)
        raise InputError(f"{profile.path}: its centroids were fitted with {changed}: build a profile with these "
                         "options, or give the bank folder")
    if Runtime.parse(runtime, "runtime") is Runtime.AUTO:  # where the profile was built to run
        runtime = Runtime.parse(built["runtime"], "runtime")
    calibration = None
    if profile.quantized is not None:
        calibration = Calibration.made(built["calibration"], str(_extracted(profile.quantized, cache_dir)))
    seed = int(theirs.get("seed", spec.seed))  # an encoder drawn from a seed (RCF) is the profile's
    model = get_encoder(encoder, None, None, seed, device, runtime, str(cache_dir) if cache_dir else None,
                        calibration, int(built.get("input_size") or encoder_info(encoder).input_size))
    if model.cache_key != built["key"]:
        raise InputError(f"{profile.path}: built for {built['key']} (runtime {built['runtime']}); this run's encoder "
                         f"is {model.cache_key} (runtime {model.runtime}): give the bank folder, or build a "
                         "profile where this run runs")
    model = with_views_and_metric(model, made_with, None)
    if MetricMode.parse(metric, "metric") is MetricMode.RAW:
        return model, profile.centroids
    if profile.metric is None or profile.metric_centroids is None:
        log.warning("%s was built without the bank's scene metric: nearest scenes use the encoder's raw cosine; "
                    "build it again with `rsprune bank build` for the metric", profile.path)
        return model, profile.centroids
    return MetricEncoder(model, profile.metric), profile.metric_centroids


def centroid_layout(spec: CentroidSpec) -> dict[str, int | None]:
    """The centroid options a profile must share with a run.

    Not the seed: a profile's centroids were fitted with its own.
    """
    return {"k_per_class": spec.k_per_class, "images_per_centroid": spec.images_per_centroid, "k": spec.k,
            "bank_samples": spec.bank_samples}


def _extracted(network: bytes, cache_dir: str | os.PathLike | None) -> Path:
    """A profile's int8 network as a file under the cache (workers open it by its path)."""
    folder = (Path(cache_dir) if cache_dir else default_cache_dir()) / "onnx"
    target = folder / f"profile-int8-{hashlib.blake2b(network, digest_size=8).hexdigest()}.onnx"
    if not target.is_file():
        write_atomically(target, network)
    return target
