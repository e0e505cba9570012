"""File helpers every layer shares.

Cheap content fingerprints of inputs and weights files, atomic writes, and where the package keeps
the files it ships built.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

#: What the package ships built (``make shipped``, before a wheel is built): the default encoder's
#: network exported to ONNX and the default prior-bank profile.
SHIPPED = Path(__file__).resolve().parent / "shipped"


def file_fingerprint(path: str, with_mtime: bool = True, chunk: int = 65536, digest_size: int = 12) -> str:
    """A cheap fingerprint of a file's content.

    Its size (and mtime, unless ``with_mtime`` is false, for content keys that survive a copy) and
    hashes of its head and tail.

    Costs two small reads whatever the file's size; GDAL virtual paths hash their name.
    """
    if path.startswith("/vsi"):
        return hashlib.blake2b(path.encode(), digest_size=8).hexdigest()
    stat = os.stat(path)
    digest = hashlib.blake2b(digest_size=digest_size)
    digest.update((f"{stat.st_size}:{stat.st_mtime_ns}" if with_mtime else f"{stat.st_size}").encode())
    with open(path, "rb") as fh:
        digest.update(fh.read(chunk))
        if stat.st_size > chunk:
            fh.seek(max(stat.st_size - chunk, chunk))
            digest.update(fh.read(chunk))
    return digest.hexdigest()


def write_atomically(target: Path, data: bytes) -> None:
    """Write ``data`` at ``target`` (mode 644, its folder made): a reader sees the old file or the whole new one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
