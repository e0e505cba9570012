"""The visual report of a run: plots (matplotlib Figures), tile galleries and one HTML page.

Every plot function returns a :class:`matplotlib.figure.Figure` and writes a file only when
given a ``path``; the galleries show, per scene and cluster, the kept tiles and those left out,
nearest and farthest from the centroid, as figures for notebooks and as HTML pages with lazily
loaded thumbnails for the report.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..choices import Stage1Rule
from ..errors import OutputError, counted, require_extra
from ..progress import ProgressCallback, no_progress
from ..runs.inputs import INPUTS_FILE, INPUTS_LAYER, is_table, listed_inputs
from ..runs.record import RunRecord
from ..runs.runfile import read_layer, read_run, run_layers
from ..runs.vocabulary import STAGE2_POOL, STATUS_COLORS, Status
from ..stages.budget import budget_count, tiles_with_data
from .figures import new_figure, saved
from .galleries import (
    galleries_folder,
    plot_gallery,
    write_galleries,
)
from .maps import plot_map

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

def _finish(fig: Figure, ax, title: str, ylabel: str, path) -> Figure:
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return saved(fig, path)


def _color(status: str) -> tuple[float, float, float]:
    r, g, b = STATUS_COLORS.get(status, (0, 0, 0))
    return r / 255, g / 255, b / 255


def plot_entropy_histogram(tiles: pd.DataFrame, record: RunRecord | None = None,
                           path: str | os.PathLike | None = None) -> Figure:
    """Entropy of every tile, stacked by status, with stage 1's cut and threshold.

    Args:
        tiles: the run's tiles.
        record: the run's record, for its thresholds.
        path: write the figure there as PNG when given.

    Returns:
        The figure.
    """
    fig = new_figure()
    ax = fig.subplots()
    bins = np.linspace(0, 8, 41).tolist()
    stacks, labels, colors = [], [], []
    for status in Status:
        part = tiles.loc[tiles["status"] == status, "entropy"]
        if len(part):
            stacks.append(part.to_numpy())
            labels.append(f"{status} ({len(part)})")
            colors.append(_color(status))
    ax.hist(stacks, bins=bins, stacked=True, color=colors, label=labels)
    ranked = tiles[tiles["entropy_rank"] >= 1]
    params = record.parameters.to_dict() if record is not None else {}
    st1 = record.stage1 if record is not None else None
    if st1 is not None and st1.floor_bits is not None:
        ax.axvline(st1.floor_bits, color="black", linestyle="--", label=f"prior-bank floor ({st1.floor_bits:.2f} bits)")
    stage1 = params.get("stage1_keep")
    n_cut = st1.stage1_count if st1 is not None and st1.rule == Stage1Rule.PAPER else None
    if n_cut is None and stage1 and st1 is None:  # a run written before the stage-1 record
        n_cut = budget_count(stage1, tiles_with_data(tiles["status"].to_numpy()))
    if n_cut and len(ranked):
        n_cut = min(n_cut, len(ranked))
        if n_cut:
            cut = ranked.sort_values("entropy_rank")["entropy"].iloc[n_cut - 1]
            ax.axvline(cut, color="black", linestyle="--", label=f"stage-1 cut ({cut:.2f} bits)")
    if params.get("entropy_min") is not None:
        ax.axvline(params["entropy_min"], color="grey", linestyle=":", label="--entropy-min")
    ax.set_xlabel("Shannon entropy of grey levels (bits)")
    return _finish(fig, ax, "Stage 1: entropy of every tile", "tiles", path)


def plot_cluster_sizes(clusters: pd.DataFrame, path: str | os.PathLike | None = None) -> Figure:
    """Tiles a cluster before selection (stage-1 survivors) and after (kept).

    Args:
        clusters: the run's ``clusters`` table.
        path: write the figure there as PNG when given.

    Returns:
        The figure.
    """
    used = clusters[clusters["size"] > 0].sort_values("size", ascending=False)
    fig = new_figure()
    ax = fig.subplots()
    x = np.arange(len(used))
    ax.bar(x, used["size"], color=_color(Status.NOT_SELECTED), label="before (stage-1 survivors)")
    ax.bar(x, used["kept"], color=_color(Status.KEPT), label="after (kept)")
    ax.set_xticks(x)
    ax.set_xticklabels([f"{c} {s}" for c, s in zip(used["cluster"], used["scene"])], rotation=90, fontsize=7)
    return _finish(fig, ax, "Stage 2: cluster sizes before and after selection", "tiles", path)


def plot_scene_balance(tiles: pd.DataFrame, path: str | os.PathLike | None = None) -> Figure:
    """Share of each scene before selection (stage-1 survivors) and after (kept).

    Args:
        tiles: the run's tiles.
        path: write the figure there as PNG when given.

    Returns:
        The figure.
    """
    before = tiles[tiles["status"].isin(STAGE2_POOL)]["scene"].value_counts(normalize=True)
    after = tiles[tiles["status"] == Status.KEPT]["scene"].value_counts(normalize=True)
    scenes = before.index.union(after.index)
    fig = new_figure()
    ax = fig.subplots()
    x = np.arange(len(scenes))
    ax.bar(x - 0.2, before.reindex(scenes, fill_value=0), 0.4, color=_color(Status.NOT_SELECTED), label="before")
    ax.bar(x + 0.2, after.reindex(scenes, fill_value=0), 0.4, color=_color(Status.KEPT), label="after")
    ax.set_xticks(x)
    ax.set_xticklabels(scenes, rotation=45, ha="right", fontsize=8)
    return _finish(fig, ax, "Scene balance before and after selection", "share of tiles", path)


def plot_dates(tiles: pd.DataFrame, path: str | os.PathLike | None = None) -> Figure:
    """Tiles per acquisition date: the tiles with data (before) and the kept ones (after)."""
    dated = tiles[tiles["date"].notna() & (tiles["status"] != Status.NODATA)]
    days = pd.to_datetime(dated["date"]).dt.strftime("%Y-%m-%d")
    before = days.value_counts().sort_index()
    after = days[dated["status"] == Status.KEPT].value_counts().reindex(before.index, fill_value=0)
    fig = new_figure()
    ax = fig.subplots()
    x = np.arange(len(before))
    ax.bar(x - 0.2, before, 0.4, color=_color(Status.NOT_SELECTED), label="tiles with data")
    ax.bar(x + 0.2, after, 0.4, color=_color(Status.KEPT), label="kept")
    ax.set_xticks(x)
    ax.set_xticklabels(before.index, rotation=45, ha="right", fontsize=8)
    return _finish(fig, ax, "Tiles per acquisition date", "tiles", path)


def plot_cells(tiles: pd.DataFrame, path: str | os.PathLike | None = None) -> Figure:
    """Ground cells by how many tiles they hold.

    All tiles with data, and the kept ones (a cell kept five times shows as one cell at 5).
    """
    on_ground = tiles[(tiles["ground_cell"].astype(str) != "") & (tiles["status"] != Status.NODATA)]
    before = on_ground["ground_cell"].value_counts().value_counts().sort_index()
    after = on_ground.loc[on_ground["status"] == Status.KEPT, "ground_cell"].value_counts().value_counts()
    counts = before.index.union(after.index)
    fig = new_figure()
    ax = fig.subplots()
    x = np.arange(len(counts))
    ax.bar(x - 0.2, before.reindex(counts, fill_value=0), 0.4, color=_color(Status.NOT_SELECTED),
           label="tiles with data")
    ax.bar(x + 0.2, after.reindex(counts, fill_value=0), 0.4, color=_color(Status.KEPT), label="kept")
    ax.set_xticks(x)
    ax.set_xticklabels([str(c) for c in counts])
    ax.set_xlabel("tiles in the same ground cell")
    return _finish(fig, ax, "The same ground: cells by number of tiles", "ground cells", path)


def has_dates(tiles: pd.DataFrame) -> bool:
    """Whether some tile has an acquisition date."""
    return "date" in tiles and bool(tiles["date"].notna().any())


def has_shared_ground(tiles: pd.DataFrame) -> bool:
    """Whether some ground cell holds more than one tile (overlapping rasters)."""
    if "ground_cell" not in tiles:
        return False
    cells = tiles["ground_cell"].astype(str)
    return bool(cells[cells != ""].duplicated().any())


# ---- galleries -------------------------------------------------------------------------------


































def make_plots(run_file: str | os.PathLike, folder: str | os.PathLike) -> dict[str, Path]:
    """All the report's plots as PNG files in ``folder``; returns their paths by name."""
    tiles, record = read_run(run_file)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    plot_entropy_histogram(tiles, record, path=out / "entropy.png")
    plots = {"entropy": out / "entropy.png"}
    if "clusters" in run_layers(run_file):
        plot_cluster_sizes(read_layer(run_file, "clusters"), path=out / "clusters.png")
        plot_scene_balance(tiles, path=out / "scenes.png")
        plots.update(clusters=out / "clusters.png", scenes=out / "scenes.png")
    if has_dates(tiles):
        plot_dates(tiles, path=out / "dates.png")
        plots["dates"] = out / "dates.png"
    if has_shared_ground(tiles):
        plot_cells(tiles, path=out / "cells.png")
        plots["cells"] = out / "cells.png"
    # the rasters under the footprints, where they are few enough to draw (not a folder of chips as a table)
    drawn = tiles.crs is not None and not is_table(record.inputs)
    existing = [item["path"] for item in record.inputs if os.path.exists(item["path"])] if drawn else []
    plot_map(tiles, existing, out / "map.png", title="tiles by status", record=record)
    plot_gallery(tiles, record, path=out / "gallery.png")
    plots.update(map=out / "map.png", gallery=out / "gallery.png")
    return plots




