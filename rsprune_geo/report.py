"""The visual report of a run: plots as PNG files and one self-contained HTML page."""

from __future__ import annotations

import base64
import html
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyogrio
from rasterio.windows import Window

from .errors import InputError
from .outputs import plot_map
from .pixels import read_rgb
from .schema import STAGE2_POOL, STATUS_COLORS, RunRecord, Status, read_run

log = logging.getLogger(__name__)

FIGSIZE = (8, 4.5)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(fig, ax, title: str, ylabel: str, path) -> Path:
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    _plt().close(fig)
    return Path(path)


def _color(status: str) -> tuple[float, float, float]:
    r, g, b = STATUS_COLORS.get(status, (0, 0, 0))
    return r / 255, g / 255, b / 255


def plot_entropy_histogram(tiles: pd.DataFrame, path: str | os.PathLike, record: RunRecord | None = None) -> Path:
    """Entropy of every tile, stacked by status, with stage 1's cut and absolute threshold."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=100)
    bins = np.linspace(0, 8, 41)
    stacks, labels, colors = [], [], []
    for status in Status:
        part = tiles.loc[tiles["status"] == status, "entropy"]
        if len(part):
            stacks.append(part.to_numpy())
            labels.append(f"{status} ({len(part)})")
            colors.append(_color(status))
    ax.hist(stacks, bins=bins, stacked=True, color=colors, label=labels)
    ranked = tiles[tiles["entropy_rank"] >= 1]
    params = record.parameters if record is not None else {}
    st1 = (record.stage1 if record is not None else None) or {}
    if st1.get("floor_bits") is not None:
        ax.axvline(st1["floor_bits"], color="black", linestyle="--",
                   label=f"prior-bank floor ({st1['floor_bits']:.2f} bits)")
    stage1 = params.get("stage1_keep")
    n_cut = st1.get("stage1_count") if st1.get("rule") == "paper" else None
    if n_cut is None and stage1 and not st1:  # a run written before the stage-1 record
        n_cut = round(stage1 * len(tiles))
    if n_cut and len(ranked):
        n_cut = min(n_cut, len(ranked))
        if n_cut:
            cut = ranked.sort_values("entropy_rank")["entropy"].iloc[n_cut - 1]
            ax.axvline(cut, color="black", linestyle="--", label=f"stage-1 cut ({cut:.2f} bits)")
    if params.get("entropy_min") is not None:
        ax.axvline(params["entropy_min"], color="grey", linestyle=":", label="--entropy-min")
    ax.set_xlabel("Shannon entropy of grey levels (bits)")
    return _finish(fig, ax, "Stage 1: entropy of every tile", "tiles", path)


def plot_cluster_sizes(clusters: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Tiles per cluster before selection (stage-1 survivors) and after (kept)."""
    plt = _plt()
    used = clusters[clusters["size"] > 0].sort_values("size", ascending=False)
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=100)
    x = np.arange(len(used))
    ax.bar(x, used["size"], color=_color(Status.NOT_SELECTED), label="before (stage-1 survivors)")
    ax.bar(x, used["kept"], color=_color(Status.KEPT), label="after (kept)")
    ax.set_xticks(x)
    ax.set_xticklabels([f"{c} {s}" for c, s in zip(used["cluster"], used["scene"])], rotation=90, fontsize=7)
    return _finish(fig, ax, "Stage 2: cluster sizes before and after selection", "tiles", path)


