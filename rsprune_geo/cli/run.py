"""``rsprune run``: tile rasters, score and select tiles, write a GeoPackage or a run folder; prints a summary."""

from __future__ import annotations

import click

from ..config import RunConfig
from ..pipeline import run as run_pipeline
from ..stages.bankprofile import banks_or_default
from .errors import fail_cleanly
from .options import output_option, overwrite_option, progress_json_option, quiet_option, run_config_options
from .progress import finish, progress_reporter


@click.command("run")
@click.argument("inputs", nargs=-1, required=True)
@output_option(help="Output: a GeoPackage (OUT.gpkg), or a run folder (any other name: GeoParquet parts, "
               "run.json, and tiles.gpkg up to --gpkg-max-tiles tiles).", folder=True)
@overwrite_option
@quiet_option
@progress_json_option
@run_config_options()
@fail_cleanly
def command(inputs: tuple[str, ...], output: str, overwrite: bool, quiet: bool, progress_json: bool,
            **options) -> None:
    """Tile INPUTS (rasters, globs or folders), score and select tiles, write a GeoPackage or a run folder."""
    config = RunConfig(**{**options, "prior_bank": banks_or_default(options["prior_bank"])})
    with progress_reporter(progress_json, quiet) as on_progress:
        result = run_pipeline(list(inputs), output, config, overwrite=overwrite, on_progress=on_progress)
    finish(progress_json, {"output": str(result.output), "tiles": sum(result.record.counts.values()),
                           "counts": result.record.counts}, None if quiet else result.summary())
