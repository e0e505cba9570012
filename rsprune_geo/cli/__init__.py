"""The ``rsprune`` command line: one file per subcommand, options defined once (``options.py``).

Thin: every subcommand calls the Python API and draws its reports (progress bars, JSON lines,
one-line errors).
"""

from __future__ import annotations

import logging

import click

from . import demo, encoders, evaluate, export, labelled_pool, options_cmd, report, run, select


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
@click.option("-v", "--verbose", is_flag=True, help="Log what the run decides (INFO messages) on stderr.")
@click.version_option(package_name="rsprune_geo")
def main(debug: bool, verbose: bool) -> None:
    """RS-Prune for geodata: keep the informative, diverse tiles of remote-sensing imagery."""
    logging.getLogger("rsprune_geo").setLevel(logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING)


for _module in (run, select, report, export, encoders, evaluate, labelled_pool, demo, options_cmd):
    main.add_command(_module.command)

__all__ = ["main"]
