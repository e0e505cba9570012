"""Stage 2 clustering: scene centroids from a labelled bank, nearest-centroid assignment."""

import numpy as np
import pytest

from rsprune_geo.errors import InputError
from rsprune_geo.stages.clustering import SceneCentroids, assign_to_centroids, fit_scene_centroids, normalise


def blobs(sizes, dim=16, spread=0.05, seed=0):
    """Labelled points around one random direction per class."""
    rng = np.random.default_rng(seed)
    means = normalise(rng.normal(size=(len(sizes), dim)))
    x = np.concatenate([m + spread * rng.normal(size=(n, dim)) for m, n in zip(means, sizes)])
    y = np.repeat([f"class{i}" for i in range(len(sizes))], sizes)
    return x.astype(np.float32), y, means


def test_centroids_per_class_keep_labels_and_purity():
    x, y, _ = blobs([40, 400, 80])
    c = fit_scene_centroids(x, y, k_per_class=3, seed=1)
    assert len(c) == 9
    assert sorted(set(c.labels)) == ["class0", "class1", "class2"]
    assert (np.unique(c.labels, return_counts=True)[1] == 3).all()
    assert np.allclose(np.linalg.norm(c.vectors, axis=1), 1, atol=1e-5)
    assert np.nanmin(c.purity) == 1.0  # separable classes
    assert c.members.sum() == len(x)


def test_total_k_split_over_classes_and_determinism():
    x, y, _ = blobs([30, 30, 30, 300])
    c = fit_scene_centroids(x, y, k=10, seed=3)
    assert np.unique(c.labels, return_counts=True)[1].tolist() == [3, 3, 2, 2]
    again = fit_scene_centroids(x, y, k=10, seed=3)
    assert np.array_equal(c.vectors, again.vectors)
    with pytest.raises(InputError):
        fit_scene_centroids(x, y, k=2)


def test_assignment_matches_brute_force_in_any_batch_size():
    x, y, means = blobs([50, 50, 50], seed=2)
    tiles = np.random.default_rng(5).normal(size=(1000, 16)).astype(np.float32)
    ids, dist = assign_to_centroids(tiles, means, batch_size=64)
    sims = normalise(tiles) @ normalise(means).T
    assert np.array_equal(ids, sims.argmax(axis=1))
    assert np.allclose(dist, 1 - sims.max(axis=1), atol=1e-5)
    ids_big, _ = assign_to_centroids(tiles, means, batch_size=100000)
    assert np.array_equal(ids, ids_big)


def test_save_and_load(tmp_path):
    x, y, _ = blobs([20, 20])
    c = fit_scene_centroids(x, y, k_per_class=2)
    path = c.save(tmp_path / "bank.npz")
    back = SceneCentroids.load(path)
    assert np.array_equal(back.vectors, c.vectors) and back.labels.tolist() == c.labels.tolist()
    (tmp_path / "bad.npz").write_text("nope")
    with pytest.raises(InputError, match="not a centroid file"):
        SceneCentroids.load(tmp_path / "bad.npz")
