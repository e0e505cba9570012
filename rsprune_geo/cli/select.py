"""``rsprune select``: re-select a finished run with another keep ratio; prints a summary."""

from __future__ import annotations

import click

from .errors import fail_cleanly
from .options import config_option, output_option, overwrite_option, progress_json_option, run_file_argument
from .progress import finish


@click.command("select")
@run_file_argument
@output_option(required=False, help="Write the new selection here, a GeoPackage or a run folder as the run (a "
               "folder's selection may also go to a .gpkg); default: replace RUN, needs --overwrite.", folder=True)
@overwrite_option
@config_option("keep", required=True, default=None, show_default=False,
               help="Fraction of the tiles with data to keep.")
@config_option("uniformity", default=None, show_default=False, help="Quota blend (default: the run's).")
@config_option("spread", default=None, show_default=False, help="Distance bins per cluster (default: the run's).")
@config_option("seed", default=None, show_default=False, help="Seed (default: the run's).")
@config_option("max_per_cell", default=None, show_default=False,
               help="Most tiles kept of one ground cell, 0 = no cap (default: the run's).")
@config_option("cell_period", default=None, show_default=False, help="Period max-per-cell counts within "
               "(default: the run's).")
@config_option("geo_spread", default=None, show_default=False, help="Prefer tiles far in space and time from "
               "those kept (default: the run's).")
@progress_json_option
@fail_cleanly
def command(run_file: str, output: str | None, overwrite: bool, keep: float, uniformity: float | None,
            spread: int | None, seed: int | None, max_per_cell: int | None, cell_period: str | None,
            geo_spread: str | None, progress_json: bool) -> None:
    """Re-select tiles of a finished run with another keep ratio, without encoding."""
    from ..reselect import reselect

    result = reselect(run_file, output, keep, uniformity, spread, seed, overwrite, max_per_cell, cell_period,
                      geo_spread)
    finish(progress_json, {"output": str(result.output), "tiles": sum(result.record.counts.values()),
                           "counts": result.record.counts}, result.summary())
