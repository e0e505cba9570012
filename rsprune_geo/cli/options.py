"""Options shared by the subcommands, each defined once, and the CLI's adapters.

Registry (the flags every subcommand spells the same way):

- every :class:`~rsprune_geo.config.RunConfig` field: :func:`config_option` builds its flag
  (type, default, choices, range, help) from the field's :class:`~rsprune_geo.config.Option`;
  :func:`run_config_options` adds them all, in declaration order;
- ``RUN_FILE`` (:func:`run_file_argument`), ``-o/--output`` (:func:`output_option`),
  ``--overwrite`` (:func:`overwrite_option`), ``-q/--quiet`` (:func:`quiet_option`),
  ``--progress-json`` (:func:`progress_json_option`).

The adapters turn the core's reports into what a terminal shows: :func:`progress_reporter`
gives a long command its progress callback (:class:`TqdmProgress` bars, or
:func:`json_progress` lines with ``--progress-json``) and :func:`finish` its last word;
:func:`fail_cleanly` prints errors as one line naming flags (the core names parameters as
```name```). The main command's ``-v``/``-q`` set the package's log level.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import re
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import click

from ..config import Option, run_options
from ..errors import RsPruneError
from ..progress import STAGES, ProgressCallback

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
    """A core message as the CLI says it: ```tile_size``` becomes ``--tile-size``, and URL
    credentials are removed."""
    from ..pixels import redact

    def swap(match: re.Match) -> str:
        return flag_of(match.group(1)) or match.group(0)

    return redact(re.sub(r"`([a-z][a-z0-9_]*)`", swap, text))


def _click_type(opt: Option, base: str) -> Any:
    """The click type of an option: its choices, a path, or its base type."""
    if opt.choices:
        return click.Choice(list(opt.choices))
    if opt.path == "file":
        return click.Path(exists=True, dir_okay=False)
    if opt.path == "folder":
        return click.Path(exists=True, file_okay=False)
    if opt.path == "new-folder":
        return click.Path(file_okay=False)
    return {"int": click.INT, "float": click.FLOAT, "str": click.STRING}[base]


def config_option(name: str, **overrides: Any) -> Callable:
    """The click option of the :class:`RunConfig` field ``name`` (``overrides``: click keyword
    arguments, e.g. ``default=None`` for "the run's")."""
    from ..config import base_type, is_multiple

    for f, opt, kind in run_options():
        if f.name != name:
            continue
        base = base_type(kind)
        multiple = is_multiple(kind)
        kwargs: dict[str, Any] = {"help": opt.help}
        if base == "bool":
            kwargs["is_flag"] = True
        else:
            kwargs["type"] = _click_type(opt, base)
            kwargs["multiple"] = multiple
            if not multiple:
                kwargs["default"] = f.default
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
    """``RUN_FILE``: a GeoPackage written by ``rsprune run``."""
    return click.argument("run_file", type=click.Path(exists=True, dir_okay=False))(func)


def output_option(required: bool = True, help: str = "Output GeoPackage (.gpkg).") -> Callable:
    """``-o/--output``."""
    return click.option("-o", "--output", required=required, default=None, type=click.Path(dir_okay=False),
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


def json_line(event: dict) -> None:
    """One JSON object per line on stderr: the protocol of ``--progress-json``."""
    sys.stderr.write(json.dumps(event, default=_plain) + "\n")
    sys.stderr.flush()


def quieted() -> bool:
    """Whether the main command was given ``-q`` (no progress bars)."""
    context = click.get_current_context(silent=True)
    return bool(context and context.find_root().params.get("quiet"))


@contextlib.contextmanager
def progress_reporter(progress_json: bool = False, quiet: bool = False) -> Iterator[ProgressCallback]:
    """The progress callback of a long command: JSON lines with ``--progress-json``, else tqdm
    bars on stderr (none with ``quiet`` or the main command's ``-q``)."""
    if progress_json:
        yield json_progress
        return
    with TqdmProgress(enabled=not (quiet or quieted())) as bars:
        yield bars


def finish(progress_json: bool, event: dict, text: str | None = None) -> None:
    """End a command: ``{"event": "ok", **event}`` with ``--progress-json``, else ``text`` on stdout."""
    if progress_json:
        json_line({"event": "ok", **event})
    elif text:
        click.echo(text)


def _plain(value: Any) -> Any:
    """A value JSON cannot take as it is: a numpy scalar as its Python value, else its text."""
    return value.item() if hasattr(value, "item") else str(value)


def json_progress(stage: str, done: int, total: int) -> None:
    """A progress callback writing ``{"event": "progress", ...}`` lines."""
    json_line({"event": "progress", "stage": stage, "done": int(done), "total": int(total)})


class JsonLogHandler(logging.Handler):
    """Log records as ``{"event": "warning"|"info", "message"}`` lines (``--progress-json``)."""

    def emit(self, record: logging.LogRecord) -> None:
        """Write the record as one JSON line."""
        json_line({"event": record.levelname.lower(), "message": cli_message(_one_line(record))})


class TqdmProgress:
    """A progress callback drawing one tqdm bar per stage on stderr (nothing when disabled)."""

    UNITS = {"stage1": "window", "prior_bank": "image", "encoding": "tile", "export": "chip", "gallery": "tile"}

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bar: Any = None
        self.key: tuple[str, int] | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        """Move the stage's bar (a new bar when the stage or its total changes)."""
        if not self.enabled:
            return
        if (stage, total) != self.key:
            self.close()
            self.key = (stage, total)
            if total > 1:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, desc=STAGES.get(stage, stage), unit=self.UNITS.get(stage, "step"),
                                leave=False)
        if self.bar is not None:
            self.bar.n = min(int(done), self.bar.total)
            self.bar.refresh()

    def close(self) -> None:
        """Close the bar in progress."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> TqdmProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def fail_cleanly(func: Callable) -> Callable:
    """Turn user-facing errors (and unexpected ones) into one line on stderr and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        context = click.get_current_context()
        debug = context.find_root().params.get("debug", False)
        as_json = context.params.get("progress_json", False)

        def fail(message: str, code: int) -> None:
            message = cli_message(message)
            if as_json:
                json_line({"event": "error", "message": message})
            else:
                click.echo(f"Error: {message}" if code == 1 else message, err=True)
            sys.exit(code)

        handler: logging.Handler = JsonLogHandler() if as_json else _stderr_handler()
        package = logging.getLogger("rsprune_geo")
        package.addHandler(handler)
        package.propagate = False
        # other libraries' warnings go through the same log line (Python shows each once)
        logging.captureWarnings(True)
        library = logging.getLogger("py.warnings")
        library.addHandler(handler)
        library.propagate = False
        try:
            return func(*args, **kwargs)
        except RsPruneError as exc:
            if debug:
                traceback.print_exc()
            fail(str(exc), 1)
        except KeyboardInterrupt:
            fail("Interrupted; no output was written.", 130)
        except Exception as exc:  # a bug, or an input we did not foresee: still one line
            if debug:
                traceback.print_exc()
            first = str(exc).splitlines()[0] if str(exc) else ""
            fail(f"unexpected {type(exc).__name__}: {first} (rerun with --debug for details)", 1)
        finally:
            package.removeHandler(handler)
            library.removeHandler(handler)
            logging.captureWarnings(False)

    return wrapper


def _stderr_handler() -> logging.Handler:
    """Plain log lines on stderr, flags as the CLI spells them."""

    class CliFormatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return f"{record.levelname}: {cli_message(_one_line(record))}"

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(CliFormatter("%(levelname)s: %(message)s"))
    return handler


def _one_line(record: logging.LogRecord) -> str:
    """A log record's message on one line (a Python warning drops the source line it quotes)."""
    return record.getMessage().strip().splitlines()[0]
