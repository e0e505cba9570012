"""Tile embeddings: encoded once and cached; assigned where they are encoded, so a run's
nearest centroids need no embedding matrix."""

import numpy as np

from rsprune_geo.features import get_encoder
from rsprune_geo.features.base import Encoder
from rsprune_geo.features.cache import EmbeddingCache
from rsprune_geo.reading.pixels import source_scaling
from rsprune_geo.reading.sources import open_source
from rsprune_geo.reading.tiling import make_tiles
from rsprune_geo.stages.clustering import assign_to_centroids, fit_scene_centroids
from rsprune_geo.stages.embedding import embed_tiles
from rsprune_geo.stages.stage2 import embed_and_assign

from .conftest import shared


def test_assigning_where_encoded_equals_embedding_then_assigning(tmp_path, monkeypatch):
    source = open_source(shared("rasterio-tests/RGB.byte.tif"))
    tiles = make_tiles(source, 64)
    encoder = get_encoder("rcf-gaussian")
    encoder.batch_size = 16
    sources, scalings = {source.path: source}, {source.path: source_scaling(source)}
    vectors = embed_tiles(tiles, sources, scalings, encoder)
    centroids = fit_scene_centroids(vectors, np.array(["a", "b"] * (len(vectors) // 2) + ["a"] * (len(vectors) % 2)),
                                    k_per_class=2, images_per_centroid=1)
    expected = assign_to_centroids(vectors, centroids)
    cache = EmbeddingCache(tmp_path, encoder.cache_key)
    seen = []
    ids, dist = embed_and_assign(tiles, sources, scalings, encoder, centroids, cache,
                                 on_progress=lambda stage, done, total: seen.append((done, total)))
    assert np.array_equal(ids, expected[0]) and np.allclose(dist, expected[1], atol=1e-5)
    assert seen[-1] == (len(tiles), len(tiles))
    # a second pass reads every vector back from the cache, shard by shard: nothing is encoded
    real = Encoder.encode
    monkeypatch.setattr(Encoder, "encode", lambda self, images: (_ for _ in ()).throw(AssertionError("encoded")))
    again = embed_and_assign(tiles, sources, scalings, encoder, centroids, cache)
    assert np.array_equal(again[0], ids)
    monkeypatch.setattr(Encoder, "encode", real)
    assert np.allclose(embed_tiles(tiles, sources, scalings, encoder, cache), vectors, atol=1e-6)
