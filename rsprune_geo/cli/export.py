"""``rsprune export``: training chips, footprint layers and a STAC collection of a run's kept tiles.

Prints counts.
"""

from __future__ import annotations

import click

from ..errors import RsPruneError
from ..outputs.export import CHIP_FORMATS, CHIP_LAYOUTS
from ..outputs.stac import STAC_ITEM_FORMATS
from ..runs.vocabulary import Status
from .errors import fail_cleanly
from .options import overwrite_option, progress_json_option, run_file_argument
from .progress import finish, progress_reporter


@click.command("export")
@run_file_argument
@click.option("--to", "to_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for training chips of the kept tiles (resumable).")
@click.option("--format", "fmt", type=click.Choice(list(CHIP_FORMATS)), default="tif", show_default=True,
              help="GeoTIFF chips (all bands, georeferenced) or 8-bit RGB PNG/JPEG with metadata.jsonl.")
@click.option("--layout", type=click.Choice(list(CHIP_LAYOUTS)), default="flat", show_default=True,
              help="Chips in one folder, or one sub-folder per scene (torchvision ImageFolder classes).")
@click.option("--footprints", type=click.Path(), default=None,
              help="Also write the kept footprints: .gpkg, .parquet (GeoParquet), .fgb or .geojson; a FOLDER/ "
                   "gets partitioned GeoParquet (one sub-folder per source); '-' writes GeoJSON (WGS 84) to "
                   "standard output.")
@click.option("--stac", "stac_dir", type=click.Path(file_okay=False), default=None,
              help="Also write a STAC collection of the tiles in this folder: one item per tile (footprint in WGS 84, "
                   "proj: fields, date, scene and scores), with an asset for its chip when --to exports chips.")
@click.option("--stac-items", type=click.Choice(list(STAC_ITEM_FORMATS)), default="json", show_default=True,
              help="The STAC items as one JSON file each, or one stac-geoparquet file (items.parquet) for large runs.")
@click.option("--status", type=click.Choice([s.value for s in Status] + ["all"]), default=Status.KEPT.value,
              show_default=True, help="Which tiles to export (all: every tile, whatever its status).")
@overwrite_option
@progress_json_option
@fail_cleanly
def command(run_file: str, to_dir: str | None, fmt: str, layout: str, footprints: str | None, stac_dir: str | None,
            stac_items: str, status: str, overwrite: bool, progress_json: bool) -> None:
    """Export a run's kept tiles as training chips, footprint layers and/or a STAC collection."""
    from ..outputs.export import export_chips, export_footprints, footprints_geojson
    from ..outputs.stac import export_stac, require_stac

    if not to_dir and not footprints and not stac_dir:
        raise RsPruneError("give `to` DIR (chips), `footprints` FILE and/or `stac` DIR")
    if stac_dir:
        require_stac(stac_items)  # before any chip or footprint is written
    chosen = None if status == "all" else status
    piped = footprints == "-"  # standard output holds the GeoJSON: messages go to stderr
    event: dict = {}
    if piped:
        click.echo(footprints_geojson(run_file, chosen))
    elif footprints:
        event["footprints"] = str(export_footprints(run_file, footprints, chosen, overwrite))
        if not progress_json:
            click.echo(f"footprints: {event['footprints']}")
    if to_dir:
        with progress_reporter(progress_json, quiet=piped) as on_progress:
            done = export_chips(run_file, to_dir, fmt, chosen, on_progress=on_progress, layout=layout)
        event["chips"] = done
        if not progress_json:
            click.echo(f"chips: {done['chips']} in {done['folder']} ({done['written']} written, "
                       f"{done['skipped']} already there)", err=piped)
    if stac_dir:
        with progress_reporter(progress_json, quiet=piped) as on_progress:
            event["stac"] = str(export_stac(run_file, stac_dir, chosen, stac_items, chips=to_dir, overwrite=overwrite,
                                            on_progress=on_progress))
        if not progress_json:
            click.echo(f"stac: {event['stac']} ({stac_items} items)", err=piped)
    finish(progress_json, event)
