"""Acquisition dates: from the file name, GDAL metadata or a STAC item, held as codes."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

from ..errors import InputError, param


class DatedSource(Protocol):
    """What dating a source needs of it: its path and the date items of its metadata."""

    @property
    def path(self) -> str:
        """The file path or GDAL path."""
        ...

    @property
    def date_tags(self) -> tuple[tuple[str, str], ...]:
        """GDAL metadata items that may hold the acquisition date."""
        ...


#: GDAL metadata items that hold an acquisition date, in the order they are tried.
DATE_TAGS = ("ACQUISITIONDATE", "ACQUISITION_DATE", "DATE_ACQUIRED", "SENSING_TIME", "DATATAKE_SENSING_START",
             "TIFFTAG_DATETIME")


def date_tags(tags: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """The items of GDAL metadata ``tags`` that may hold an acquisition date (:data:`DATE_TAGS`).

    Names upper-cased, in :data:`DATE_TAGS` order.
    """
    upper = {k.upper(): v for k, v in tags.items()}
    return tuple((name, upper[name]) for name in DATE_TAGS if name in upper)


def acquisition_date(path: str, pattern: str | None = None,
                     tags: tuple[tuple[str, str], ...] | None = None) -> tuple[np.datetime64, str]:
    r"""When the raster at ``path`` was acquired, and where that was read: ``(date, how)``.

    With ``pattern`` (a regular expression with a ``date`` group, else its first group), the file
    name says it (``_(?P<date>\d{8})\.tif$`` for NAIP's ``…_20090818.tif``). Else GDAL metadata
    (:data:`DATE_TAGS`, e.g. ``TIFFTAG_DATETIME`` ``2019:07:14 10:30:00``; ``tags``: those already
    read, as :attr:`RasterSource.date_tags`, else the file is opened), else a STAC item beside
    the file (``NAME.json`` or ``NAME.tif.json``, ``properties.datetime``). ``(NaT, "")`` when none
    says it.
    """
    import json
    import re

    import pandas as pd

    def parse(text: str) -> np.datetime64:
        text = text.strip()
        if re.fullmatch(r"\d{4}:\d\d:\d\d( .*)?", text):  # TIFF's "YYYY:MM:DD HH:MM:SS"
            text = text[:10].replace(":", "-") + text[10:]
        stamp = pd.to_datetime(text, errors="coerce", utc=True)
        return np.datetime64("NaT", "ns") if pd.isna(stamp) else np.datetime64(stamp.tz_convert(None), "ns")

    if pattern:
        try:
            match = re.search(pattern, os.path.basename(path))
        except re.error as exc:
            raise InputError(f"{param('date_pattern')} {pattern!r}: not a regular expression ({exc})") from None
        if match:
            text = match.groupdict().get("date") or (match.group(1) if match.groups() else match.group(0))
            found = parse(text)
            if not np.isnat(found):
                return found, "file name"
    local = not path.startswith("/vsi") and "://" not in path
    if tags is None and local:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with rasterio.open(path) as src:
                    tags = date_tags(src.tags())
        except RasterioIOError:
            tags = ()
    for name, text in tags or ():
        found = parse(text)
        if not np.isnat(found):
            return found, f"metadata {name}"
    if local:
        stem = os.path.splitext(path)[0]
        for item in (stem + ".json", path + ".json"):
            if os.path.isfile(item):
                try:
                    properties = json.loads(Path(item).read_text()).get("properties", {})
                except (ValueError, AttributeError):
                    continue
                text = properties.get("datetime") or properties.get("start_datetime")
                if isinstance(text, str):
                    found = parse(text)
                    if not np.isnat(found):
                        return found, "STAC item"
    return np.datetime64("NaT", "ns"), ""


@dataclass
class SourceDates:
    """Each source's acquisition date and where it was read, as codes.

    ``code`` indexes ``values`` (the distinct dates, NaT among them when a source has none) and
    ``how_code`` indexes ``how`` (``"file name"``, ``"metadata …"``, ``"STAC item"``, ``""``): a few
    bytes a source, however many chips.
    """

    values: np.ndarray
    code: np.ndarray
    how: list[str]
    how_code: np.ndarray

    def __len__(self) -> int:
        return int(self.code.size)

    def of(self, index: int) -> np.datetime64:
        """Source ``index``'s date (NaT: unknown)."""
        return self.values[int(self.code[index])]

    def how_of(self, index: int) -> str:
        """Where source ``index``'s date was read (``""``: nowhere)."""
        return self.how[int(self.how_code[index])]

    def dated(self) -> int:
        """How many sources have a date."""
        known = ~np.isnat(self.values)
        return int(known[self.code].sum()) if self.code.size else 0


def source_dates(sources: Sequence[DatedSource], pattern: str | None = None) -> SourceDates:
    """Each source's :func:`acquisition_date`, as a :class:`SourceDates`."""
    values: dict[np.datetime64 | str, int] = {}
    hows: dict[str, int] = {}
    code = np.zeros(len(sources), dtype=np.int32)
    how_code = np.zeros(len(sources), dtype=np.uint8)
    for index, source in enumerate(sources):
        when, how = acquisition_date(source.path, pattern, source.date_tags)
        key = "NaT" if np.isnat(when) else when  # NaT equals no NaT, not even itself
        code[index] = values.setdefault(key, len(values))
        how_code[index] = hows.setdefault(how, len(hows))  # a handful: file name, a tag, STAC item
    dates = np.array([np.datetime64("NaT", "ns") if isinstance(v, str) else v for v in values],
                     dtype="datetime64[ns]")
    return SourceDates(dates, code.astype(np.min_scalar_type(max(len(values) - 1, 0))), list(hows),
                       how_code)
