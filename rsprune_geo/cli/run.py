"""``rsprune run``: tile rasters, score and select tiles, write the GeoPackage; prints a summary."""

from __future__ import annotations

import click

from ..config import RunConfig
from ..pipeline import run as run_pipeline
from ..schema import status_counts
from .options import (
    TqdmProgress,
    fail_cleanly,
    json_line,
    json_progress,
    output_option,
    overwrite_option,
    progress_json_option,
    quiet_option,
    run_config_options,
)


@click.command("run")
@click.argument("inputs", nargs=-1, required=True)
@output_option()
@overwrite_option
@quiet_option
@progress_json_option
@run_config_options()
@fail_cleanly
def command(inputs: tuple[str, ...], output: str, overwrite: bool, quiet: bool, progress_json: bool,
            **options) -> None:
    """Tile INPUTS (rasters, globs or folders), score and select tiles, write a GeoPackage."""
    config = RunConfig(**options)
    with TqdmProgress(enabled=not (quiet or progress_json)) as bars:
        result = run_pipeline(list(inputs), output, config, overwrite=overwrite,
                              on_progress=json_progress if progress_json else bars)
    if progress_json:
        json_line({"event": "ok", "output": str(result.output), "tiles": len(result.tiles),
                   "counts": status_counts(result.tiles["status"])})
    elif not quiet:
        click.echo(result.summary())
