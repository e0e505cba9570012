"""The prior bank.

Labelled scene-classification datasets (a folder per class), indexed, and what an encoder makes of
it: its images' embeddings and the scene centroids stage 2 assigns tiles to (cached, so many runs
share them). The encoder fitted or calibrated on its images is
:func:`rsprune_geo.bank.profile.bank_encoder`.

Its images are read through :func:`rsprune_geo.reading.pixels.read_images`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..choices import MetricMode
from ..errors import InputError, SkippedInput, param
from ..features import Encoder
from ..features.cache import atomic_save_npz, default_cache_dir, load_npz
from ..progress import ProgressCallback, no_progress
from ..reading.pixels import read_image, read_images
from ..stages.clustering import SceneCentroids, fit_scene_centroids
from .metric import MIN_IMAGES_PER_CLASS, MetricEncoder, SceneMetric, with_views_and_metric

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}

log = logging.getLogger(__name__)

#: Ground sample distance (metres per pixel) of well-known scene datasets, by the lower-cased
#: name of their root folder; a ``bank.json`` (``{"gsd": 0.3}``) beside the class folders wins.
#: Datasets whose images span many GSDs (AID 0.5–8 m, RESISC45 0.2–30 m) have no single value.
KNOWN_GSD = {
    "ucmerced": 0.3, "ucmerced_landuse": 0.3, "uc_merced": 0.3, "ucmerced-landuse": 0.3,
    "eurosat": 10.0, "eurosat_rgb": 10.0, "eurosat_ms": 10.0, "2750": 10.0,
    "whu-rs19": 0.5, "rs_c11": 0.2, "so2sat": 10.0, "bigearthnet": 10.0,
}


@dataclass
class PriorBank:
    """The images of one or more labelled datasets: ``paths[i]`` has class ``labels[i]``."""

    roots: list[str]
    paths: list[str]
    labels: np.ndarray
    fingerprint: str
    gsd: float | None = None
    root_gsd: list[float | None] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        """The class names, sorted."""
        return sorted(set(self.labels.tolist()))

    def __len__(self) -> int:
        return len(self.paths)

    def class_counts(self) -> dict[str, int]:
        """Images per class."""
        names, counts = np.unique(self.labels, return_counts=True)
        return {str(n): int(c) for n, c in zip(names, counts)}

    @property
    def image_side(self) -> int:
        """The shorter side (pixels) of the bank's first image (256 when it cannot be opened)."""
        from PIL import Image

        try:
            with Image.open(self.paths[0]) as img:
                return int(min(img.size))
        except OSError:
            return 256


def declared_gsd(root: str | os.PathLike) -> float | None:
    """The ground sample distance a bank declares.

    ``bank.json``'s ``gsd`` in its root (or the folder it was given as), else :data:`KNOWN_GSD` by
    folder name, else ``None``.
    """
    base = Path(root)
    for folder in (base, base.parent, *([_class_root(base)] if base.is_dir() else [])):
        meta = folder / "bank.json"
        if meta.is_file():
            try:
                value = json.loads(meta.read_text()).get("gsd")
                return float(value) if value is not None else None
            except (ValueError, TypeError, AttributeError):
                raise InputError(f"{meta}: not a JSON object with a numeric \"gsd\" (metres)") from None
    for folder in (base, *base.parents[:2]):
        if folder.name.lower() in KNOWN_GSD:
            return KNOWN_GSD[folder.name.lower()]
    return None


def _class_root(root: Path) -> Path:
    """Descend single-folder wrappers (``UCMerced_LandUse/Images``) to the folder of classes."""
    current = root
    for _ in range(8):
        subdirs = [p for p in current.iterdir() if p.is_dir() and not p.name.startswith(".")]
        has_images = any(p.suffix.lower() in IMAGE_SUFFIXES for p in current.iterdir() if p.is_file())
        if len(subdirs) == 1 and not has_images:
            current = subdirs[0]
        else:
            break
    return current


