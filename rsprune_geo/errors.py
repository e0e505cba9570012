"""Errors that rsprune_geo reports to users as one clear line."""

from typing import TypedDict


class RsPruneError(Exception):
    """A problem with the user's input or environment, worded for the user.

    The CLI prints ``str(error)`` on one line and exits non-zero, without a traceback.
    """


class InputError(RsPruneError):
    """An input file, option or parameter that cannot be used."""


class OutputError(RsPruneError):
    """An output that cannot be written."""


class SkippedInput(TypedDict):
    """An input a run (or a prior bank) could not use, and why: the error's one line."""

    path: str
    error: str


def counted(n: int, word: str, plural: str | None = None) -> str:
    """``n`` and ``word`` in the number ``n`` takes.

    ``1 tile``, ``2 tiles`` (``plural``: when the plural is not the word and an ``s``).
    """
    return f"{n} {word if n == 1 else plural or word + 's'}"


def param(name: str) -> str:
    """How messages name a parameter: ```name```; the CLI shows it as its flag."""
    return f"`{name}`"


def require_extra(module: str, extra: str, what: str, named: str | None = None) -> None:
    """An :class:`InputError` naming the install extra that brings ``module``.

    The module is called ``named`` in the message, else by its module name. ``what`` needs it. Looked
    up, not imported.
    """
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise InputError(f"{what} needs {named or module}, which the default install leaves out: "
                         f"pip install 'rsprune_geo[{extra}]'")
