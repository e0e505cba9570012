"""Options shared by the subcommands, each defined once (rio's ``options.py`` manner).

Registry (the flags every subcommand spells the same way):

- every :class:`~rsprune_geo.config.RunConfig` field: :func:`config_option` builds its flag
  (type, default, choices, range, help) from the field's :class:`~rsprune_geo.config.Option`;
  :func:`run_config_options` adds them all, in declaration order;
- ``RUN`` (:func:`run_file_argument`), ``-o/--output`` (:func:`output_option`),
  ``--overwrite`` (:func:`overwrite_option`), ``-q/--quiet`` (:func:`quiet_option`),
  ``--progress-json`` (:func:`progress_json_option`).

The core names parameters as ```name```; :func:`cli_message` says them as flags. Progress bars
and JSON lines are in :mod:`.progress`, one-line errors in :mod:`.errors`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

import click

from ..choices import Choice
from ..config import Option, choices_of, run_options

#: Flags of parameters that are not run options, as messages name them.
EXTRA_FLAGS = {"output": "-o", "overwrite": "--overwrite", "format": "--format", "status": "--status",
               "to": "--to", "footprints": "--footprints", "layout": "--layout"}


def flag_of(name: str) -> str | None:
    """The CLI flag of a parameter name, ``None`` when it has none."""
    if name in EXTRA_FLAGS:
        return EXTRA_FLAGS[name]
    for f, opt, _ in run_options():
        if f.name == name:
            return None if opt.flag == "" else (opt.flag or "--" + name.replace("_", "-"))
    return None


def cli_message(text: str) -> str:
    """A core message as the CLI says it.

    ```tile_size``` becomes ``--tile-size``, and URL credentials are removed.
    """
    from ..reading.remote import redact

    def swap(match: re.Match) -> str:
        return flag_of(match.group(1)) or match.group(0)

    return redact(re.sub(r"`([a-z][a-z0-9_]*)`", swap, text))


def _click_type(opt: Option, base: str, kind: Any) -> Any:
    """The click type of an option: its choices, a path, or its base type."""
    choice = choices_of(kind)
    if choice is not None:
        return click.Choice(list(choice.words()))
    if opt.path == "file":
        return click.Path(exists=True, dir_okay=False)
    if opt.path == "folder":
        return click.Path(exists=True, file_okay=False)
    if opt.path == "bank":
        return BankPath()
    if opt.path == "new-folder":
        return click.Path(file_okay=False)
    if opt.path == "run":
        return click.Path(exists=True)
    return {"int": click.INT, "float": click.FLOAT, "str": click.STRING}[base]


class BankPath(click.ParamType):
    """A prior bank.

    A folder of class folders, a profile file, ``default`` (the shipped profile) or ``none`` (no bank).
    """

    name = "bank"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        """The value as given, once it names a bank."""
        if value in ("default", "none") or os.path.isdir(value) or os.path.isfile(value):
            return str(value)
        self.fail(f"{value}: no such folder or profile (or use default, none)", param, ctx)


def config_option(name: str, **overrides: Any) -> Callable:
    """The click option of the :class:`RunConfig` field ``name``.

    ``overrides``: click keyword arguments, e.g. ``default=None`` for "the run's".
    """
    from ..config import base_type, is_multiple

    for f, opt, kind in run_options():
        if f.name != name:
            continue
        base = base_type(kind)
        multiple = is_multiple(kind)
        kwargs: dict[str, Any] = {"help": opt.help}  # click.option's keyword arguments
        if base == "bool":
            kwargs["is_flag"] = True
        else:
            kwargs["type"] = _click_type(opt, base, kind)
            kwargs["multiple"] = multiple
            if not multiple:
                kwargs["default"] = f.default.value if isinstance(f.default, Choice) else f.default
                kwargs["show_default"] = f.default is not None
        kwargs.update(overrides)
        return click.option(opt.flag or "--" + name.replace("_", "-"), name, **kwargs)
    raise KeyError(name)


def run_config_options(names: list[str] | None = None) -> Callable:
    """Every :class:`RunConfig` option with a flag (or those in ``names``), in order."""
    chosen = [f.name for f, opt, _ in run_options() if opt.flag != "" and (names is None or f.name in names)]
    return apply_options([config_option(name) for name in chosen])


def apply_options(options: list[Callable]) -> Callable:
    """A decorator adding click ``options`` in their listed order."""

    def decorate(func: Callable) -> Callable:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def run_file_argument(func: Callable) -> Callable:
    """``RUN``: what ``rsprune run`` wrote, a GeoPackage or a run folder."""
    return click.argument("run_file", metavar="RUN", type=click.Path())(func)  # checked by the command (check_run)


def output_option(required: bool = True, help: str = "Output GeoPackage (.gpkg).", folder: bool = False) -> Callable:
    """``-o/--output`` (a file, or with ``folder`` a GeoPackage or a run folder)."""
    return click.option("-o", "--output", required=required, default=None, type=click.Path(dir_okay=folder),
                        help=help)


def overwrite_option(func: Callable) -> Callable:
    """``--overwrite``."""
    return click.option("--overwrite", is_flag=True, help="Replace an existing output.")(func)


def quiet_option(func: Callable) -> Callable:
    """``-q/--quiet``: no progress bars or summary."""
    return click.option("--quiet", "-q", is_flag=True, help="No progress bars or summary.")(func)


def progress_json_option(func: Callable) -> Callable:
    """``--progress-json``: the machine-readable protocol the QGIS plugin reads."""
    return click.option(
        "--progress-json", is_flag=True,
        help='Machine-readable progress on stderr, one JSON object a line: {"event": "progress", "stage", "done", '
             '"total"}, then {"event": "ok", ...} or {"event": "error", "message"}; warnings as '
             '{"event": "warning", "message"}.')(func)
