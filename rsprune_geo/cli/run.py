"""``rsprune run``: tile rasters, score and select tiles, write a GeoPackage or a run folder; prints a summary."""

from __future__ import annotations

import click

from ..bank.profile import banks_or_default
from ..config import RunConfig
from ..errors import RsPruneError, param
from ..pipeline import run as run_pipeline
from .errors import fail_cleanly
from .options import output_option, overwrite_option, progress_json_option, quiet_option, run_config_options
from .progress import finish, progress_reporter


@click.command("run")
@click.argument("inputs", nargs=-1, required=True)
@output_option(required=False, help="Output: a GeoPackage (OUT.gpkg), or a run folder (any other name: GeoParquet "
               "parts, run.json, and tiles.gpkg up to --gpkg-max-tiles tiles); not needed with --dry-run.",
               folder=True)
@overwrite_option
@click.option("--dry-run", is_flag=True, help="Scan and plan only: print the inputs, tiles, tasks, bytes to decode, "
              "tiles to encode, the encoder's speed here and the estimated hours; write nothing.")
@quiet_option
@progress_json_option
@run_config_options()
@fail_cleanly
def command(inputs: tuple[str, ...], output: str | None, overwrite: bool, dry_run: bool, quiet: bool,
            progress_json: bool, **options) -> None:
    """Tile INPUTS (rasters, globs or folders), score and select tiles, write a GeoPackage or a run folder."""
    config = RunConfig(**{**options, "prior_bank": banks_or_default(options["prior_bank"])})
    if dry_run:
        from ..planning import estimate_run

        plan = estimate_run(list(inputs), config)
        finish(progress_json, {"dry_run": True, "tiles": plan.tiles, "tasks": plan.tasks,
                               "bytes_to_decode": plan.bytes_to_decode, "tiles_to_encode": plan.tiles_to_encode,
                               "images_per_s": plan.images_per_s, "seconds": plan.seconds}, plan.text())
        return
    if not output:
        raise RsPruneError(f"give {param('output')} OUT.gpkg (or a run folder) for the run's output, or --dry-run "
                           "to plan it only")
    with progress_reporter(progress_json, quiet) as on_progress:
        result = run_pipeline(list(inputs), output, config, overwrite=overwrite, on_progress=on_progress)
    finish(progress_json, {"output": str(result.output), "tiles": sum(result.record.counts.values()),
                           "counts": result.record.counts}, None if quiet else result.summary())
