"""The ``rsprune`` command line: one file per subcommand, options defined once (``options.py``).

Thin: every subcommand calls the Python API and draws its reports (progress bars, JSON lines,
one-line errors).
"""

from __future__ import annotations

import logging

import click

from . import bank, demo, encoders, evaluate, export, info, labelled_pool, options_cmd, report, run, select

#: Log level by verbosity (``-v`` count minus ``-q`` count), as ``rio`` does.
LEVELS = {-2: logging.CRITICAL, -1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks of errors (and DEBUG messages).")
@click.option("-v", "--verbose", count=True, help="More log messages on stderr: -v what the run decides, -vv debug.")
@click.option("-q", "--quiet", count=True, help="Fewer: -q errors only and no progress bars, -qq nothing but errors "
              "that stop a command.")
@click.version_option(package_name="rsprune_geo")
def main(debug: bool, verbose: int, quiet: int) -> None:
    """RS-Prune for geodata: keep the informative, diverse tiles of remote-sensing imagery."""
    level = logging.DEBUG if debug else LEVELS[max(-2, min(2, verbose - quiet))]
    logging.getLogger("rsprune_geo").setLevel(level)


for _module in (run, select, info, report, export, encoders, evaluate, bank, labelled_pool, demo, options_cmd):
    main.add_command(_module.command)

__all__ = ["main"]
