"""The prior bank: labelled scene-classification datasets (a folder per class) as images."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}

log = logging.getLogger(__name__)

#: Ground sample distance (metres per pixel) of well-known scene datasets, by the lower-cased
#: name of their root folder; a ``bank.json`` (``{"gsd": 0.3}``) beside the class folders wins.
#: Datasets whose images span many GSDs (AID 0.5–8 m, RESISC45 0.2–30 m) have no single value.
KNOWN_GSD = {
    "ucmerced": 0.3, "ucmerced_landuse": 0.3, "uc_merced": 0.3, "ucmerced-landuse": 0.3,
    "eurosat": 10.0, "eurosat_rgb": 10.0, "eurosat_ms": 10.0, "2750": 10.0,
    "whu-rs19": 0.5, "rs_c11": 0.2, "so2sat": 10.0, "bigearthnet": 10.0,
}


@dataclass
class PriorBank:
    """The images of one or more labelled datasets: ``paths[i]`` has class ``labels[i]``."""

    roots: list[str]
    paths: list[str]
    labels: np.ndarray
    fingerprint: str
    gsd: float | None = None
    root_gsd: list[float | None] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels.tolist()))

    def __len__(self) -> int:
        return len(self.paths)

    def class_counts(self) -> dict[str, int]:
        """Images per class."""
        names, counts = np.unique(self.labels, return_counts=True)
        return {str(n): int(c) for n, c in zip(names, counts)}


def declared_gsd(root: str | os.PathLike) -> float | None:
    """The ground sample distance a bank declares: ``bank.json``'s ``gsd`` in its root (or the
    folder it was given as), else :data:`KNOWN_GSD` by folder name, else ``None``."""
    base = Path(root)
    for folder in (base, base.parent, *([_class_root(base)] if base.is_dir() else [])):
        meta = folder / "bank.json"
        if meta.is_file():
            try:
                value = json.loads(meta.read_text()).get("gsd")
                return float(value) if value is not None else None
            except (ValueError, TypeError, AttributeError):
                raise InputError(f"{meta}: not a JSON object with a numeric \"gsd\" (metres)") from None
    for folder in (base, *base.parents[:2]):
        if folder.name.lower() in KNOWN_GSD:
            return KNOWN_GSD[folder.name.lower()]
    return None


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
    paths, labels, used, gsds = [], [], [], []
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
        gsds.append(declared_gsd(root))
    digest = hashlib.blake2b(digest_size=8)
    for p in paths:
        st = os.stat(p)
        digest.update(f"{os.path.relpath(p, os.path.dirname(used[0]))}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    known = {g for g in gsds}
    gsd = known.pop() if len(known) == 1 else None
    return PriorBank(roots=used, paths=paths, labels=np.array(labels), fingerprint=digest.hexdigest(),
                     gsd=gsd, root_gsd=gsds)


def load_images(paths: Sequence[str], size: int) -> np.ndarray:
    """Images as uint8 RGB resized to ``size``² (bilinear), (N, size, size, 3); any size in.

    PNG/JPEG/RGB TIFF through Pillow; other TIFFs (uint16, several bands, e.g. EuroSAT's
    Sentinel-2 GeoTIFFs) through rasterio: their colour bands (else the first three; for 13-band
    Sentinel-2, B4/B3/B2), stretched per image between the 2nd and 98th percentiles.
    """
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for k, path in enumerate(paths):
        out[k] = load_image(path, (size, size))
    return out


def load_image(path: str, size: tuple[int, int] | None = None, scale: float = 1.0,
               min_side: int = 32) -> np.ndarray:
    """One image as uint8 RGB (H, W, 3): at ``size`` (width, height) when given, else its own
    size times ``scale`` (bilinear, the shorter side not below ``min_side``)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
            target = size or _scaled(rgb.size, scale, min_side)
            if rgb.size != target:
                rgb = rgb.resize(target, Image.Resampling.BILINEAR, reducing_gap=3.0)
            return np.asarray(rgb)
    except OSError:
        if size is None:
            import rasterio

            with rasterio.open(path) as src:
                size = _scaled((src.width, src.height), scale, min_side)
        return _load_with_rasterio(path, size)


def _scaled(size: tuple[int, int], scale: float, min_side: int) -> tuple[int, int]:
    if scale >= 1.0:
        return size
    factor = max(scale, min_side / max(min(size), 1))
    return (max(1, round(size[0] * min(factor, 1.0))), max(1, round(size[1] * min(factor, 1.0))))


def _load_with_rasterio(path: str, size: int | tuple[int, int]) -> np.ndarray:
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
            width, height = (size, size) if isinstance(size, int) else size
            data = src.read(bands, out_shape=(3, height, width), resampling=Resampling.bilinear).astype(np.float32)
    except Exception as exc:
        raise InputError(f"{path}: cannot read the image ({str(exc).splitlines()[0]})") from None
    if data.max() <= 255 and data.min() >= 0 and src.dtypes[0] == "uint8":
        scaled = data
    else:
        lo, hi = np.percentile(data, (2, 98))
        scaled = (data - lo) * (255.0 / max(hi - lo, 1e-6))
    return np.clip(np.nan_to_num(scaled), 0, 255).astype(np.uint8).transpose(1, 2, 0)