def plot_scene_balance(tiles: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Share of each scene among the stage-1 survivors (before) and the kept tiles (after)."""
    plt = _plt()
    before = tiles[tiles["status"].isin(STAGE2_POOL)]["scene"].value_counts(normalize=True)
    after = tiles[tiles["status"] == Status.KEPT]["scene"].value_counts(normalize=True)
    scenes = before.index.union(after.index)
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=100)
    x = np.arange(len(scenes))
    ax.bar(x - 0.2, before.reindex(scenes, fill_value=0), 0.4, color=_color(Status.NOT_SELECTED), label="before")
    ax.bar(x + 0.2, after.reindex(scenes, fill_value=0), 0.4, color=_color(Status.KEPT), label="after")
    ax.set_xticks(x)
    ax.set_xticklabels(scenes, rotation=45, ha="right", fontsize=8)
    return _finish(fig, ax, "Scene balance before and after selection", "share of tiles", path)


def plot_gallery(tiles: pd.DataFrame, record: RunRecord, path: str | os.PathLike, n: int = 8, size: int = 128,
                 seed: int = 0) -> Path:
    """Thumbnails of kept tiles (top row) and pruned ones (bottom row), read by windows."""
    plt = _plt()
    rng = np.random.default_rng(seed)
    opened: dict[str, Any] = {}  # each source opened (and fingerprinted) once, not once per thumbnail
    groups = {"kept": tiles[tiles["status"] == Status.KEPT], "pruned": tiles[tiles["status"] != Status.KEPT]}
    fig, axes = plt.subplots(2, n, figsize=(n * 1.6, 3.6), dpi=100)
    for row, (label, part) in enumerate(groups.items()):
        pick = part.iloc[np.sort(rng.choice(len(part), min(n, len(part)), replace=False))] if len(part) else part
        for col in range(n):
            ax = axes[row, col]
            ax.axis("off")
            if col >= len(pick):
                continue
            tile = pick.iloc[col]
            if tile["source"] not in opened:
                try:
                    opened[tile["source"]] = record.source(tile["source"])
                except InputError as exc:  # an input gone, or whose URL credentials were not stored
                    log.warning("report gallery: %s", exc)
                    opened[tile["source"]] = None
            reopened = opened[tile["source"]]
            if reopened is None:
                ax.text(0.5, 0.5, "not readable", ha="center", va="center", fontsize=7, transform=ax.transAxes)
                continue
            source, scaling = reopened
            window = Window(int(tile["col_off"]), int(tile["row_off"]), int(tile["width"]), int(tile["height"]))
            ax.imshow(read_rgb(source, [window], size, scaling)[0])
            ax.set_title(str(tile["status"]) if label == "pruned" else str(tile.get("scene", "") or "kept"), fontsize=7)
        axes[row, 0].text(-0.1, 0.5, label, transform=axes[row, 0].transAxes, rotation=90,
                          va="center", ha="right", fontsize=10)
    fig.suptitle("Kept (top) and pruned (bottom) tiles")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def make_plots(run_file: str | os.PathLike, folder: str | os.PathLike) -> dict[str, Path]:
    """All the report's plots as PNG files in ``folder``; returns them by name."""
    tiles, record = read_run(run_file)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    plots = {"entropy": plot_entropy_histogram(tiles, out / "entropy.png", record)}
    layers = dict(pyogrio.list_layers(run_file))
    if "clusters" in layers:
        plots["clusters"] = plot_cluster_sizes(pyogrio.read_dataframe(run_file, layer="clusters"), out / "clusters.png")
        plots["scenes"] = plot_scene_balance(tiles, out / "scenes.png")
    existing = [item["path"] for item in record.inputs if os.path.exists(item["path"])]
    plots["map"] = plot_map(tiles, existing if tiles.crs is not None else [], out / "map.png",
                            title="tiles by status", record=record)
    plots["gallery"] = plot_gallery(tiles, record, out / "gallery.png")
    return plots


def write_report(run_file: str | os.PathLike, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """A self-contained HTML report (images inlined): counts, plots, parameters, timings and,
    when the run has it, the baseline comparison."""
    import tempfile

    out = Path(path)
    if out.exists() and not overwrite:
        raise InputError(f"{out}: the file exists; pass `overwrite` to replace it")
    tiles, record = read_run(run_file)
    layers = dict(pyogrio.list_layers(run_file))
    with tempfile.TemporaryDirectory() as tmp:
        plots = make_plots(run_file, tmp)
        images = {name: base64.b64encode(p.read_bytes()).decode() for name, p in plots.items()}
    counts = tiles["status"].value_counts()
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>rsprune report</title>",
        "<style>body{font-family:sans-serif;max-width:1000px;margin:auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}img{max-width:100%}</style></head><body>",
        f"<h1>rsprune report: {html.escape(Path(run_file).name)}</h1>",
        f"<p>{len(tiles)} tiles from {len(record.inputs)} source(s), CRS {html.escape(str(record.get('crs')))}, "
        f"run {html.escape(str(record.get('created')))}.</p>",
        "<h2>Counts</h2>", pd.DataFrame({"tiles": counts, "share": (counts / len(tiles)).round(3)}).to_html(),
    ]
    if "evaluation" in layers:
        evaluation = pyogrio.read_dataframe(run_file, layer="evaluation").set_index("method")
        parts += ["<h2>RS-Prune against baselines</h2>",
                  "<p>Higher is better, except frechet and junk_kept.</p>",
                  evaluation.to_html(float_format=lambda v: f"{v:.3f}")]
    titles = {"entropy": "Stage 1: entropy", "clusters": "Cluster sizes", "scenes": "Scene balance",
              "map": "Map", "gallery": "Kept and pruned tiles"}
    for name, data in images.items():
        parts.append(f"<h2>{titles[name]}</h2><img alt='{name}' src='data:image/png;base64,{data}'>")
    parts += ["<h2>Parameters</h2>", _dict_table(record.parameters),
              "<h2>Timings (s)</h2>", _dict_table({k: round(v, 3) for k, v in record.timings.items()})]
    if record.stage2:
        parts += ["<h2>Stage 2</h2>", _dict_table(record.stage2)]
    inputs = pd.DataFrame(record.inputs).drop(columns=["scaling"], errors="ignore")
    parts += ["<h2>Inputs</h2>", inputs.to_html(index=False),
              "<h2>Versions</h2>", _dict_table(record.versions), "</body></html>"]
    partial = out.with_name(f".{out.name}.tmp")
    partial.write_text("\n".join(parts), encoding="utf-8")
    os.replace(partial, out)
    return out


def _dict_table(values: dict) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td style='text-align:left'>"
        f"{html.escape(json.dumps(v) if isinstance(v, (list, dict)) else str(v))}</td></tr>"
        for k, v in values.items()
    )
    return f"<table>{rows}</table>"
