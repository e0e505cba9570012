"""``rsprune report``: a self-contained HTML report of a run; prints its path."""

from __future__ import annotations

import click

from .options import fail_cleanly, output_option, overwrite_option, run_file_argument


@click.command("report")
@run_file_argument
@output_option(help="HTML file to write.")
@overwrite_option
@fail_cleanly
def command(run_file: str, output: str, overwrite: bool) -> None:
    """Write a self-contained HTML report of a run (plots, parameters, timings, baselines)."""
    from ..report import write_report

    click.echo(f"report: {write_report(run_file, output, overwrite)}")
