"""``rsprune export``: training chips and footprint layers of a run's kept tiles; prints counts."""

from __future__ import annotations

import click

from ..errors import RsPruneError
from ..export import CHIP_FORMATS
from ..schema import Status
from .options import TqdmProgress, fail_cleanly, overwrite_option, run_file_argument


@click.command("export")
@run_file_argument
@click.option("--to", "to_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for training chips of the kept tiles (resumable).")
@click.option("--format", "fmt", type=click.Choice(list(CHIP_FORMATS)), default="tif", show_default=True,
              help="GeoTIFF chips (all bands, georeferenced) or 8-bit RGB PNG/JPEG with metadata.jsonl.")
@click.option("--footprints", type=click.Path(dir_okay=False), default=None,
              help="Also write the kept footprints: .gpkg, .parquet (GeoParquet), .fgb or .geojson.")
@click.option("--status", type=click.Choice([s.value for s in Status]), default=Status.KEPT.value,
              show_default=True, help="Which tiles to export.")
@overwrite_option
@fail_cleanly
def command(run_file: str, to_dir: str | None, fmt: str, footprints: str | None, status: str,
            overwrite: bool) -> None:
    """Export a run's kept tiles as training chips and/or footprint layers."""
    from ..export import export_chips, export_footprints

    if not to_dir and not footprints:
        raise RsPruneError("give `to` DIR (chips) and/or `footprints` FILE")
    if footprints:
        click.echo(f"footprints: {export_footprints(run_file, footprints, status, overwrite)}")
    if to_dir:
        with TqdmProgress() as bars:
            done = export_chips(run_file, to_dir, fmt, status, on_progress=bars)
        click.echo(f"chips: {done['chips']} in {done['folder']} ({done['written']} written, "
                   f"{done['skipped']} already there)")
