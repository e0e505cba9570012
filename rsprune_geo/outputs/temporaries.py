"""A run's temporaries, marked with their owner, and the removal of orphans.

The owner is a process id and host. A run killed with ``kill -9`` or by a power cut leaves its
temporaries behind; a later run removes those whose owner is gone.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

#: How every temporary a run leaves beside its output starts.
PREFIX = ".rsprune-"
#: ``.rsprune-<pid>@<host>-<random>.tmp.parts`` (a staging run folder) or ``….tmp.gpkg`` (a
#: GeoPackage being written, with SQLite's ``-journal``, ``-wal`` and ``-shm`` beside it).
_MARKED = re.compile(r"^\.rsprune-(?P<pid>\d+)@(?P<host>.+)-[A-Za-z0-9_]+\.tmp\.(?:parts|gpkg)(?:-journal|-wal|-shm)?$")


def _host() -> str:
    """The name of this machine, as a temporary's name carries it (no path separator, no ``@``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "localhost"


def owner_prefix() -> str:
    """The start of a temporary's name that says which process made it: ``.rsprune-<pid>@<host>-``."""
    return f"{PREFIX}{os.getpid()}@{_host()}-"


@dataclass(frozen=True)
class Owner:
    """The process a temporary's name says made it."""

    pid: int
    host: str

    @classmethod
    def of(cls, name: str) -> Owner | None:
        """The owner a temporary's name carries.

        ``None`` for any other name (an older run's temporary, which says no owner, is never removed).
        """
        match = _MARKED.match(name)
        return cls(int(match["pid"]), match["host"]) if match else None

    def gone(self) -> bool:
        """Whether the owner has surely ended: a process of this host that no longer exists.

        A process of another host (a shared disk) may be alive: never gone.
        """
        if self.host != _host():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            return False
        return False


def remove_stale(folder: str | os.PathLike) -> list[tuple[Path, int]]:
    """Remove the temporaries in ``folder`` whose owner is gone; never those of a live run.

    Args:
        folder: where a run is about to write (its output's folder).

    Returns:
        What was removed, as ``(path, bytes)``; it is also said in one log line.

    """
    where = Path(folder)
    removed: list[tuple[Path, int]] = []
    try:
        entries = [e for e in where.iterdir() if e.name.startswith(PREFIX)]
    except OSError:
        return removed
    for entry in sorted(entries):
        owner = Owner.of(entry.name)
        if owner is None or not owner.gone():
            continue
        size = _size(entry)
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError:  # another run removed it first, or it cannot be: leave it
            continue
        removed.append((entry, size))
    if removed:
        total = sum(size for _, size in removed)
        names = ", ".join(path.name for path, _ in removed[:3]) + (" …" if len(removed) > 3 else "")
        log.warning("removed %d temporar%s of killed runs in %s (%.1f MB): %s", len(removed),
                    "y" if len(removed) == 1 else "ies", where, total / 1e6, names)
    return removed


def _size(path: Path) -> int:
    """Bytes under ``path`` (a file or a folder)."""
    try:
        if path.is_dir() and not path.is_symlink():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return path.stat().st_size
    except OSError:
        return 0


def new_folder(beside: str | os.PathLike | None) -> Path:
    """A new empty temporary folder marked with its owner.

    In ``beside`` (the temporary folder when ``None``); the stale temporaries of killed runs there are
    removed first.
    """
    import tempfile

    if beside is not None:
        remove_stale(beside)
    return Path(tempfile.mkdtemp(prefix=owner_prefix(), suffix=".tmp.parts", dir=beside))


def replace_folder(new: Path, target: Path) -> None:
    """Put the folder ``new`` at ``target`` (same file system).

    The old ``target`` kept whole until ``new`` is in place: it is moved aside into an owner-marked
    temporary first, moved back if the rename fails, and removed last.
    """
    if not target.exists():
        os.replace(new, target)
        return
    aside = new_folder(target.parent)
    os.replace(target, aside / target.name)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(aside / target.name, target)
        shutil.rmtree(aside, ignore_errors=True)
        raise
    shutil.rmtree(aside, ignore_errors=True)
