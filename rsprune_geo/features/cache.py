"""The embedding cache: vectors on disk keyed by encoder, input fingerprint and tile id."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import OutputError


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
    """Load an ``.npz`` written by :func:`atomic_save_npz`.

    ``None`` (and the file removed) when it is corrupt.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except Exception:
        path.unlink(missing_ok=True)
        return None


class EmbeddingCache:
    """Embeddings of one encoder, stored as shards under ``root/embeddings/<encoder key>/<fingerprint>/``.

    A shard is one encoded batch: ``shard-<digest>.vec.npy`` (float32 vectors, read memory-mapped)
    and ``shard-<digest>.ids.npy`` (tile ids), each written atomically, the ids last, so a shard
    counts only once both are whole. An interrupted run keeps every finished batch; a damaged
    shard is dropped and recomputed. A changed input file has a new fingerprint, so its stale
    vectors are never used. Nothing is held in memory beyond one shard's ids.

    Windows of a tile each (a folder's chips) are kept in packs instead (:meth:`store_pack`,
    :meth:`load_pack`): a shard a batch under ``packs/<task>/``, keyed by fingerprint and tile id,
    so a million chips make thousands of files, not two million.
    """

    def __init__(self, root: str | os.PathLike | None, encoder_key: str):
        self.root = Path(root) if root else default_cache_dir()
        self.dir = self.root / "embeddings" / encoder_key

    def _shards(self, fingerprint: str) -> list[Path]:
        folder = self.dir / fingerprint
        return sorted(folder.glob("shard-*.ids.npy")) if folder.is_dir() else []

    def fill(self, fingerprint: str, tile_ids: list[str], out: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Copy the cached vectors of ``tile_ids`` into ``out[rows]``; returns the found mask."""
        found = np.zeros(len(tile_ids), dtype=bool)
        for dst, vectors in self.cached(fingerprint, tile_ids, out.shape[1]):
            out[rows[dst]] = vectors
            found[dst] = True
        return found

    def cached(self, fingerprint: str, tile_ids: list[str], dim: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The cached vectors of ``tile_ids``, shard by shard: ``(positions in tile_ids, vectors)``.

        Memory stays at one shard whatever the number of tiles.
        """
        wanted = {tid: k for k, tid in enumerate(tile_ids)}
        for ids_path in self._shards(fingerprint):
            vec_path = ids_path.with_name(ids_path.name.replace(".ids.npy", ".vec.npy"))
            try:
                ids = np.load(ids_path, allow_pickle=False)
                vectors = np.load(vec_path, mmap_mode="r", allow_pickle=False)
                if vectors.shape[0] != ids.shape[0] or vectors.ndim != 2 or vectors.shape[1] != dim:
                    raise ValueError("shape")
            except Exception:
                ids_path.unlink(missing_ok=True)
                vec_path.unlink(missing_ok=True)
                continue
            hits = [(j, wanted[t]) for j, t in enumerate(ids.tolist()) if t in wanted]
            if hits:
                src, dst = (np.array(a) for a in zip(*hits))
                yield dst, np.asarray(vectors[src])

    def lookup(self, fingerprint: str, tile_ids: list[str],
               dim: int | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
        """(found mask, vectors of the found ids in order); for small look-ups."""
        shards = self._shards(fingerprint)
        if not shards:
            return np.zeros(len(tile_ids), dtype=bool), []
        if dim is None:
            vec = shards[0].with_name(shards[0].name.replace(".ids.npy", ".vec.npy"))
            try:
                dim = np.load(vec, mmap_mode="r").shape[1]
            except Exception:
                dim = 0
        out = np.zeros((len(tile_ids), dim), dtype=np.float32)
        found = self.fill(fingerprint, tile_ids, out, np.arange(len(tile_ids)))
        return found, list(out[found])

    def load(self, fingerprint: str, tile_ids: list[str]) -> np.ndarray | None:
        """The vectors of exactly these tiles when one batch stored them (:meth:`store`), else ``None``.

        A window's look-up costs one file, whatever the cache holds.
        """
        if not tile_ids:
            return None
        ids_path, vec_path = self._shard_paths(fingerprint, tile_ids)
        if not ids_path.exists():
            return None
        try:
            ids = np.load(ids_path, allow_pickle=False)
            vectors = np.load(vec_path, allow_pickle=False)
            if ids.tolist() != list(tile_ids) or vectors.shape[0] != len(tile_ids) or vectors.ndim != 2:
                raise ValueError("shard")
        except Exception:
            return None
        return np.asarray(vectors, dtype=np.float32)

    def _shard_paths(self, fingerprint: str, tile_ids: list[str]) -> tuple[Path, Path]:
        digest = hashlib.blake2b("\n".join(tile_ids).encode(), digest_size=8).hexdigest()
        folder = self.dir / fingerprint
        return folder / f"shard-{digest}.ids.npy", folder / f"shard-{digest}.vec.npy"

    def store(self, fingerprint: str, tile_ids: list[str], vectors: np.ndarray) -> None:
        """Add one batch of vectors as a shard.

        A cache that cannot be written (a full disk) is an :class:`~rsprune_geo.errors.OutputError` and
        leaves no partial shard.
        """
        if not tile_ids:
            return
        self._save(*self._shard_paths(fingerprint, tile_ids), tile_ids, vectors)

    def load_pack(self, pack: str) -> dict[str, np.ndarray]:
        """The vectors a pack holds, by the keys they were stored under (:meth:`store_pack`).

        A damaged shard of it is dropped.
        """
        folder = self.dir / "packs" / pack
        found: dict[str, np.ndarray] = {}
        for ids_path in sorted(folder.glob("shard-*.ids.npy")) if folder.is_dir() else []:
            vec_path = ids_path.with_name(ids_path.name.replace(".ids.npy", ".vec.npy"))
            try:
                keys = np.load(ids_path, allow_pickle=False).tolist()
                vectors = np.load(vec_path, allow_pickle=False)
                if vectors.ndim != 2 or vectors.shape[0] != len(keys):
                    raise ValueError("shape")
            except Exception:
                ids_path.unlink(missing_ok=True)
                vec_path.unlink(missing_ok=True)
                continue
            found.update(zip(keys, vectors))
        return found

    def store_pack(self, pack: str, keys: list[str], vectors: np.ndarray) -> None:
        """Add vectors to a pack.

        The vectors of many small windows (a task's chips) kept as one shard a batch under
        ``packs/<pack>/``, each by its key (its source's fingerprint and tile id), not as two files a chip.
        Written as :meth:`store` writes a shard.
        """
        if not keys:
            return
        digest = hashlib.blake2b("\n".join(keys).encode(), digest_size=8).hexdigest()
        folder = self.dir / "packs" / pack
        self._save(folder / f"shard-{digest}.ids.npy", folder / f"shard-{digest}.vec.npy", keys, vectors)

    def _save(self, ids_path: Path, vec: Path, ids: list[str], vectors: np.ndarray) -> None:
        """Write one shard, its vectors first and its ids last (a shard counts once both are whole)."""
        try:
            vec.parent.mkdir(parents=True, exist_ok=True)
            _atomic_save_npy(vec, np.asarray(vectors, dtype=np.float32))
            _atomic_save_npy(ids_path, np.array(ids))
        except OSError as exc:
            vec.unlink(missing_ok=True)  # a vectors file without its ids never counts; remove it anyway
            raise OutputError(f"{self.root}: cannot write the embedding cache ({exc.strerror or exc}); free some "
                              "space or give `cache_dir` elsewhere") from None


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npy", dir=path.parent)
    os.close(fd)
    try:
        np.save(tmp, array)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
