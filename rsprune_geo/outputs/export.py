"""Exports for data teams: training chips of the kept tiles, and footprint layers."""

from __future__ import annotations

import csv
import itertools
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from ..errors import InputError, OutputError, param
from ..progress import ProgressCallback, no_progress
from ..reading.pixels import read_all_bands, read_chip
from ..runs.runfile import read_run, read_tiles_with_status
from ..runs.vocabulary import Status
from .geopackage import write_style

CHIP_FORMATS = ("tif", "png", "jpg")
#: How chips are laid out: all in one folder, or one sub-folder per scene (torchvision's
#: ``ImageFolder`` layout, the scene as the class).
CHIP_LAYOUTS = ("flat", "by-scene")
FOOTPRINT_DRIVERS = {".gpkg": "GPKG", ".parquet": "parquet", ".fgb": "FlatGeobuf",
                     ".geojson": "GeoJSON", ".json": "GeoJSON"}


def _chosen_footprints(run_file: str | os.PathLike, status: str | None):
    tiles, _ = read_run(run_file)
    return tiles[tiles["status"] == status] if status else tiles


def footprints_geojson(run_file: str | os.PathLike, status: str | None = Status.KEPT) -> str:
    """The run's tile footprints as a GeoJSON FeatureCollection in WGS 84.

    By default the kept ones, in RFC 7946 GeoJSON, for pipes (``rsprune export RUN --footprints -``).
    """
    tiles = _chosen_footprints(run_file, status)
    if tiles.crs is not None and tiles.crs.to_epsg() != 4326:
        tiles = tiles.to_crs(4326)
    return tiles.to_json(drop_id=True)


#: Rows per file of a partitioned GeoParquet export.
PARTITION_ROWS = 1_000_000


def export_partitioned(run_file: str | os.PathLike, folder: str | os.PathLike, status: str | None = Status.KEPT,
                       overwrite: bool = False, rows_per_file: int = PARTITION_ROWS) -> Path:
    """Write the footprints as a partitioned GeoParquet dataset.

    ``folder/source_key=<key>/part-N.parquet``, one sub-folder per source raster (Hive style), at most
    ``rows_per_file`` rows a file, each file a complete GeoParquet file;
    ``geopandas.read_parquet(folder)`` or any Arrow dataset reader reads them back. Written to a
    temporary folder renamed into place.
    """
    import shutil

    out = Path(folder)
    if out.exists() and not overwrite:
        raise OutputError(f"{out}: the folder exists; pass {param('overwrite')} to replace it")
    if not out.parent.is_dir():
        raise OutputError(f"{out}: the folder {out.parent} does not exist")
    tiles = _chosen_footprints(run_file, status)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        keys = tiles["tile_id"].str.split("-r", n=1).str[0]
        for key, part in tiles.groupby(keys, sort=True):
            target = staging / f"source_key={key}"
            target.mkdir()
            for n, start in enumerate(range(0, len(part), rows_per_file)):
                part.iloc[start:start + rows_per_file].to_parquet(target / f"part-{n:05d}.parquet", index=False)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out


