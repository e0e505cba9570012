"""``rsprune export``: training chips and footprint layers of a run's kept tiles; prints counts."""

from __future__ import annotations

import click

from ..errors import RsPruneError
from ..outputs.export import CHIP_FORMATS, CHIP_LAYOUTS
from ..schema import Status
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
@click.option("--status", type=click.Choice([s.value for s in Status]), default=Status.KEPT.value,
              show_default=True, help="Which tiles to export.")
@overwrite_option
@progress_json_option
@fail_cleanly
def command(run_file: str, to_dir: str | None, fmt: str, layout: str, footprints: str | None, status: str,
            overwrite: bool, progress_json: bool) -> None:
    """Export a run's kept tiles as training chips and/or footprint layers."""
    from ..outputs.export import export_chips, export_footprints, footprints_geojson

    if not to_dir and not footprints:
        raise RsPruneError("give `to` DIR (chips) and/or `footprints` FILE")
    piped = footprints == "-"  # standard output holds the GeoJSON: messages go to stderr
    event: dict = {}
    if piped:
        click.echo(footprints_geojson(run_file, status))
    elif footprints:
        event["footprints"] = str(export_footprints(run_file, footprints, status, overwrite))
        if not progress_json:
            click.echo(f"footprints: {event['footprints']}")
    if to_dir:
        with progress_reporter(progress_json, quiet=piped) as on_progress:
            done = export_chips(run_file, to_dir, fmt, status, on_progress=on_progress, layout=layout)
        event["chips"] = done
        if not progress_json:
            click.echo(f"chips: {done['chips']} in {done['folder']} ({done['written']} written, "
                       f"{done['skipped']} already there)", err=piped)
    finish(progress_json, event)
