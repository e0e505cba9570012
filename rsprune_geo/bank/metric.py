"""The scene metric a labelled prior bank fits in closed form.

Which directions of an encoder's space vary inside a scene (light, season, texture) and which tell
scenes apart.

The bank's embeddings are centred, projected on their leading principal directions, and whitened
by the within-class scatter (with shrinkage toward its mean variance): directions a scene varies
along shrink, directions that separate scenes grow. Vectors are L2-normalised after the map, so
cosine distances keep their meaning. No gradient training; a few milliseconds for a bank of
hundreds of images. Applied to every vector a run makes (tiles, bank images, hence centroids),
so nearest-scene decisions, near-duplicates and the run's own-space evaluation all use it.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np

from ..choices import MetricMode
from ..errors import InputError
from ..features.base import Encoder
from ..stages.clustering import normalise

__all__ = ["MetricEncoder", "MetricMode", "SceneMetric", "ViewsEncoder", "metric_and_views", "raw_encoder",
           "with_views_and_metric"]

log = logging.getLogger(__name__)

#: Fewest bank images a class needs for the bank to fit a metric (its within-class scatter).
MIN_IMAGES_PER_CLASS = 5
#: Principal directions the metric keeps, at most.
METRIC_DIMS = 256
#: Weight of the mean variance in the whitened scatter (0: the scatter alone, 1: no whitening).
SHRINKAGE = 0.3


@dataclass(frozen=True)
class SceneMetric:
    """A linear map of an encoder's unit vectors: ``normalise((x - mean) @ transform)``.

    Attributes:
        mean: the bank's mean embedding, (D,).
        transform: projection and whitening, (D, M).
        shrinkage: the weight of the mean variance in the whitened scatter.

    """

    mean: np.ndarray
    transform: np.ndarray
    shrinkage: float = SHRINKAGE

    @property
    def dim(self) -> int:
        """The dimension of the vectors the metric gives."""
        return int(self.transform.shape[1])

    @property
    def digest(self) -> str:
        """A short id of the map, for cache keys."""
        digest = hashlib.blake2b(digest_size=6)
        digest.update(np.ascontiguousarray(self.mean, dtype=np.float32).tobytes())
        digest.update(np.ascontiguousarray(self.transform, dtype=np.float32).tobytes())
        return digest.hexdigest()

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """The vectors in the metric's space, unit length (float32)."""
        x = np.asarray(vectors, dtype=np.float32)
        return normalise((x - self.mean) @ self.transform)

    @classmethod
    def fit(cls, vectors: np.ndarray, labels: np.ndarray, dims: int = METRIC_DIMS,
            shrinkage: float = SHRINKAGE) -> SceneMetric:
        """Fit the metric on a labelled bank's embeddings (closed form).

        Args:
            vectors: the bank's embeddings, (N, D).
            labels: each image's class, (N,).
            dims: principal directions kept, at most (also at most N minus the classes).
            shrinkage: weight of the mean variance in the whitened scatter, in (0, 1].

        Returns:
            The fitted metric.

        Raises:
            InputError: a class with fewer than :data:`MIN_IMAGES_PER_CLASS` images, or a
                shrinkage outside (0, 1].

        """
        if not 0.0 < shrinkage <= 1.0:
            raise InputError(f"shrinkage {shrinkage}: must be in (0, 1]")
        x = normalise(vectors).astype(np.float64)
        labels = np.asarray(labels).astype(str)
        classes, counts = np.unique(labels, return_counts=True)
        if classes.size < 2 or counts.min() < MIN_IMAGES_PER_CLASS:
            raise InputError(f"a scene metric needs at least two classes of {MIN_IMAGES_PER_CLASS} images")
        mean = x.mean(axis=0)
        centred = x - mean
        keep = int(max(1, min(dims, x.shape[0] - classes.size, x.shape[1])))
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        projection = vt[:keep].T
        z = centred @ projection
        scatter = np.zeros((keep, keep))
        for cls_ in classes:
            inside = z[labels == cls_]
            deviation = inside - inside.mean(axis=0)
            scatter += deviation.T @ deviation
        scatter /= z.shape[0]
        scatter = (1 - shrinkage) * scatter + shrinkage * (np.trace(scatter) / keep) * np.eye(keep)
        values, vectors_ = np.linalg.eigh(scatter)
        whitening = vectors_ @ np.diag(1.0 / np.sqrt(np.maximum(values, 1e-12))) @ vectors_.T
        return cls(mean.astype(np.float32), (projection @ whitening).astype(np.float32), float(shrinkage))

    @staticmethod
    def fits(labels: np.ndarray) -> bool:
        """Whether a bank with these labels has enough images a class for a metric."""
        _, counts = np.unique(np.asarray(labels).astype(str), return_counts=True)
        return counts.size >= 2 and int(counts.min()) >= MIN_IMAGES_PER_CLASS


