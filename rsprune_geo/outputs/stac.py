"""A run's tiles as a STAC collection.

One item per tile (its footprint in WGS 84, ``proj:`` fields in the source CRS, the date where
known, scene and scores as properties, an asset for the source window and, when chips were exported,
for the chip), as JSON files or stac-geoparquet.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError, OutputError, counted, param, require_extra
from ..jsontypes import JsonObject
from ..progress import ProgressCallback, no_progress
from ..runs.record import RunRecord
from ..runs.runfile import read_tiles_with_status
from ..runs.vocabulary import Status

#: How the items are written: one JSON file each (a self-contained catalogue), or one
#: stac-geoparquet file beside the collection (for runs too large for a file an item).
STAC_ITEM_FORMATS = ("json", "geoparquet")
ITEMS_PARQUET = "items.parquet"
#: The properties an item carries from its tile (``rsprune:`` prefixed in STAC).
TILE_PROPERTIES = ("status", "reason", "scene", "cluster", "entropy", "centroid_distance", "nodata_fraction")
PROJECTION_SCHEMA = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"


def require_stac(items: str = "json") -> None:
    """An :class:`InputError` naming the ``stac`` extra when it is needed and missing.

    Needed: pystac, and for ``items="geoparquet"`` stac-geoparquet. Checked before any work is done.
    """
    require_extra("pystac", "stac", "a STAC collection")
    if items == "geoparquet":
        require_extra("stac_geoparquet", "stac", "stac-geoparquet items", named="stac-geoparquet")


def export_stac(run_file: str | os.PathLike, folder: str | os.PathLike, status: str | None = Status.KEPT,
                items: str = "json", chips: str | os.PathLike | None = None, overwrite: bool = False,
                on_progress: ProgressCallback = no_progress) -> Path:
    """Write a run's tiles as a STAC collection in ``folder``.

    ``collection.json`` holds the extent, summaries of scenes and statuses, and the run's counts.
    The folder is written under a temporary name and renamed into place. Needs the ``stac`` extra.

    Args:
        run_file: the run's GeoPackage or run folder.
        folder: the collection's folder.
        status: the tiles to write (default: the kept ones); ``None`` for all.
        items: ``json`` (a file an item) or ``geoparquet`` (one stac-geoparquet file,
            ``items.parquet``).
        chips: a folder written by :func:`~rsprune_geo.outputs.export.export_chips`; its chips
            become each item's ``chip`` asset.
        overwrite: replace an existing folder.
        on_progress: called as ``on_progress(stage, done, total)``.

    Returns:
        The collection's path.

    Raises:
        InputError: the ``stac`` extra is missing, ``run_file`` is not a run, or its tiles have
            no CRS.
        OutputError: ``folder`` exists (without ``overwrite``) or cannot be written.
    """
    if items not in STAC_ITEM_FORMATS:
        raise InputError(f"{param('stac_items')} {items}: use one of {', '.join(STAC_ITEM_FORMATS)}")
    require_stac(items)
    import pystac

    out = Path(folder)
    if out.exists() and not overwrite:
        raise OutputError(f"{out}: the folder exists; pass {param('overwrite')} to replace it")
    chosen, record = read_tiles_with_status(run_file, status)
    if chosen.crs is None:
        raise InputError(f"{run_file}: STAC items need georeferenced tiles; these have no CRS (chips in pixels)")
    chip_files = _chip_files(Path(chips)) if chips is not None else {}
    collection = _collection(chosen, record, items)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".rsprune-stac-", dir=out.parent))
    root = staging / "collection"  # a plain name: pystac takes a dotted one for a file
    try:
        dicts = tile_items(chosen, record, collection.id, chip_files, out.resolve(), on_progress)
        if items == "json":
            for item in dicts:
                collection.add_item(pystac.Item.from_dict(item, preserve_dict=False))
        else:
            import stac_geoparquet.arrow

            root.mkdir()
            stac_geoparquet.arrow.parse_stac_items_to_parquet(dicts, output_path=root / ITEMS_PARQUET,
                                                              schema="FullFile")
            collection.add_asset("items", pystac.Asset(f"./{ITEMS_PARQUET}", title="the items as stac-geoparquet",
                                                       media_type="application/vnd.apache.parquet",
                                                       roles=["stac-items"]))
        collection.normalize_hrefs(str(root))
        collection.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
        if out.exists():
            shutil.rmtree(out)
        os.replace(root, out)
    except OSError as exc:
        raise OutputError(f"{out}: cannot write the STAC collection ({exc.strerror or exc})") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out / "collection.json"


def tile_items(tiles: pd.DataFrame, record: RunRecord, collection_id: str, chip_files: dict[str, Path] | None = None,
               root: Path | None = None, on_progress: ProgressCallback = no_progress) -> Iterator[JsonObject]:
    """One STAC item (a dict) per row of ``tiles``.

    WGS 84 geometry and bbox, the tile's date (else the run's time, said by ``rsprune:datetime_from``),
    ``proj:code``/``proj:wkt2``, ``proj:bbox``, ``proj:shape`` and ``proj:transform`` of its window, its
    scores as ``rsprune:`` properties, a ``source`` asset (the raster, with the window) and a ``chip``
    asset where ``chip_files`` has one (hrefs relative to ``root/<item id>/``, where a self-contained
    catalogue puts the item).
    """
    import shapely

    wgs84 = tiles.geometry.to_crs(4326)
    native = tiles.geometry.bounds.to_numpy()
    geometries = shapely.to_geojson(wgs84.values)
    bounds = wgs84.bounds.to_numpy()
    crs = tiles.crs
    epsg = crs.to_epsg()
    projection = {"proj:code": f"EPSG:{epsg}"} if epsg else {"proj:code": None, "proj:wkt2": crs.to_wkt()}
    created = record.created or datetime.now(UTC).isoformat()
    dates = pd.to_datetime(tiles["date"]) if "date" in tiles else pd.Series(pd.NaT, index=tiles.index)
    columns = {name: tiles[name].to_numpy() for name in TILE_PROPERTIES if name in tiles}
    for i, tile in enumerate(tiles.itertuples(index=False)):
        width, height = int(tile.width), int(tile.height)
        minx, miny, maxx, maxy = (float(v) for v in native[i])
        date = dates.iloc[i]
        properties: JsonObject = {
            "datetime": _utc(date).isoformat() if not pd.isna(date) else created,
            "rsprune:datetime_from": "acquisition" if not pd.isna(date) else "run",
            **projection,
            "proj:bbox": [minx, miny, maxx, maxy],
            "proj:shape": [height, width],
            "proj:transform": [(maxx - minx) / width, 0.0, minx, 0.0, -(maxy - miny) / height, maxy],
            "rsprune:run_id": record.run_id,
        }
        for name, values in columns.items():
            properties[f"rsprune:{name}"] = _plain(values[i])
        assets = {"source": {
            "href": tile.source, "title": "the source raster (the tile is its window)", "roles": ["data", "source"],
            "rsprune:window": {"col_off": int(tile.col_off), "row_off": int(tile.row_off), "width": width,
                               "height": height},
        }}
        chip = (chip_files or {}).get(tile.tile_id)
        if chip is not None:
            href = os.path.relpath(chip, root / tile.tile_id) if root is not None else str(chip)
            assets["chip"] = {"href": href, "title": "the training chip", "roles": ["data"],
                              "type": _media_type(chip)}
        box = bounds[i]
        links = []
        origin = record.input(tile.source) if record.has_input(tile.source) else {}
        if origin.get("stac_item"):  # the STAC item the tile's raster came from
            properties["rsprune:stac_item"] = origin["stac_item"]
            links.append({"rel": "derived_from", "href": origin.get("stac_href") or "", "type": "application/geo+json",
                          "title": f"the source item {origin['stac_item']}"})
        yield {
            "type": "Feature", "stac_version": "1.1.0", "stac_extensions": [PROJECTION_SCHEMA],
            "id": tile.tile_id, "collection": collection_id,
            "geometry": json.loads(geometries[i]), "bbox": [float(v) for v in box],
            "properties": properties, "assets": assets, "links": links,
        }
        on_progress("stac", i + 1, len(tiles))


def _collection(tiles: pd.DataFrame, record: RunRecord, items: str):
    """The collection: the tiles' extent in WGS 84 and time.

    Summaries of their scenes and statuses, the run's counts and parameters.
    """
    import pystac

    minx, miny, maxx, maxy = tiles.geometry.to_crs(4326).total_bounds
    dates = pd.to_datetime(tiles["date"]).dropna() if "date" in tiles else pd.Series([], dtype="datetime64[ns]")
    created = _utc(pd.Timestamp(record.created) if record.created else pd.Timestamp.now(tz="UTC"))
    start, end = (_utc(dates.min()), _utc(dates.max())) if len(dates) else (created, created)
    summaries: JsonObject = {"rsprune:status": sorted(set(tiles["status"]))}
    if "scene" in tiles:
        scenes = sorted({s for s in tiles["scene"].dropna() if s})
        if scenes:
            summaries["rsprune:scene"] = scenes
    collection = pystac.Collection(
        id=f"rsprune-{record.run_id or 'run'}",
        description=(f"{counted(len(tiles), 'tile')} of an RS-Prune run ({', '.join(summaries['rsprune:status'])}), "
                     f"{int(tiles.width.iloc[0])} px, from {counted(len(set(tiles['source'])), 'raster')}"),
        extent=pystac.Extent(pystac.SpatialExtent([[float(minx), float(miny), float(maxx), float(maxy)]]),
                             pystac.TemporalExtent([[start.to_pydatetime(), end.to_pydatetime()]])),
        license="other",
        summaries=pystac.Summaries(summaries),
        extra_fields={"rsprune:counts": record.counts, "rsprune:parameters": record.parameters.to_dict(),
                      "rsprune:items": items},
    )
    return collection


def _chip_files(folder: Path) -> dict[str, Path]:
    """Tile id → chip file, from the ``manifest.csv`` an export of chips wrote."""
    manifest = folder / "manifest.csv"
    if not manifest.is_file():
        raise InputError(f"{folder}: no manifest.csv; give the folder `rsprune export --to` wrote")
    with manifest.open(newline="") as fh:
        return {row["tile_id"]: (folder / row["file_name"]).resolve() for row in csv.DictReader(fh)}


def _utc(stamp: pd.Timestamp) -> pd.Timestamp:
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _media_type(path: Path) -> str:
    return {".tif": "image/tiff; application=geotiff", ".png": "image/png", ".jpg": "image/jpeg"}.get(
        path.suffix.lower(), "application/octet-stream")


def _plain(value: Any) -> Any:
    """A JSON value for a tile's column (NaN and missing as null)."""
    if value is None or (isinstance(value, float | np.floating) and np.isnan(value)):
        return None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value
