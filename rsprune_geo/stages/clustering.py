"""Stage 2, reference-anchored clustering.

Scene centroids from a labelled prior bank (faiss k-means per class), and nearest-centroid
assignment of tiles in batches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, counted

log = logging.getLogger(__name__)


@dataclass
class SceneCentroids:
    """L2-normalised centroids, each with the scene label it was trained on and its purity.

    ``purity[i]`` is the share of the prior-bank images assigned to centroid ``i`` whose class
    is ``labels[i]`` (NaN when no image lands on it).
    """

    vectors: np.ndarray
    labels: np.ndarray
    purity: np.ndarray
    members: np.ndarray

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def save(self, path: str | Path) -> Path:
        """Save as a ``.npz`` file, so one prior bank serves many runs."""
        out = Path(path)
        np.savez(out, vectors=self.vectors, labels=self.labels.astype(str), purity=self.purity,
                 members=self.members)
        return out if out.suffix == ".npz" else out.with_name(out.name + ".npz")

    @classmethod
    def load(cls, path: str | Path) -> SceneCentroids:
        """Load centroids saved by :meth:`save`."""
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls(data["vectors"], data["labels"], data["purity"], data["members"])
        except (OSError, KeyError, ValueError) as exc:
            raise InputError(f"{path}: not a centroid file saved by rsprune_geo ({exc})") from None


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation to contiguous float32 (zero rows stay zero)."""
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return np.ascontiguousarray(v / np.where(norms > 0, norms, 1), dtype=np.float32)