class ViewsEncoder(Encoder):
    """An encoder that averages its vectors over right-angle rotations.

    An encoder whose vector of an image is the mean of its vectors over right-angle rotations (aerial
    scenes have no "up": the views are free information).
    """

    def __init__(self, inner: Encoder, views: int) -> None:
        if views not in (1, 2, 4):
            raise InputError(f"`views` {views}: use 1, 2 or 4 right-angle rotations")
        self.inner, self.views = inner, views
        self.name, self.input_size, self.dim = inner.name, inner.input_size, inner.dim
        self.batch_size, self.runtime = inner.batch_size, inner.runtime

    @property
    def cache_key(self) -> str:
        """The inner encoder's key and the views."""
        return f"{self.inner.cache_key}-v{self.views}"

    def encode(self, images: np.ndarray) -> np.ndarray:
        """The images' vectors averaged over their rotations, unit length."""
        images = np.asarray(images)
        total = self.inner.encode(images)
        for k in range(1, self.views):
            total = total + self.inner.encode(np.ascontiguousarray(np.rot90(images, k, axes=(1, 2))))
        return normalise(total)

    def _embed(self, images: np.ndarray) -> np.ndarray:
        return self.encode(images)

    def close(self) -> None:
        """Release the inner encoder's resources, when it holds any."""
        getattr(self.inner, "close", lambda: None)()


class MetricEncoder(Encoder):
    """An encoder whose vectors are mapped by a :class:`SceneMetric`.

    Every vector a run makes (tiles and bank images alike) is in the metric's space.
    """

    def __init__(self, inner: Encoder, metric: SceneMetric) -> None:
        self.inner, self.metric = inner, metric
        self.name, self.input_size, self.dim = inner.name, inner.input_size, metric.dim
        self.batch_size, self.runtime = inner.batch_size, inner.runtime

    @property
    def cache_key(self) -> str:
        """The inner encoder's key and the metric's digest."""
        return f"{self.inner.cache_key}-bank{self.metric.digest}"

    def encode(self, images: np.ndarray) -> np.ndarray:
        """The images' vectors in the metric's space."""
        return self.metric.apply(self.inner.encode(images))

    def _embed(self, images: np.ndarray) -> np.ndarray:
        return self.encode(images)

    def close(self) -> None:
        """Release the inner encoder's resources, when it holds any."""
        getattr(self.inner, "close", lambda: None)()


def with_views_and_metric(encoder: Encoder, views: int, metric: SceneMetric | None) -> Encoder:
    """The encoder with its views averaged and its vectors mapped by the metric.

    ``encoder`` with its rotation views averaged (``views`` > 1) and its vectors mapped by ``metric``
    (when given).
    """
    if views > 1:
        encoder = ViewsEncoder(encoder, views)
    return MetricEncoder(encoder, metric) if metric is not None else encoder


def metric_and_views(encoder: Encoder) -> tuple[MetricMode, int]:
    """The metric an encoder's vectors are in and the views it averages (as a run records them)."""
    metric = MetricMode.BANK if isinstance(encoder, MetricEncoder) else MetricMode.RAW
    inner = encoder.inner if isinstance(encoder, MetricEncoder) else encoder
    return metric, inner.views if isinstance(inner, ViewsEncoder) else 1


def raw_encoder(encoder: Encoder) -> Encoder:
    """The encoder a metric maps (itself when none does)."""
    return encoder.inner if isinstance(encoder, MetricEncoder) else encoder
