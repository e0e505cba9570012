"""Gates that hold a run still at a known point until the test opens them, so that a test which
kills or interrupts a run mid-way never depends on how fast the machine is: the run cannot end
before the kill, whatever the schedule.

A gate wraps one function of the package (in this process, a subprocess, or a Dask worker): after
the wrapped function has returned ``after`` times in this process, each later call waits until
the file ``flag`` exists (or ``limit_s`` has passed, so a forgotten gate cannot hang the suite).
"""

from __future__ import annotations

import functools
import importlib
import os
import time
from pathlib import Path


def install(target: str, after: int, flag: str, limit_s: float = 600.0) -> None:
    """Wrap ``target`` (``"package.module:Class.method"`` or ``"package.module:function"``)
    with a gate in the calling process."""
    module_name, _, attribute = target.partition(":")
    owner = importlib.import_module(module_name)
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    original = getattr(owner, name)
    done = {"calls": 0}

    @functools.wraps(original)
    def gated(*args, **kwargs):
        if done["calls"] >= after:
            deadline = time.monotonic() + limit_s
            while not os.path.exists(flag) and time.monotonic() < deadline:
                time.sleep(0.02)
        result = original(*args, **kwargs)
        done["calls"] += 1
        return result

    setattr(owner, name, gated)


def open_gate(flag: str | Path) -> None:
    """Let every gate waiting on ``flag`` go on."""
    Path(flag).touch()


def gated_cli(target: str, after: int, flag: str | Path) -> list[str]:
    """The start of a command line that runs ``rsprune`` with a gate installed first
    (arguments follow it as they follow ``rsprune``)."""
    import sys

    here = str(Path(__file__).resolve().parent)
    code = (f"import sys; sys.path.insert(0, {here!r}); import gates; "
            f"gates.install({target!r}, {after}, {str(flag)!r}); "
            "from rsprune_geo.cli import main; sys.argv[0] = 'rsprune'; main()")
    return [sys.executable, "-c", code]
