"""The CLI's progress adapters.

Tqdm bars on a terminal, JSON lines for tools (``--progress-json``), and a command's last word
(:func:`finish`).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from typing import Any

import click

from ..progress import STAGES, ProgressCallback


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
    """The progress callback of a long command.

    JSON lines with ``--progress-json``, else tqdm bars on stderr (none with ``quiet`` or the main
    command's ``-q``).
    """
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


#: Seconds of a stage before its bar says a rate.
RATE_AFTER_S = 1.0


def rate_text(done: int, seconds: float, unit: str) -> str:
    """An average rate as a bar says it: ``12.3 tiles/s``, or ``4.2 s/tile`` when slower than one a second."""
    per_second = done / seconds
    if per_second >= 1:
        return f"{per_second:,.1f} {unit}s/s"
    return f"{seconds / done:.1f} s/{unit}"


class TqdmProgress:
    """A progress callback drawing one tqdm bar per stage on stderr (nothing when disabled)."""

    UNITS = {"stage1": "tile", "prior_bank": "image", "encoding": "tile", "export": "chip", "gallery": "tile"}

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bar: Any = None
        self.key: tuple[str, int] | None = None
        self.unit = "step"

    def __call__(self, stage: str, done: int, total: int) -> None:
        """Move the stage's bar (a new bar when the stage or its total changes)."""
        if not self.enabled:
            return
        if (stage, total) != self.key:
            self.close()
            self.key = (stage, total)
            if total > 1:
                from tqdm.auto import tqdm

                self.unit = self.UNITS.get(stage, "step")
                # the rate is said once it means something (a second in), as an average: tqdm's own first
                # rates divide by almost no time ("5368709.12tile/s")
                self.bar = tqdm(total=total, desc=STAGES.get(stage, stage), unit=self.unit, leave=False,
                                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]")
        if self.bar is not None:
            self.bar.n = min(int(done), self.bar.total)
            elapsed = self.bar.format_dict["elapsed"]
            if self.bar.n and elapsed >= RATE_AFTER_S:
                self.bar.set_postfix_str(rate_text(self.bar.n, elapsed, self.unit), refresh=False)
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
