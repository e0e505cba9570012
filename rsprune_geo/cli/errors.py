"""The CLI's errors and logs.

Every failure one line on stderr (or a JSON ``error`` event) naming flags as the CLI spells them,
exit code 1 (130 when interrupted); log records and other libraries' warnings through the same
lines.
"""

from __future__ import annotations

import functools
import logging
import sys
import traceback
from collections.abc import Callable
from typing import Any

import click

from ..errors import RsPruneError
from .options import cli_message
from .progress import json_line


class JsonLogHandler(logging.Handler):
    """Log records as ``{"event": "warning"|"info", "message"}`` lines (``--progress-json``)."""

    def emit(self, record: logging.LogRecord) -> None:
        """Write the record as one JSON line."""
        json_line({"event": record.levelname.lower(), "message": cli_message(_one_line(record))})


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
