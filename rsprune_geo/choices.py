"""The words a run parameter allows, as enums: each is checked in one place (:meth:`Choice.parse`)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Self

from .errors import InputError, param


class Choice(StrEnum):
    """The words a parameter allows.

    Members are strings (``EdgeMode.DROP == "drop"``), and :meth:`parse` is the one place a word is
    checked: an unknown one is an :class:`InputError` naming the parameter and the words it takes.
    """

    @classmethod
    def parse(cls, value: Any, name: str) -> Self:
        """The member for ``value`` (a member or its word) given as parameter ``name``."""
        if isinstance(value, cls):
            return value
        try:
            return cls(value)
        except ValueError:
            raise InputError(f"{param(name)} {value}: use one of {', '.join(cls.words())}") from None

    @classmethod
    def words(cls) -> tuple[str, ...]:
        """The allowed words, in order."""
        return tuple(member.value for member in cls)


class Stage1Rule(Choice):
    """How stage 1 judges information.

    ``bank``: against the prior bank (a floor below which no scene of the bank goes, then any
    top-fraction cut taken within each scene); ``paper``: the paper's global top fraction by entropy
    (D_H↑30%).
    """

    BANK = "bank"
    PAPER = "paper"


class EdgeMode(Choice):
    """Partial tiles at a raster's edge: dropped, or padded with nodata."""

    DROP = "drop"
    PAD = "pad"


class ScalingScope(Choice):
    """How non-uint8 values are scaled to grey levels: per source, or one scaling for the run."""

    SOURCE = "source"
    RUN = "run"


class Scheduler(Choice):
    """Where local stage-1 work runs: threads, processes, or this thread (sync)."""

    THREADS = "threads"
    PROCESSES = "processes"
    SYNC = "sync"


class ClusteringMode(Choice):
    """Stage-2 clustering: assign tiles to the prior bank's centroids, or k-means on the tiles."""

    PRIOR = "prior"
    SELF = "self"


class QuotaMode(Choice):
    """How the budget is shared: among centroids, or among scenes first, then their centroids."""

    CENTROID = "centroid"
    SCENE = "scene"


class MetricMode(Choice):
    """Which metric nearest-scene decisions use.

    The one the prior bank's labels fit in closed form (``bank``: within-class whitening), or the
    encoder's own cosine (``raw``).
    """

    BANK = "bank"
    RAW = "raw"


class Runtime(Choice):
    """Where an encoder's network runs.

    ``auto`` (onnxruntime on a CPU, int8 where the encoder allows it and prior-bank images calibrate it;
    torch on CUDA), or one runtime by name.
    """

    AUTO = "auto"
    TORCH = "torch"
    ONNX = "onnx"
    ONNX_INT8 = "onnx-int8"

    @property
    def onnx(self) -> bool:
        """Whether onnxruntime runs the network (float32 or int8)."""
        return self in (Runtime.ONNX, Runtime.ONNX_INT8)


class CellPeriod(Choice):
    """What a per-cell cap counts within.

    The whole run, each year, or each season of the year (December–February, March–May, June–August,
    September–November).
    """

    ALL = "all"
    YEAR = "year"
    SEASON = "season"


class GeoSpread(Choice):
    """Whether selection prefers tiles far in space and time from those kept.

    ``auto`` turns it on when tiles share ground or span several dates.
    """

    AUTO = "auto"
    ON = "on"
    OFF = "off"
