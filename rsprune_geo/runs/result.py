"""What a run gives back: every tile with its decision, the run record, and a one-screen summary."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import pandas as pd

from ..config import SUGGESTED_KEEP
from ..errors import counted
from .record import RunRecord
from .vocabulary import Status

#: What coverage and Fréchet measure, said under every evaluation table that shows them.
LIKENESS_NOTE = ("coverage and frechet measure likeness to the tiles' own distribution, crowded scenes and all; "
                 "a scene-balanced selection departs from it on purpose, so it often scores lower there than random "
                 "does: judge the scenes kept by the true classes (classes_kept, label_balance, junk_kept)")


@dataclass
class RunResult:
    """What a run produced.

    Attributes:
        record: the run's record.
        output: the GeoPackage or run folder written; ``None`` when none was asked for.
        timings: seconds by stage.
        clusters: the clusters table (tiles a cluster before and after selection).
        evaluation: the evaluation table, when the run was judged against labels.
        tiles_: every tile with its decision, once read (use :attr:`tiles`).
    """

    record: RunRecord
    output: Path | None = None
    timings: dict = field(default_factory=dict)
    clusters: pd.DataFrame | None = None
    evaluation: pd.DataFrame | None = None
    tiles_: gpd.GeoDataFrame | None = field(default=None, repr=False)

    def __init__(self, record: RunRecord, output: Path | None = None, timings: dict | None = None,
                 clusters: pd.DataFrame | None = None, evaluation: pd.DataFrame | None = None,
                 tiles: gpd.GeoDataFrame | None = None) -> None:
        self.record, self.output, self.timings = record, output, dict(timings or {})
        self.clusters, self.evaluation, self.tiles_ = clusters, evaluation, tiles

    @property
    def tiles(self) -> gpd.GeoDataFrame:
        """Every tile with its decision (read from the output once, then kept)."""
        if self.tiles_ is None:
            if self.output is None:
                raise ValueError("the run kept no tiles and wrote no output")
            from .runfile import read_run

            self.tiles_, _ = read_run(self.output)
        return self.tiles_

    @property
    def kept(self) -> gpd.GeoDataFrame:
        """The kept tiles."""
        return self.tiles[self.tiles["status"] == Status.KEPT]

    def summary(self) -> str:
        """A one-screen text summary of the run."""
        record = self.record
        counts = record.counts
        total = sum(counts.values())
        lines = [f"tiles: {total}  (sources: {len(record.inputs)}, crs: {record.crs})"]
        lines += [f"skipped: {item['error']}" for item in record.skipped]
        for status in Status:
            if status.value in counts:
                n = int(counts[status.value])
                lines.append(f"  {status:<16} {n:>8}  {100 * n / total:5.1f}%")
        if record.stage1 is not None:
            st1 = record.stage1
            floor = (f", entropy floor {st1.floor_bits:.2f} bits (no prior-bank scene below it)"
                     if st1.floor_bits is not None else "")
            lines.append(f"stage 1: rule {st1.rule}{floor}; fractions count the "
                         f"{counted(st1.tiles_with_data, 'tile')} with data")
            if record.parameters.keep is None and counts.get(Status.KEPT.value):
                lines.append(f"keep: not given, so every tile that passed stage 1 is kept; a keep of "
                             f"{SUGGESTED_KEEP} prunes {100 * (1 - SUGGESTED_KEEP):.0f}% of the tiles with data, "
                             "the paper's high ratio")
        ground = record.ground
        if ground is not None and ground.cells:
            dated = ground.dated()
            spread = f", dates {min(dated)[:10]} to {max(dated)[:10]}" if len(set(dated)) > 1 else ""
            lines.append(f"ground: {counted(ground.cells, 'cell')} of {ground.cell_size:.4g} CRS units; "
                         f"{len(dated)} of {counted(len(ground.dates), 'raster')} dated{spread}")
        lines += [f"warning: {warning}" for warning in record.warnings]
        if self.timings:
            lines.append("timings: " + ", ".join(f"{k} {v:.2f}s" for k, v in self.timings.items()))
        if record.stage2 is not None:
            st2 = record.stage2
            lines.append(
                f"stage 2: encoder {st2.encoder} (runtime {st2.encoder_runtime}"
                + (f", {st2.input_size} px" if st2.input_size else "")
                + (f", {st2.views} views" if st2.views > 1 else "") + f"), metric {st2.metric}, {st2.n_centroids} "
                f"centroids over "
                f"{st2.n_classes} scenes, {st2.clustering} clustering, quotas by {st2.quota_by}, budget {st2.budget}"
            )
            if st2.prior_bank_profile or (len(st2.prior_bank) == 1 and st2.prior_bank[0].endswith(".rsbank")):
                lines.append(f"prior bank: the profile {os.path.basename(st2.prior_bank[0])} "
                             f"({st2.prior_bank_images} images, {st2.n_classes} scenes)")
            if st2.extends:
                lines.append(f"extends {st2.extends}: its {counted(st2.extends_kept, 'kept tile')} counted in the "
                             "scenes' shares and the per-cell cap")
        if self.evaluation is not None:
            where = self.evaluation.attrs.get("independent_encoder")
            lines.append("evaluation (higher is better, except frechet and junk_kept"
                         + (f"; coverage and frechet in {where}'s space" if where else "") + "):")
            lines.append(self.evaluation.to_string(float_format=lambda v: f"{v:.3f}"))
            if "coverage" in self.evaluation or "frechet" in self.evaluation:
                lines.append(LIKENESS_NOTE)
        if self.output:
            lines.append(f"output: {self.output}")
        return "\n".join(lines)