#: The report's head: wide tables scroll within themselves, not the page.
REPORT_HEAD = (
    "<!DOCTYPE html><html><head><meta charset='utf-8'><title>rsprune report</title><style>"
    "body{font-family:sans-serif;max-width:1000px;margin:auto}"
    "table{border-collapse:collapse;display:block;max-width:100%;overflow-x:auto}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}img{max-width:100%}</style></head><body>"
)


def _report_path(path: str | os.PathLike, overwrite: bool) -> Path:
    """Where a report goes.

    Refused up front when it exists (unless ``overwrite``) or when its folder is a file.
    """
    out = Path(path)
    if out.exists() and not overwrite:
        raise OutputError(f"{out}: the file exists; pass `overwrite` to replace it")
    if out.parent.exists() and not out.parent.is_dir():
        raise OutputError(f"{out}: {out.parent} is a file, not a folder")
    return out


def write_report(run_file: str | os.PathLike, path: str | os.PathLike, overwrite: bool = False,
                 galleries: bool = True, gallery_size: int = 6,
                 on_progress: ProgressCallback = no_progress) -> Path:
    """An HTML report.

    Counts, plots (inlined), parameters, timings, the baseline comparison when the run has it and, with
    ``galleries``, a table linking one gallery page per scene (written to :func:`galleries_folder`;
    ``gallery_size`` tiles per group). Written atomically; its folder is made when missing (once the run
    is read), as an export's is. Wide tables scroll within themselves, not the page.
    """
    require_extra("matplotlib", "plots", "the report")
    out = _report_path(path, overwrite)
    tiles, record = read_run(run_file)
    layers = run_layers(run_file)
    out.parent.mkdir(parents=True, exist_ok=True)  # as `export --to` makes its folder; once the run is read
    on_progress("report", 0, 1)
    with tempfile.TemporaryDirectory() as tmp:
        plots = make_plots(run_file, tmp)
        images = {name: base64.b64encode(p.read_bytes()).decode() for name, p in plots.items()}
    on_progress("report", 1, 1)
    counts = tiles["status"].value_counts()
    parts = [
        REPORT_HEAD,
        f"<h1>rsprune report: {html.escape(Path(run_file).name)}</h1>",
        f"<p>{counted(len(tiles), 'tile')} from {counted(len(record.inputs), 'source')}, "
        f"CRS {html.escape(str(record.crs))}, "
        f"run {html.escape(str(record.created))}.</p>",
        "<h2>Counts</h2>", pd.DataFrame({"tiles": counts, "share": (counts / len(tiles)).round(3)}).to_html(),
    ]
    if "evaluation" in layers:
        evaluation = read_layer(run_file, "evaluation").set_index("method")
        parts += ["<h2>RS-Prune against baselines</h2>",
                  "<p>Higher is better, except frechet and junk_kept.</p>",
                  evaluation.to_html(float_format=lambda v: f"{v:.3f}")]
    titles = {"entropy": "Stage 1: entropy", "clusters": "Cluster sizes", "scenes": "Scene balance",
              "dates": "Acquisition dates", "cells": "The same ground", "map": "Map",
              "gallery": "Kept and pruned tiles (a random draw)"}
    for name, data in images.items():
        parts.append(f"<h2>{titles[name]}</h2><img alt='{name}' src='data:image/png;base64,{data}'>")
    staged: Path | None = None
    if galleries:
        final = galleries_folder(out)
        staged = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=out.parent))
        pages = write_galleries(run_file, staged, gallery_size, on_progress=on_progress)
        link = html.escape(final.name)
        rows = "".join(f"<tr><td style='text-align:left'><a href='{link}/{html.escape(p.path.name)}'>"
                       f"{html.escape(p.title)}</a></td><td>{p.clusters}</td><td>{p.tiles}</td><td>{p.kept}</td></tr>"
                       for p in pages)
        parts += ["<h2>Galleries</h2>",
                  "<p>One page per scene: for each cluster, the kept tiles and those left out, nearest and "
                  "farthest from the centroid.</p>",
                  f"<table><tr><th>page</th><th>clusters</th><th>tiles</th><th>kept</th></tr>{rows}</table>"]
    parts += ["<h2>Parameters</h2>", _dict_table(record.parameters.to_dict()),
              "<h2>Timings (s)</h2>", _dict_table({k: round(v, 3) for k, v in record.timings.items()})]
    if record.stage2:
        parts += ["<h2>Stage 2</h2>", _dict_table(record.stage2.to_dict())]
    listed = listed_inputs(record.inputs)
    inputs = pd.DataFrame(list(listed)).drop(columns=["scaling"], errors="ignore")
    parts += ["<h2>Inputs</h2>", inputs.to_html(index=False)]
    if len(listed) < len(record.inputs):  # a folder of chips: the rest in the run's table of inputs
        parts.append(f"<p>… and {len(record.inputs) - len(listed):,} more (the run's <code>{INPUTS_FILE}</code>, or "
                     f"the <code>{INPUTS_LAYER}</code> layer of its GeoPackage).</p>")
    parts += ["<h2>Versions</h2>", _dict_table(record.versions), "</body></html>"]
    partial = out.with_name(f".{out.name}.tmp")
    try:
        partial.write_text("\n".join(parts), encoding="utf-8")
        if staged is not None:
            final = galleries_folder(out)
            if final.exists():
                shutil.rmtree(final)
            os.replace(staged, final)
            staged = None
        os.replace(partial, out)
    finally:
        if staged is not None:
            shutil.rmtree(staged, ignore_errors=True)
        if partial.exists():
            partial.unlink()
    return out


def _dict_table(values: dict) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td style='text-align:left'>"
        f"{html.escape(json.dumps(v) if isinstance(v, (list, dict)) else str(v))}</td></tr>"
        for k, v in values.items()
    )
    return f"<table>{rows}</table>"
