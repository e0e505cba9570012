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
    for _ in range(8):
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
    """Images as uint8 RGB resized to ``size``² (bilinear), (N, size, size, 3); any size in.

    PNG/JPEG/RGB TIFF through Pillow; other TIFFs (uint16, several bands, e.g. EuroSAT's
    Sentinel-2 GeoTIFFs) through rasterio: their colour bands (else the first three; for 13-band
    Sentinel-2, B4/B3/B2), stretched per image between the 2nd and 98th percentiles.
    """
    from PIL import Image

    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for k, path in enumerate(paths):
        try:
            with Image.open(path) as img:
                rgb = img.convert("RGB")
                if rgb.size != (size, size):
                    rgb = rgb.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
                out[k] = np.asarray(rgb)
        except OSError:
            out[k] = _load_with_rasterio(path, size)
    return out


def _load_with_rasterio(path: str, size: int) -> np.ndarray:
    import rasterio
    from rasterio.enums import ColorInterp, Resampling

    try:
        with rasterio.open(path) as src:
            interp = list(src.colorinterp)
            if all(c in interp for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue)):
                bands = [interp.index(c) + 1 for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue)]
            elif src.count == 13:
                bands = [4, 3, 2]  # Sentinel-2 L1C band order (EuroSAT)
            elif src.count >= 3:
                bands = [1, 2, 3]
            else:
                bands = [1, 1, 1]
            data = src.read(bands, out_shape=(3, size, size), resampling=Resampling.bilinear).astype(np.float32)
    except Exception as exc:
        raise InputError(f"{path}: cannot read the image ({str(exc).splitlines()[0]})") from None
    if data.max() <= 255 and data.min() >= 0 and src.dtypes[0] == "uint8":
        scaled = data
    else:
        lo, hi = np.percentile(data, (2, 98))
        scaled = (data - lo) * (255.0 / max(hi - lo, 1e-6))
    return np.clip(np.nan_to_num(scaled), 0, 255).astype(np.uint8).transpose(1, 2, 0)