def find_prior_bank(roots: Sequence[str | os.PathLike]) -> PriorBank:
    """Index labelled scene folders laid out as ``ROOT/<class>/<images>``.

    EuroSAT, UC Merced, RESISC45, AID and WHU-RS19 ship like this; a torchgeo dataset root on
    disk works too. Classes with the same name in several roots merge.

    Args:
        roots: the folders.

    Returns:
        The bank: every image's path and class.

    Raises:
        InputError: an empty or unreadable root, or a class folder with no image.
    """
    if not roots:
        raise InputError(f"no prior bank given ({param('prior_bank')})")
    paths: list[str] = []
    labels: list[str] = []
    used: list[str] = []
    gsds: list[float | None] = []
    for root in roots:
        base = Path(root)
        if not base.is_dir():
            raise InputError(f"{root}: the prior bank folder does not exist")
        try:
            base = _class_root(base)
            classes = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
        except PermissionError:
            raise InputError(f"{root}: the prior bank folder cannot be read") from None
        if not classes:
            raise InputError(f"{root}: no class folders (expected ROOT/<class>/<images>)")
        for folder in classes:
            images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise InputError(f"{folder}: the class folder holds no image")
            paths.extend(str(p) for p in images)
            labels.extend([folder.name] * len(images))
        used.append(str(base))
        gsds.append(declared_gsd(root))
    digest = hashlib.blake2b(digest_size=8)
    for p in paths:
        st = os.stat(p)
        digest.update(f"{os.path.relpath(p, os.path.dirname(used[0]))}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    known = {g for g in gsds}
    gsd = known.pop() if len(known) == 1 else None
    return PriorBank(roots=used, paths=paths, labels=np.array(labels), fingerprint=digest.hexdigest(),
                     gsd=gsd, root_gsd=gsds)


def readable_bank(bank: PriorBank, cache_root: str | os.PathLike | None = None) -> tuple[PriorBank, list[SkippedInput]]:
    """The bank without its unreadable images, and the skipped ones.

    Images cut short or corrupt are left out, and the skipped ones listed as ``{"path", "error"}``; each
    skip is logged once, as one line. Every image is decoded once per bank fingerprint (the verdict is
    cached). A class left with no image is an :class:`InputError` naming it.
    """
    folder = Path(cache_root) if cache_root else default_cache_dir()
    verdict = folder / "bank-check" / f"{bank.fingerprint}.json"
    skipped: list[SkippedInput] | None = None
    if verdict.is_file():
        try:
            skipped = json.loads(verdict.read_text())
        except ValueError:
            skipped = None
    if skipped is None:
        skipped = []
        for path in bank.paths:
            try:
                read_image(path, (16, 16))
            except InputError as exc:
                skipped.append({"path": path, "error": str(exc)})
        try:
            verdict.parent.mkdir(parents=True, exist_ok=True)
            tmp = verdict.with_suffix(".tmp")
            tmp.write_text(json.dumps(skipped))
            os.replace(tmp, verdict)
        except OSError:  # a read-only cache only costs the check next time
            pass
    if not skipped:
        return bank, []
    for item in skipped:
        log.warning("prior bank: skipped %s", item["error"])
    bad = {item["path"] for item in skipped}
    keep = [i for i, p in enumerate(bank.paths) if p not in bad]
    labels = bank.labels[keep]
    emptied = sorted(set(bank.labels.tolist()) - set(labels.tolist()))
    if emptied:
        raise InputError(f"prior bank class {emptied[0]!r} has no readable image left "
                         f"({sum(1 for p in bad if Path(p).parent.name == emptied[0])} unreadable)")
    digest = hashlib.blake2b(f"{bank.fingerprint}-without-{len(bad)}".encode(), digest_size=8)
    for path in sorted(bad):
        digest.update(path.encode())
    return PriorBank(roots=bank.roots, paths=[bank.paths[i] for i in keep], labels=labels,
                     fingerprint=digest.hexdigest(), gsd=bank.gsd, root_gsd=bank.root_gsd), skipped


def load_prior_bank(roots, cache_root: str | os.PathLike | None = None) -> tuple[PriorBank, list[SkippedInput]]:
    """:func:`find_prior_bank` then :func:`readable_bank`: the usable bank and what was skipped."""
    return readable_bank(find_prior_bank(roots), cache_root)


def embed_bank(bank: PriorBank, encoder: Encoder, cache_root: Path,
               on_progress: ProgressCallback = no_progress) -> np.ndarray:
    """The prior bank's embeddings, cached per encoder and bank fingerprint.

    An encoder mapped by a scene metric maps its inner encoder's, never encoding the bank again.
    """
    if isinstance(encoder, MetricEncoder):
        return encoder.metric.apply(embed_bank(bank, encoder.inner, cache_root, on_progress))
    path = cache_root / "banks" / encoder.cache_key / f"{bank.fingerprint}.npz"
    cached = load_npz(path) if path.exists() else None
    if cached is not None and cached["vectors"].shape == (len(bank), encoder.dim):
        return cached["vectors"]
    vectors = np.zeros((len(bank), encoder.dim), dtype=np.float32)
    step = max(encoder.batch_size, 32)
    for start in range(0, len(bank), step):
        images = read_images(bank.paths[start : start + step], encoder.input_size)
        vectors[start : start + len(images)] = encoder.encode(images)
        on_progress("prior_bank", start + len(images), len(bank))
    atomic_save_npz(path, vectors=vectors)
    return vectors


def bank_model(bank: PriorBank, encoder: Encoder, metric: MetricMode, views: int, cache_root: Path,
               on_progress: ProgressCallback = no_progress) -> Encoder:
    """``encoder`` as a run over this bank uses it.

    Its rotation ``views`` averaged, and with the ``bank`` metric its vectors mapped by the metric
    fitted on the bank's labels (raw, said once, when a class has too few images to fit one).
    """
    encoder = with_views_and_metric(encoder, views, None)
    if metric is MetricMode.RAW:
        return encoder
    if not SceneMetric.fits(bank.labels):
        log.warning("the prior bank has a class of fewer than %d images: nearest scenes use the encoder's raw "
                    "cosine, not the bank's metric", MIN_IMAGES_PER_CLASS)
        return encoder
    return MetricEncoder(encoder, SceneMetric.fit(embed_bank(bank, encoder, cache_root, on_progress), bank.labels))


@dataclass(frozen=True)
class CentroidSpec:
    """How a prior bank is over-clustered into scene centroids.

    See :func:`~rsprune_geo.stages.clustering.fit_scene_centroids`.
    """

    k_per_class: int | None
    images_per_centroid: int
    k: int | None
    bank_samples: int | None
    seed: int

    @property
    def key(self) -> str:
        """The spec as a cache key."""
        return (f"kpc{self.k_per_class}-ipc{self.images_per_centroid}-k{self.k}-n{self.bank_samples}"
                f"-s{self.seed}")


def bank_centroids(bank: PriorBank, encoder: Encoder, spec: CentroidSpec, cache_root: Path,
                   on_progress: ProgressCallback = no_progress) -> SceneCentroids:
    """Scene centroids of the bank for this encoder and spec, saved so many runs share them."""
    path = cache_root / "centroids" / encoder.cache_key / f"{bank.fingerprint}-{spec.key}.npz"
    if path.exists():
        try:
            return SceneCentroids.load(path)
        except Exception:
            path.unlink(missing_ok=True)
    vectors = embed_bank(bank, encoder, cache_root, on_progress)
    centroids = fit_scene_centroids(vectors, bank.labels, k_per_class=spec.k_per_class, k=spec.k,
                                    samples_per_class=spec.bank_samples, seed=spec.seed,
                                    images_per_centroid=spec.images_per_centroid)
    path.parent.mkdir(parents=True, exist_ok=True)
    centroids.save(path)
    return centroids
