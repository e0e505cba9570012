"""Stage 2 as one step of a run.

The prior bank's encoder and scene centroids (its model), the stage-1 survivors embedded (in stage
1's single pass under the bank rule, in a second pass under the paper's) and assigned to the
centroids (or clustered), the budget selected, and a record of how.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from rasterio.crs import CRS

from ..bank.metric import metric_and_views
from ..bank.priorbank import CentroidSpec, bank_centroids, bank_model
from ..bank.profile import Bank, BankProfile, bank_encoder, profile_model
from ..choices import ClusteringMode, MetricMode, Runtime
from ..config import RunConfig
from ..engine.columns import TileColumns
from ..engine.passes import Encoding, run_pass
from ..engine.plan import RunPlan
from ..engine.window import Encode, PassSpec
from ..errors import InputError, counted, param
from ..features import Encoder
from ..features.cache import default_cache_dir
from ..features.runtime import onnxruntime_version
from ..progress import ProgressCallback, no_progress
from ..reading.ground import GroundGrid
from ..runs.record import Stage2Record
from ..runs.runfile import read_run
from ..runs.vocabulary import ReasonContext, Status
from .budget import Budget
from .clustering import SceneCentroids, assign_to_centroids, self_clusters
from .selection import (
    AppliedSelection,
    HeldBefore,
    SelectionOptions,
    apply_selection,
    centroid_first_order,
    find_duplicates,
)
from .stage1 import Stage1Result

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage2Options:
    """What stage 2 needs of a run's parameters.

    Each is defined in :class:`~rsprune_geo.config.RunConfig`: the prior bank, the encoder and where it
    runs, how the bank is over-clustered, the clustering, the selection, and whether an evaluation needs
    every tile's embedding (``evaluate``).
    """

    prior_bank: tuple[str, ...]
    encoder: str
    weights: str | None
    centroids: CentroidSpec
    clustering: ClusteringMode
    selection: SelectionOptions
    cache_dir: str | None
    device: str | None
    runtime: Runtime
    batch_size: int | None
    evaluate: bool
    extend: str | None = None
    metric: MetricMode = MetricMode.BANK
    views: int | None = None
    input_size: int | None = None

    @classmethod
    def from_config(cls, config: RunConfig) -> Stage2Options:
        """Stage 2's options of a (validated) run configuration."""
        return cls(
            prior_bank=tuple(config.prior_bank), encoder=config.encoder, weights=config.weights,
            centroids=CentroidSpec(config.k_per_class, config.images_per_centroid, config.k, config.bank_samples,
                                   config.seed),
            clustering=config.clustering, selection=SelectionOptions.from_config(config),
            cache_dir=config.cache_dir, device=config.device, runtime=config.runtime, batch_size=config.batch_size,
            evaluate=config.evaluate, extend=config.extend, metric=config.metric, views=config.views,
            input_size=config.input_size,
        )

    @property
    def seed(self) -> int:
        """The run's seed."""
        return self.selection.seed

    @property
    def needs_vectors(self) -> bool:
        """Whether the run needs the embeddings themselves (near-duplicates, self-clustering, the evaluation).

        Otherwise each tile's nearest centroid is all that leaves the encoder.
        """
        return self.evaluate or self.selection.dedup is not None or self.clustering is ClusteringMode.SELF

    @property
    def cache_root(self) -> Path:
        """The embedding and centroid cache folder."""
        return Path(self.cache_dir) if self.cache_dir else default_cache_dir()


class Scratch:
    """A memory-mapped (positions, dim) float32 file for runs that keep the embeddings.

    It lives under the cache, holds one batch in memory at a time, and is removed by :meth:`close`.
    """

    def __init__(self, cache_root: Path, n: int, dim: int):
        folder = cache_root / "scratch"
        folder.mkdir(parents=True, exist_ok=True)
        fd, self.path = tempfile.mkstemp(prefix="run-", suffix=".npy", dir=folder)
        os.close(fd)
        self.array = np.lib.format.open_memmap(self.path, mode="w+", dtype=np.float32, shape=(n, dim))

    def keep(self, positions: np.ndarray, vectors: np.ndarray) -> None:
        """Store the vectors of some positions."""
        self.array[positions] = vectors

    def close(self) -> None:
        """Remove the file."""
        del self.array
        os.unlink(self.path)


@dataclass
class Stage2Model:
    """Stage 2's model of a run.

    The prior ``bank``, its ``encoder`` and scene ``centroids``, and (runs that keep embeddings) the
    ``scratch`` file they go to.
    """

    bank: Bank
    encoder: Encoder
    centroids: SceneCentroids
    scratch: Scratch | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def encoding(self, what: Encode) -> Encoding:
        """What a pass encodes with this model."""
        return Encoding(self.encoder, self.centroids, what, self.scratch.keep if self.scratch is not None else None)

    def close(self) -> None:
        """Release the scratch file."""
        if self.scratch is not None:
            self.scratch.close()
            self.scratch = None


