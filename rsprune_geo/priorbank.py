"""The prior bank: labelled scene-classification datasets (a folder per class) as images."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


@dataclass
class PriorBank:
    """The images of one or more labelled datasets: ``paths[i]`` has class ``labels[i]``."""

    roots: list[str]
    paths: list[str]
    labels: np.ndarray
    fingerprint: str

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels.tolist()))

    def __len__(self) -> int:
        return len(self.paths)


def _class_root(root: Path) -> Path:
    """Descend single-folder wrappers (``UCMerced_LandUse/Images``) to the folder of classes."""
    current = root
    for _ in range(4):
        subdirs = [p for p in current.iterdir() if p.is_dir() and not p.name.startswith(".")]
        has_images = any(p.suffix.lower() in IMAGE_SUFFIXES for p in current.iterdir() if p.is_file())
        if len(subdirs) == 1 and not has_images:
            current = subdirs[0]
        else:
            break
    return current


def find_prior_bank(roots: Sequence[str | os.PathLike]) -> PriorBank:
    """Index labelled datasets laid out as ``ROOT/<class>/*.{png,jpg,tif}`` (EuroSAT, UC Merced,
    RESISC45, AID, WHU-RS19 ship like this; a torchgeo dataset root on disk works too).

    Classes with the same name in several roots merge. An empty or unreadable root, or a
    class folder with no image, is a clear error.
    """
    if not roots:
        raise InputError("no prior bank given (--prior-bank DIR)")
    paths, labels, used = [], [], []
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
    digest = hashlib.blake2b(digest_size=8)
    for p in paths:
        st = os.stat(p)
        digest.update(f"{os.path.relpath(p, os.path.dirname(used[0]))}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return PriorBank(roots=used, paths=paths, labels=np.array(labels), fingerprint=digest.hexdigest())


def load_images(paths: Sequence[str], size: int) -> np.ndarray:
    """Images as uint8 RGB resized to ``size``² (bilinear), (N, size, size, 3); any size in."""
    from PIL import Image

    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for k, path in enumerate(paths):
        try:
            with Image.open(path) as img:
                rgb = img.convert("RGB")
                if rgb.size != (size, size):
                    rgb = rgb.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
                out[k] = np.asarray(rgb)
        except OSError as exc:
            raise InputError(f"{path}: cannot read the image ({exc})") from None
    return out