def export_footprints(run_file: str | os.PathLike, path: str | os.PathLike, status: str | None = Status.KEPT,
                      overwrite: bool = False) -> Path:
    """Write a run's tile footprints as GeoPackage, GeoParquet, FlatGeobuf or GeoJSON.

    The format follows the file's extension; the file is written atomically. A path ending in
    ``/`` (or an existing folder) gets a partitioned GeoParquet dataset
    (:func:`export_partitioned`).

    Args:
        run_file: the run's GeoPackage or run folder.
        path: the file (or folder) to write.
        status: the tiles to write (default: the kept ones); ``None`` for all.
        overwrite: replace an existing file.

    Returns:
        The path written.

    Raises:
        InputError: ``run_file`` is not a run, or the extension is unknown.
        OutputError: ``path`` exists (without ``overwrite``).
    """
    out = Path(path)
    if str(path).endswith(("/", os.sep)) or out.is_dir():
        return export_partitioned(run_file, out, status, overwrite)
    driver = FOOTPRINT_DRIVERS.get(out.suffix.lower())
    if driver is None:
        raise OutputError(f"{out}: use .gpkg, .parquet, .fgb or .geojson (or a folder/ for partitioned GeoParquet)")
    if out.exists() and not overwrite:
        raise OutputError(f"{out}: the file exists; pass {param('overwrite')} to replace it")
    tiles = _chosen_footprints(run_file, status)
    if driver == "GeoJSON" and tiles.crs is not None and tiles.crs.to_epsg() != 4326:
        tiles = tiles.to_crs(4326)  # RFC 7946
    tmp = out.with_name(f".{out.name}.tmp{out.suffix}")
    try:
        if driver == "parquet":
            tiles.to_parquet(tmp)
        else:
            layer = {"GPKG": "tiles", "FlatGeobuf": "tiles"}.get(driver)
            tiles.to_file(tmp, driver=driver, engine="pyogrio", layer=layer)
            if driver == "GPKG":
                write_style(tmp)  # QGIS opens it coloured by status
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def export_chips(
    run_file: str | os.PathLike,
    to: str | os.PathLike,
    fmt: str = "tif",
    status: str | None = Status.KEPT,
    on_progress: ProgressCallback = no_progress,
    layout: str = "flat",
) -> dict:
    """Write a run's tiles as training chips in ``to``, resumably.

    Chips already present are skipped, so an interrupted export resumes. Every file is written
    under a temporary name and renamed. Reads are windowed. Both formats also write
    ``manifest.csv``.

    Args:
        run_file: the run's GeoPackage or run folder.
        to: the folder of chips.
        fmt: ``tif``: georeferenced GeoTIFFs of every band in the source's dtype. ``png`` or
            ``jpg``: 8-bit RGB (the run's bands and stretch) with a ``metadata.jsonl`` that the
            Hugging Face ``imagefolder`` loader reads.
        status: the tiles to write (default: the kept ones); ``None`` for all.
        on_progress: called as ``on_progress("export", done, total)``.
        layout: ``flat``, or ``by-scene``: a sub-folder a scene, which torchvision's
            ``ImageFolder`` reads as classes.

    Returns:
        A summary: the folder, the chips, how many were written and skipped, the format, the
        layout and the tile size.

    Raises:
        InputError: ``run_file`` is not a run, a format or layout is unknown, or ``by-scene`` is
            asked of a run without scenes.
    """
    if fmt not in CHIP_FORMATS:
        raise InputError(f"{param('format')} {fmt}: use one of {', '.join(CHIP_FORMATS)}")
    if layout not in CHIP_LAYOUTS:
        raise InputError(f"{param('layout')} {layout}: use one of {', '.join(CHIP_LAYOUTS)}")
    chosen, record = read_tiles_with_status(run_file, status)
    by_scene = layout == "by-scene"
    if by_scene and ("scene" not in chosen or chosen["scene"].isna().any() or (chosen["scene"] == "").any()):
        raise InputError(f"{run_file}: {param('layout')} by-scene needs every tile's scene (a run with stage 2)")
    folder = Path(to)
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in folder.glob("**/.*.tmp"):  # a chip half-written by an interrupted export
        leftover.unlink()
    rows, written, skipped = [], 0, 0
    ordered = chosen.sort_values("source", kind="stable").itertuples()  # one pass: a source a tile in chip folders
    for path, part in itertools.groupby(ordered, key=lambda tile: tile.source):
        if not record.has_input(path):
            raise InputError(f"{run_file}: source {path} is not in the run's inputs")
        source, scaling = record.source(path, check=True)
        with source.open() as src:
            for tile in part:
                name = f"{tile.scene}/{tile.tile_id}.{fmt}" if by_scene else f"{tile.tile_id}.{fmt}"
                target = folder / name
                target.parent.mkdir(exist_ok=True)
                window = Window(int(tile.col_off), int(tile.row_off), int(tile.width), int(tile.height))
                bounds = rasterio.windows.bounds(window, src.transform)
                rows.append({
                    "file_name": name, "tile_id": tile.tile_id, "source": path,
                    "row_off": int(tile.row_off), "col_off": int(tile.col_off),
                    "width": int(tile.width), "height": int(tile.height),
                    "bounds": list(bounds), "crs": src.crs.to_string() if src.crs else None,
                    "scene": getattr(tile, "scene", None) or None,
                    "cluster": int(tile.cluster) if hasattr(tile, "cluster") else None,
                    "entropy": float(tile.entropy),
                })
                on_progress("export", len(rows), len(chosen))
                if target.exists():
                    skipped += 1
                    continue
                if fmt == "tif":
                    _write_geotiff_chip(src, window, target)
                else:
                    _write_image_chip(read_chip(source, window, scaling, src), target, fmt)
                written += 1
    _write_text(folder / "manifest.csv", _csv(rows))
    if fmt != "tif":
        _write_text(folder / "metadata.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return {"folder": str(folder), "chips": len(rows), "written": written, "skipped": skipped,
            "format": fmt, "layout": layout, "tile_size": record.parameters.tile_size}


def _write_geotiff_chip(src, window: Window, target: Path) -> None:
    data = read_all_bands(src, window)
    profile = {
        "driver": "GTiff", "width": int(window.width), "height": int(window.height),
        "count": src.count, "dtype": src.dtypes[0], "crs": src.crs,
        "transform": window_transform(window, src.transform), "nodata": src.nodata,
        "compress": "deflate",
    }
    if window.width % 16 == 0 and window.height % 16 == 0:
        profile.update(tiled=True, blockxsize=min(256, int(window.width)), blockysize=min(256, int(window.height)))
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data)
            dst.colorinterp = src.colorinterp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_image_chip(rgb: np.ndarray, target: Path, fmt: str) -> None:
    from PIL import Image

    tmp = target.with_name(f".{target.name}.tmp")
    try:
        Image.fromarray(rgb).save(tmp, format="PNG" if fmt == "png" else "JPEG", quality=95)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _csv(rows: list[dict]) -> str:
    import io

    buffer = io.StringIO()
    fields = ["file_name", "tile_id", "source", "row_off", "col_off", "width", "height",
              "bounds", "crs", "scene", "cluster", "entropy"]
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "bounds": " ".join(f"{v:.6f}" for v in row["bounds"])})
    return buffer.getvalue()


def _write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)