def fit_scene_centroids(
    embeddings: np.ndarray,
    labels: np.ndarray,
    k_per_class: int | None = 4,
    k: int | None = None,
    samples_per_class: int | None = None,
    seed: int = 0,
    niter: int = 25,
    images_per_centroid: int = 1,
) -> SceneCentroids:
    """Over-cluster a labelled prior bank into scene centroids, class by class.

    Spherical k-means (faiss) within each class. A class with fewer images than its centroids
    gets one centroid an image (logged).

    Args:
        embeddings: (N, dim) vectors of the bank's images.
        labels: each image's class.
        k_per_class: centroids a class.
        k: centroids in total, split evenly over classes (overrides ``k_per_class``).
        samples_per_class: train each class on at most this many images, drawn with ``seed``;
            ``None`` for all.
        seed: the k-means seed and the draw of samples.
        niter: k-means iterations.
        images_per_centroid: with ``k_per_class``, no centroid is fitted on fewer images (a class
            of 10 images with 10 here gets one centroid, its mean).

    Returns:
        The centroids, each with its class.
    """
    import faiss

    x = normalise(embeddings)
    labels = np.asarray(labels).astype(str)
    if x.shape[0] != labels.shape[0]:
        raise InputError("embeddings and labels must have the same length")
    classes, counts = np.unique(labels, return_counts=True)
    if classes.size == 0:
        raise InputError("the prior bank is empty")
    if k is not None:
        if k < classes.size:
            raise InputError(f"k={k}: need at least one centroid per class ({classes.size} classes)")
        per_class = np.full(classes.size, k // classes.size)
        per_class[: k % classes.size] += 1
    else:
        if not k_per_class or k_per_class < 1:
            raise InputError("give k_per_class >= 1 or a total k")
        per_class = np.full(classes.size, k_per_class)
    if samples_per_class is not None and samples_per_class < 1:
        raise InputError(f"samples_per_class {samples_per_class}: must be at least 1")
    n_samples = int(samples_per_class) if samples_per_class else int(counts.max())
    rng = np.random.default_rng(seed)
    vectors, names = [], []
    for i, (cls, kc) in enumerate(zip(classes, per_class)):
        members = np.flatnonzero(labels == cls)
        take = members if members.size <= n_samples else np.sort(rng.choice(members, n_samples, replace=False))
        sample = x[take]
        if k is None and images_per_centroid > 1:
            kc = max(1, min(int(kc), sample.shape[0] // images_per_centroid))
        if kc > sample.shape[0]:
            log.warning("prior bank class %r has %s for %s: using %s", str(cls),
                        counted(sample.shape[0], "image"), counted(int(kc), "centroid"),
                        counted(sample.shape[0], "centroid"))
        kc = int(min(kc, sample.shape[0]))
        if kc == sample.shape[0]:
            centres = sample.copy()
        else:
            km = faiss.Kmeans(x.shape[1], kc, niter=niter, seed=seed + i, spherical=True,
                              min_points_per_centroid=1, max_points_per_centroid=1 << 30)
            km.train(sample)
            assert km.centroids is not None
            centres = km.centroids
        vectors.append(normalise(centres))
        names.extend([cls] * kc)
    all_vectors = np.concatenate(vectors)
    all_names = np.array(names)
    nearest, _ = assign_to_centroids(x, all_vectors)
    members = np.bincount(nearest, minlength=len(all_names))
    agree = np.bincount(nearest[all_names[nearest] == labels], minlength=len(all_names))
    with np.errstate(invalid="ignore", divide="ignore"):
        purity = np.where(members > 0, agree / np.maximum(members, 1), np.nan)
    return SceneCentroids(vectors=all_vectors, labels=all_names, purity=purity, members=members)


def assign_to_centroids(
    embeddings: np.ndarray, centroids: np.ndarray | SceneCentroids, batch_size: int = 65536
) -> tuple[np.ndarray, np.ndarray]:
    """The nearest centroid (cosine) of each embedding.

    Memory stays at one batch whatever the number of tiles.

    Args:
        embeddings: (N, dim) vectors; a memory-mapped array works.
        centroids: (K, dim) centroids, or :class:`SceneCentroids`.
        batch_size: vectors searched at once.

    Returns:
        ``(ids, distances)``: int64 centroid ids and distances ``1 - cos``.
    """
    import faiss

    vectors = centroids.vectors if isinstance(centroids, SceneCentroids) else normalise(centroids)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    n = embeddings.shape[0]
    ids = np.empty(n, dtype=np.int64)
    dist = np.empty(n, dtype=np.float32)
    for start in range(0, n, batch_size):
        batch = normalise(embeddings[start : start + batch_size])
        sim, nearest = index.search(batch, 1)
        ids[start : start + batch.shape[0]] = nearest[:, 0]
        dist[start : start + batch.shape[0]] = 1.0 - sim[:, 0]
    return ids, dist


def self_clusters(
    embeddings: np.ndarray,
    scene_centroids: SceneCentroids,
    k: int,
    sample_size: int = 100_000,
    seed: int = 0,
    niter: int = 25,
) -> tuple[SceneCentroids, np.ndarray, np.ndarray]:
    """The costlier alternative the paper argues against: k-means on the tiles themselves.

    k-means (spherical, faiss) is trained on a sample stratified by each tile's nearest scene
    centroid (equal numbers per scene), then every tile is assigned. Each cluster is labelled
    with the scene of the prior centroid nearest to it. Returns (centroids, ids, distances).
    """
    import faiss

    x = embeddings  # may be memory-mapped: only the training sample is loaded at once
    n = x.shape[0]
    k = int(min(k, n))
    if k < 1:
        raise InputError("self-clustering needs at least one tile")
    scene_ids, _ = assign_to_centroids(x, scene_centroids)
    scenes = scene_centroids.labels[scene_ids]
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(scenes == s) for s in np.unique(scenes)]
    per_scene = max(1, sample_size // max(1, len(groups)))
    sample = np.sort(np.concatenate([g if g.size <= per_scene else rng.choice(g, per_scene, replace=False)
                                     for g in groups]))
    if sample.size < k:
        sample = np.arange(n)
    km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, spherical=True,
                      min_points_per_centroid=1, max_points_per_centroid=1 << 30)
    km.train(normalise(x[sample]))
    assert km.centroids is not None
    vectors = normalise(km.centroids)
    nearest_scene, _ = assign_to_centroids(vectors, scene_centroids)
    labels = scene_centroids.labels[nearest_scene]
    ids, dist = assign_to_centroids(x, vectors)
    members = np.bincount(ids, minlength=k)
    agree = np.bincount(ids[labels[ids] == scenes], minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        purity = np.where(members > 0, agree / np.maximum(members, 1), np.nan)
    return SceneCentroids(vectors, labels, purity, members), ids, dist
