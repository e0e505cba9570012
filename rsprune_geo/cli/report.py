"""``rsprune report``: an HTML report of a run with one gallery page per scene; prints its path."""

from __future__ import annotations

import click

from .errors import fail_cleanly
from .options import output_option, overwrite_option, progress_json_option, run_file_argument
from .progress import finish, progress_reporter


@click.command("report")
@run_file_argument
@output_option(help="HTML file to write (gallery pages go to NAME_galleries/ beside it).")
@click.option("--galleries/--no-galleries", default=True, show_default=True,
              help="Write one gallery page per scene (kept and left-out tiles, nearest and farthest).")
@click.option("--gallery-size", type=click.IntRange(1, 50), default=6, show_default=True,
              help="Tiles per gallery group (kept/left out x nearest/farthest) of each cluster.")
@overwrite_option
@progress_json_option
@fail_cleanly
def command(run_file: str, output: str, galleries: bool, gallery_size: int, overwrite: bool,
            progress_json: bool) -> None:
    """Write an HTML report of a run (plots, galleries, parameters, timings, baselines)."""
    from ..outputs.galleries import galleries_folder
    from ..outputs.report import write_report

    with progress_reporter(progress_json) as on_progress:
        path = write_report(run_file, output, overwrite, galleries=galleries, gallery_size=gallery_size,
                            on_progress=on_progress)
    event = {"report": str(path), "galleries": str(galleries_folder(path)) if galleries else None}
    finish(progress_json, event, f"report: {path}" + (f"\ngalleries: {event['galleries']}" if galleries else ""))