def prepare_model(bank: Bank, options: Stage2Options, positions: int,
                  on_progress: ProgressCallback = no_progress) -> Stage2Model:
    """The encoder (fitted or calibrated on the bank when it needs to be) and the bank's scene centroids.

    Cached so many runs share them; a scratch file for ``positions`` vectors when the run keeps its
    embeddings.
    """
    t0 = time.perf_counter()
    if isinstance(bank, BankProfile):
        encoder, centroids = profile_model(bank, options.encoder, options.weights, options.centroids, options.device,
                                           options.runtime, options.cache_root, options.metric, options.views,
                                           options.input_size)
    else:
        encoder = bank_encoder(options.encoder, bank.paths, options.weights, options.seed, options.device,
                               options.runtime, str(options.cache_root), options.input_size)
        on_progress("prior_bank", 0, len(bank))
        encoder = bank_model(bank, encoder, options.metric, options.views or 1, options.cache_root, on_progress)
        centroids = bank_centroids(bank, encoder, options.centroids, options.cache_root, on_progress)
    if options.batch_size:
        encoder.batch_size = options.batch_size
    scratch = Scratch(options.cache_root, positions, encoder.dim) if options.needs_vectors else None
    return Stage2Model(bank, encoder, centroids, scratch, {"prior_bank": time.perf_counter() - t0})


@dataclass
class Stage2Result:
    """What stage 2 gives a run.

    Its decisions are in the run's columns; here are the ``clusters`` table, the selection as
    ``applied`` (its candidates, their clusters and quotas, which the evaluation reads), the ``stage2``
    record and the figures the reasons quote.
    """

    clusters: pd.DataFrame
    applied: AppliedSelection
    record: Stage2Record
    context: ReasonContext
    timings: dict[str, float] = field(default_factory=dict)


