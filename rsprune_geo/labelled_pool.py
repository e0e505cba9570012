"""A labelled benchmark pool built from a scene-classification dataset: a prior bank and a
pool that share no image, the pool uneven across classes with planted junk, written as chips
(a folder per class) and as a georeferenced mosaic with its labelled polygons."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError

#: Kinds of planted junk: what stage 1 must remove and no scene may be made of.
JUNK_KINDS = ("blank", "cloud", "water", "nodata")


@dataclass(frozen=True)
class PoolSpec:
    """How the pool is drawn: images ``[0, bank_per_class)`` of every class form the bank, the
    pool takes from the rest between ``max_per_class`` and ``min_per_class`` images per class
    (a seeded order of classes), and junk tiles make ``junk_fraction`` of the pool."""

    bank_per_class: int = 10
    max_per_class: int = 10
    min_per_class: int = 2
    junk_fraction: float = 0.20
    tile: int = 256
    columns: int = 16
    pixel_size: float = 0.3
    crs: str = "EPSG:32611"
    origin: tuple[float, float] = (500000.0, 4150000.0)
    seed: int = 0


@dataclass
class LabelledPool:
    """Paths of a built pool: ``bank`` (class folders and ``bank.json``), ``chips`` (class
    folders plus ``junk/``), ``mosaic`` (GeoTIFF) and ``labels`` (GeoPackage of cell polygons,
    column ``label``); ``counts`` are the pool images per class."""

    root: Path
    bank: Path
    chips: Path
    mosaic: Path
    labels: Path
    classes: list[str]
    counts: dict[str, int] = field(default_factory=dict)
    junk: int = 0


def _junk_image(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One planted junk tile, (size, size, 4) uint8 RGBA (alpha 0 only for ``nodata``)."""
    from .demo import smooth_noise

    out = np.zeros((size, size, 4), dtype=np.float32)
    out[..., 3] = 255
    if kind == "blank":
        out[..., :3] = rng.integers(0, 256) + rng.integers(0, 2, (size, size, 1))
    elif kind == "cloud":
        soft = smooth_noise((size, size), 96, rng)[..., None]
        out[..., :3] = 236 + 14 * soft + rng.integers(0, 4, (size, size, 3))
    elif kind == "water":
        waves = smooth_noise((size, size), 48, rng)[..., None]
        base = np.array([18, 52, 78], dtype=np.float32) + rng.integers(-6, 7, 3)
        out[..., :3] = base + 6 * waves + rng.integers(0, 3, (size, size, 3))
    elif kind == "nodata":
        out[...] = 0
    else:
        raise ValueError(f"unknown junk kind {kind!r}")
    return np.clip(out, 0, 255).astype(np.uint8)


