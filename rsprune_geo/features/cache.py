"""The embedding cache: vectors on disk keyed by encoder, input fingerprint and tile id."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np


def default_cache_dir() -> Path:
    """``$RSPRUNE_CACHE``, else ``$XDG_CACHE_HOME/rsprune_geo``, else ``~/.cache/rsprune_geo``."""
    if os.environ.get("RSPRUNE_CACHE"):
        return Path(os.environ["RSPRUNE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rsprune_geo"


def atomic_save_npz(path: Path, **arrays) -> None:
    """Write an ``.npz`` so that readers see the whole file or none of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=path.parent)
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_npz(path: Path) -> dict | None:
    """Load an ``.npz`` written by :func:`atomic_save_npz`; ``None`` (and the file removed)
    when it is corrupt."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except Exception:
        path.unlink(missing_ok=True)
        return None


class EmbeddingCache:
    """Embeddings of one encoder, stored as shards under ``root/<encoder key>/<fingerprint>/``.

    A shard holds the ids and float32 vectors of one encoded batch and is written atomically,
    so an interrupted run keeps every finished batch; a corrupt shard is dropped and recomputed.
    A changed input file has a new fingerprint, so its stale vectors are never used.
    """

    def __init__(self, root: str | os.PathLike | None, encoder_key: str):
        self.root = Path(root) if root else default_cache_dir()
        self.dir = self.root / "embeddings" / encoder_key
        self._loaded: dict[str, dict[str, np.ndarray]] = {}

    def _entries(self, fingerprint: str) -> dict[str, np.ndarray]:
        if fingerprint not in self._loaded:
            table: dict[str, np.ndarray] = {}
            folder = self.dir / fingerprint
            for shard in sorted(folder.glob("shard-*.npz")) if folder.is_dir() else []:
                data = load_npz(shard)
                if data is None or "ids" not in data or "vectors" not in data:
                    continue
                table.update(zip(data["ids"].tolist(), data["vectors"]))
            self._loaded[fingerprint] = table
        return self._loaded[fingerprint]

    def lookup(self, fingerprint: str, tile_ids: list[str]) -> tuple[np.ndarray, list[np.ndarray]]:
        """(found mask, vectors of the found ids in order)."""
        table = self._entries(fingerprint)
        found = np.array([tid in table for tid in tile_ids], dtype=bool)
        return found, [table[tid] for tid in tile_ids if tid in table]

    def store(self, fingerprint: str, tile_ids: list[str], vectors: np.ndarray) -> None:
        """Add a batch of vectors (one shard file)."""
        if not tile_ids:
            return
        digest = hashlib.blake2b("\n".join(tile_ids).encode(), digest_size=8).hexdigest()
        ids = np.array(tile_ids)
        atomic_save_npz(self.dir / fingerprint / f"shard-{digest}.npz", ids=ids,
                        vectors=np.asarray(vectors, dtype=np.float32))
        self._entries(fingerprint).update(zip(tile_ids, np.asarray(vectors, dtype=np.float32)))