def run_stage2(plan: RunPlan, options: Stage2Options, columns: TileColumns, stage1: Stage1Result,
               model: Stage2Model, on_progress: ProgressCallback = no_progress) -> Stage2Result:
    """Stage 2 on the tiles stage 1 passed (status ``kept``): keep ``budget.keep_count`` of them.

    Under the paper's rule the candidates are encoded now, in a second pass over their windows
    (under the bank's they were in stage 1's). With the ``bank`` stage-1 rule, stage 1's cut
    (``budget.scene_cut``) is taken here, within each candidate's nearest scene, before selection.
    """
    timings: dict[str, float] = dict(model.timings)
    budget = stage1.budget
    candidates = columns.where(Status.KEPT)
    if columns.cluster[candidates].min(initial=0) < 0:  # not encoded in stage 1's pass: a second pass
        t0 = time.perf_counter()
        encoding = model.encoding(Encode.PASSED)
        spec = PassSpec(None, plan.crs, plan.ground, 1.0, None, None, Encode.PASSED,
                        model.encoder.input_size, model.encoder.cache_key, str(options.cache_root),
                        vectors=encoding.on_vectors is not None)
        run_pass(plan.grid, stage1.scalings, spec, columns, model.encoder, model.centroids, plan.client,
                 on_progress, wanted=candidates, on_vectors=encoding.on_vectors, scheduler=plan.scheduler)
        timings["stage2_encoding"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    used = _clusters_used(columns, candidates, model, options)
    duplicates = _duplicates(columns, candidates, model, options.selection)
    held = held_before(options.extend, plan.crs, plan.ground) if options.extend else None
    applied = apply_selection(columns, candidates, used.labels, budget.keep_count, options.selection,
                              plan.grid.order_keys, scene_cut=budget.scene_cut, duplicates=duplicates, held=held)
    on_progress("selection", 1, 1)
    timings["stage2_selection"] = time.perf_counter() - t0
    record = _record(options, model, budget, candidates, applied)
    if held is not None:
        record.extends, record.extends_kept = str(options.extend), held.tiles
    context = ReasonContext(dedup=options.selection.dedup, cluster_quota=applied.quota.tolist(),
                            cluster_scene=[str(s) for s in used.labels], scene_quota=applied.scene_quota,
                            max_per_cell=options.selection.max_per_cell, period=options.selection.cell_period)
    return Stage2Result(clusters_table(used, applied), applied, record, context, timings)


def _clusters_used(columns: TileColumns, candidates: np.ndarray, model: Stage2Model,
                   options: Stage2Options) -> SceneCentroids:
    """The clusters selection shares the budget among.

    The bank's centroids (the candidates were assigned to them when encoded), or k-means on the
    candidates themselves (``self``), whose assignment then replaces the bank's.
    """
    if options.clustering is not ClusteringMode.SELF:
        return model.centroids
    assert model.scratch is not None
    used, ids, dist = self_clusters(model.scratch.array[candidates], model.centroids, k=len(model.centroids),
                                    seed=options.seed)
    columns.cluster[candidates], columns.distance[candidates] = ids, dist
    if options.evaluate:  # every tile was embedded: each gets its nearest cluster of the run's
        every = columns.where(*Status)
        columns.cluster[every], columns.distance[every] = assign_to_centroids(model.scratch.array[every], used)
    return used


def _duplicates(columns: TileColumns, candidates: np.ndarray, model: Stage2Model, sel: SelectionOptions):
    """The near-duplicate test selection asks for (``dedup``).

    A function of the candidates that passed stage 1 (indexes into ``candidates``), reading their
    vectors cluster by cluster.
    """
    if sel.dedup is None:
        return None
    assert model.scratch is not None
    vectors = model.scratch.array

    def duplicates(inner: np.ndarray) -> np.ndarray:
        positions = candidates[inner]
        ids, dist = columns.cluster[positions], columns.distance[positions]
        order = centroid_first_order(ids, dist, sel.spread, sel.seed)
        assert sel.dedup is not None
        return find_duplicates(_Rows(vectors, positions), ids, order, sel.dedup)

    return duplicates


class _Rows:
    """Rows of the scratch vectors at some positions, indexed like an array of them."""

    def __init__(self, vectors: np.ndarray, positions: np.ndarray):
        self.vectors, self.positions = vectors, positions

    def __len__(self) -> int:
        return int(self.positions.size)

    def __getitem__(self, index) -> np.ndarray:
        return self.vectors[self.positions[index]]


def held_before(run: str, crs: CRS | None, ground: GroundGrid) -> HeldBefore:
    """What the earlier run ``run`` kept (``extend``).

    Its kept tiles per scene, and their ground cells in this run's ground grid (by their centres, in
    this run's CRS) and dates.
    """
    tiles, record = read_run(run)
    if record.stage2 is None or "scene" not in tiles:
        raise InputError(f"{run}: {param('extend')} needs a run that went through stage 2 (its kept tiles' scenes)")
    kept = tiles[tiles["status"] == Status.KEPT]
    scenes = kept["scene"].fillna("").astype(str)
    counts = {str(s): int(n) for s, n in scenes[scenes != ""].value_counts().items()}
    cells = np.full((len(kept), 2), -1, dtype=np.int64)
    if crs is not None and kept.crs is not None and len(kept):
        cells = ground.cells(kept.geometry.to_crs(crs).values)
    dates = (pd.to_datetime(kept["date"]).to_numpy(dtype="datetime64[ns]") if "date" in kept
             else np.full(len(kept), np.datetime64("NaT"), dtype="datetime64[ns]"))
    log.info("extending %s: %s over %s counted", run, counted(len(kept), "kept tile"), counted(len(counts), "scene"))
    return HeldBefore(counts, cells, dates)


def _record(options: Stage2Options, model: Stage2Model, budget: Budget, candidates: np.ndarray,
            applied: AppliedSelection) -> Stage2Record:
    """The run record's ``stage2`` part."""
    bank, encoder, centroids = model.bank, model.encoder, model.centroids
    return Stage2Record(
        encoder=encoder.name, encoder_key=encoder.cache_key, encoder_runtime=encoder.runtime,
        metric=metric_and_views(encoder)[0], views=metric_and_views(encoder)[1], input_size=encoder.input_size,
        onnxruntime=onnxruntime_version(), weights=options.weights, prior_bank=bank.roots,
        prior_bank_fingerprint=bank.fingerprint, prior_bank_profile=isinstance(bank, BankProfile),
        prior_bank_images=len(bank), n_classes=len(bank.classes),
        n_centroids=len(centroids), bank_images_per_class=bank.class_counts(),
        bank_samples=options.centroids.bank_samples, bank_gsd=bank.gsd,
        centroids_per_class={str(c): int(n) for c, n in zip(*np.unique(centroids.labels, return_counts=True))},
        k_per_class=options.centroids.k_per_class, images_per_centroid=options.centroids.images_per_centroid,
        k=options.centroids.k, clustering=options.clustering,
        stage1_rule=budget.rule,
        stage1_candidates=int(candidates.size), stage1_passed=int(applied.pool.size),
        stage1_decides=applied.stage1_decides, quota_by=options.selection.quota_by,
        uniformity=options.selection.uniformity, spread=options.selection.spread, dedup=options.selection.dedup,
        budget=budget.keep_count, kept=applied.kept, cache_dir=str(options.cache_root),
    )


def clusters_table(used: SceneCentroids, applied: AppliedSelection) -> pd.DataFrame:
    """The ``clusters`` layer.

    Each cluster's scene, purity, bank members, candidates, near-duplicates, quota and kept tiles.
    """
    return pd.DataFrame({
        "cluster": np.arange(len(used)),
        "scene": used.labels,
        "purity": used.purity,
        "bank_members": used.members,
        "size": applied.size,
        "duplicates": applied.duplicates,
        "quota": applied.quota,
        "kept": applied.kept_per_cluster,
    })
