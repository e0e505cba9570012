"""The type of a JSON object as the package reads and writes it.

Run records, option schemas, STAC items and ``rsprune info --json`` are JSON: their values are
strings, numbers, booleans, ``None``, lists and objects, checked where they are read (a record
rebuilds its typed parts, a schema its options). :data:`JsonObject` marks those places; anywhere
else the package types its dictionaries by what they hold.
"""

from __future__ import annotations

from typing import Any, TypeAlias

#: A JSON object, as read from or written to a file, a table cell or the terminal.
JsonObject: TypeAlias = dict[str, Any]
