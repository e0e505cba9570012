"""The run parameters the plugin offers, read from ``options.json``.

``options.json`` is what ``rsprune options --json`` prints (the package's one definition of each
parameter: default, range, help, label); ``make plugin`` writes it and a test keeps it in sync,
so the dialog, the Processing algorithm and the CLI cannot drift apart.
"""

from __future__ import annotations

import json
import os

_PATH = os.path.join(os.path.dirname(__file__), "options.json")
with open(_PATH, encoding="utf-8") as _fh:
    SCHEMA = json.load(_fh)

#: The parameters shown in the dialog and the Processing algorithm, in order.
GUI_OPTIONS = [item for item in SCHEMA["options"] if item["gui"]]
#: The registered encoder names (any torchgeo weight name is accepted too).
ENCODERS = list(SCHEMA["encoders"])
#: The tile statuses (value, colour, whether pruned); the one not pruned is the kept one.
STATUSES = list(SCHEMA["statuses"])
KEPT = next(s["value"] for s in STATUSES if not s["pruned"])
#: The words a progress bar shows for each stage of a command.
STAGES = dict(SCHEMA.get("stages", {}))
#: The rsprune_geo version the plugin was built with: the backend must be at least this.
PACKAGE_VERSION = SCHEMA.get("package_version", "0")


def option(name: str) -> dict:
    """One parameter's definition."""
    for item in SCHEMA["options"]:
        if item["name"] == name:
            return item
    raise KeyError(name)


def form_default(name: str):
    """The value a form starts with: the suggested one when set, else the default."""
    item = option(name)
    return item["suggested"] if item["suggested"] is not None else item["default"]


def check(name: str, value) -> str | None:
    """Why ``value`` is out of the parameter's range or choices, else ``None``."""
    item = option(name)
    if value is None:
        return None if item["optional"] else f"{item['label'] or name}: a value is needed"
    if item["choices"] and value not in item["choices"]:
        return f"{item['label'] or name}: use one of {', '.join(item['choices'])}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        low, high = item["low"], item["high"]
        if low is not None and (value <= low if item["low_open"] else value < low):
            return f"{item['label'] or name}: {value} is below the allowed range"
        if high is not None and value > high:
            return f"{item['label'] or name}: {value} is above the allowed range"
    return None