def build_labelled_pool(scenes: str | os.PathLike, out_dir: str | os.PathLike,
                        spec: PoolSpec = PoolSpec()) -> LabelledPool:
    """Build the bank, chips, mosaic and labels from ``scenes`` (``ROOT/<class>/<images>``,
    e.g. UC Merced) under ``out_dir``. Deterministic for a given spec; an existing build with
    the same spec is reused."""
    import geopandas as gpd
    import rasterio
    from PIL import Image
    from rasterio.transform import from_origin
    from shapely.geometry import box

    root = Path(out_dir)
    source = Path(scenes)
    classes = sorted(p.name for p in source.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise InputError(f"{scenes}: no class folders")
    manifest = root / "pool.json"
    key = json.dumps({"spec": spec.__dict__, "scenes": str(source.resolve())}, sort_keys=True, default=list)
    rng = np.random.default_rng(spec.seed)
    counts_by_rank = np.round(np.linspace(spec.max_per_class, spec.min_per_class, len(classes))).astype(int)
    order = rng.permutation(len(classes))
    counts = {classes[c]: int(counts_by_rank[r]) for r, c in enumerate(order)}
    pool = LabelledPool(root, root / "bank", root / "chips", root / "mosaic.tif", root / "labels.gpkg",
                        classes, counts)
    if manifest.exists() and json.loads(manifest.read_text()).get("key") == key:
        pool.junk = json.loads(manifest.read_text())["junk"]
        return pool

    root.mkdir(parents=True, exist_ok=True)
    cells: list[tuple[str, np.ndarray]] = []
    for cls in classes:
        images = sorted(p for p in (source / cls).iterdir() if p.suffix.lower() in (".png", ".jpg", ".tif"))
        need = spec.bank_per_class + counts[cls]
        if len(images) < need:
            raise InputError(f"{source / cls}: {len(images)} images, the pool needs {need}")
        (pool.bank / cls).mkdir(parents=True, exist_ok=True)
        (pool.chips / cls).mkdir(parents=True, exist_ok=True)
        for img in images[: spec.bank_per_class]:
            _link(img, pool.bank / cls / img.name)
        for img in images[spec.bank_per_class : need]:
            _link(img, pool.chips / cls / img.name)
            with Image.open(img) as im:
                rgb = im.convert("RGB").resize((spec.tile, spec.tile), Image.Resampling.BILINEAR)
            cells.append((cls, np.asarray(rgb)))
    (pool.bank / "bank.json").write_text(json.dumps({"gsd": spec.pixel_size, "name": source.name}))
    real = len(cells)
    n_junk = round(real * spec.junk_fraction / (1 - spec.junk_fraction))
    (pool.chips / "junk").mkdir(parents=True, exist_ok=True)
    for j in range(n_junk):
        kind = JUNK_KINDS[j % len(JUNK_KINDS)]
        rgba = _junk_image(kind, spec.tile, rng)
        Image.fromarray(rgba if kind == "nodata" else rgba[..., :3]).save(pool.chips / "junk" / f"{kind}{j:03d}.png")
        cells.append(("nodata" if kind == "nodata" else "junk", rgba[..., :3]))
    pool.junk = n_junk

    # the mosaic: cells in a seeded order on a grid, the last row's empty cells nodata
    place = rng.permutation(len(cells))
    rows = -(-len(cells) // spec.columns)
    data = np.zeros((3, rows * spec.tile, spec.columns * spec.tile), dtype=np.uint8)
    labels, geoms = [], []
    transform = from_origin(*spec.origin, spec.pixel_size, spec.pixel_size)
    for slot in range(rows * spec.columns):
        r, c = divmod(slot, spec.columns)
        label = "nodata"
        if slot < len(cells):
            label, rgb = cells[place[slot]]
            data[:, r * spec.tile:(r + 1) * spec.tile, c * spec.tile:(c + 1) * spec.tile] = rgb.transpose(2, 0, 1)
        x0, y0 = transform * (c * spec.tile, r * spec.tile)
        x1, y1 = transform * ((c + 1) * spec.tile, (r + 1) * spec.tile)
        labels.append(label)
        geoms.append(box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
    # a real pixel that is black in every band would read as nodata: lift it by one level
    black = (data == 0).all(axis=0)
    filled = np.zeros_like(black)
    for slot in range(len(cells)):
        r, c = divmod(slot, spec.columns)
        if cells[place[slot]][0] != "nodata":
            filled[r * spec.tile:(r + 1) * spec.tile, c * spec.tile:(c + 1) * spec.tile] = True
    data[:, black & filled] = 1
    with rasterio.open(pool.mosaic, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=3,
                       dtype="uint8", crs=spec.crs, transform=transform, nodata=0, tiled=True,
                       blockxsize=spec.tile, blockysize=spec.tile, compress="deflate") as dst:
        dst.write(data)
    gpd.GeoDataFrame({"label": labels}, geometry=geoms, crs=spec.crs).to_file(pool.labels, driver="GPKG")
    manifest.write_text(json.dumps({"key": key, "junk": n_junk, "counts": counts}))
    return pool


def _link(src: Path, dst: Path) -> None:
    """Symlink ``dst`` to ``src`` (copy where links are not allowed)."""
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    try:
        os.symlink(src.resolve(), dst)
    except OSError:
        import shutil

        shutil.copy2(src, dst)
