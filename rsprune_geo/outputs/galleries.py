"""Galleries of a run: thumbnails of kept and left-out tiles by cluster and scene, as figures and HTML pages."""

from __future__ import annotations

import html
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from rasterio.windows import Window

from ..errors import InputError
from ..progress import ProgressCallback, no_progress
from ..reading.pixels import read_rgb
from ..runs.record import RunRecord
from ..runs.runfile import read_run
from ..runs.vocabulary import Status
from .figures import new_figure, saved

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure
    from rasterio.io import DatasetReader

log = logging.getLogger(__name__)


#: The four groups of a cluster's gallery, in the order shown.
GALLERY_GROUPS = ("kept, nearest", "kept, farthest", "left out, nearest", "left out, farthest")


class Thumbnails:
    """Reads tiles' thumbnails with the run's bands and stretch.

    Reads tiles' thumbnails (uint8 RGB, ``size``², GDAL overviews when the file has them) with the run's
    bands and stretch, each source opened once; a source that cannot be reopened (gone, or a URL whose
    credentials were not stored) gives ``None`` and one warning.
    """

    def __init__(self, record: RunRecord, size: int = 96) -> None:
        self.record = record
        self.size = size
        self._sources: dict[str, DatasetReader | None] = {}

    def _source(self, path: str):
        if path not in self._sources:
            try:
                self._sources[path] = self.record.source(path)
            except InputError as exc:
                log.warning("gallery: %s", exc)
                self._sources[path] = None
        return self._sources[path]

    def read(self, tiles: pd.DataFrame) -> list[np.ndarray | None]:
        """One thumbnail per row of ``tiles`` (in order), ``None`` where unreadable."""
        out: list[np.ndarray | None] = [None] * len(tiles)
        for path, part in tiles.reset_index(drop=True).groupby("source", sort=False):
            opened = self._source(str(path))
            if opened is None:
                continue
            source, scaling = opened
            windows = [Window(int(t.col_off), int(t.row_off), int(t.width), int(t.height)) for t in part.itertuples()]
            for k, image in zip(part.index, read_rgb(source, windows, self.size, scaling)):
                out[k] = image
        return out


def _has_clusters(tiles: pd.DataFrame) -> bool:
    return "cluster" in tiles and bool((tiles["cluster"] >= 0).any())


def gallery_picks(tiles: pd.DataFrame, cluster: int, n: int = 6) -> dict[str, pd.DataFrame]:
    """A cluster's gallery.

    Its kept tiles and those left out (not selected or duplicate), each the ``n`` nearest to the
    centroid and the ``n`` farthest (never the same tile twice).
    """
    members = tiles[tiles["cluster"] == cluster]
    picks: dict[str, pd.DataFrame] = {}
    for label, statuses in (("kept", [Status.KEPT]), ("left out", [Status.NOT_SELECTED, Status.DUPLICATE])):
        part = members[members["status"].isin(statuses)].sort_values(["centroid_distance", "tile_id"])
        nearest = part.head(n)
        picks[f"{label}, nearest"] = nearest
        picks[f"{label}, farthest"] = part.iloc[len(nearest):].tail(n)
    return picks


def sampled_picks(tiles: pd.DataFrame, n: int = 12, seed: int = 0) -> dict[str, pd.DataFrame]:
    """For a run without clusters: up to ``n`` tiles of each status, drawn with ``seed``."""
    picks = {}
    for status in Status:
        part = tiles[tiles["status"] == status]
        if len(part):
            picks[str(status)] = part.sample(min(n, len(part)), random_state=seed).sort_values("tile_id")
    return picks


def _caption(tile: pd.Series) -> str:
    scene = tile.get("scene")
    scene = "" if scene is None or pd.isna(scene) else f"{scene} · "
    distance = tile.get("centroid_distance")
    distance = "" if distance is None or pd.isna(distance) or distance < 0 else f" · d {distance:.3f}"
    return f"{tile['tile_id']}\n{scene.removesuffix(' · ')}\n{tile['entropy']:.2f} bits{distance}".replace("\n\n", "\n")


def _plot_rows(rows: list[tuple[str, pd.DataFrame]], record: RunRecord, n: int, size: int, title: str,
               path: str | os.PathLike | None) -> Figure:
    images = Thumbnails(record, size)
    columns = max([n] + [len(part) for _, part in rows])
    cell = size / 100 + 0.3  # inches per thumbnail at 100 dpi: drawn near its own pixel size
    fig = new_figure((cell * columns + 1.0, (cell + 0.45) * max(1, len(rows)) + 0.5), dpi=100)
    axes = np.atleast_2d(fig.subplots(max(1, len(rows)), columns, squeeze=False))
    for r, (label, part) in enumerate(rows):
        thumbs = images.read(part)
        for c in range(columns):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c >= len(part):
                if c == 0:
                    ax.text(0.5, 0.5, "none", ha="center", va="center", fontsize=8, color="grey",
                            transform=ax.transAxes)
                continue
            tile = part.iloc[c]
            if thumbs[c] is None:
                ax.text(0.5, 0.5, "not readable", ha="center", va="center", fontsize=7, transform=ax.transAxes)
            else:
                ax.imshow(thumbs[c])
            ax.set_xlabel(_caption(tile), fontsize=5.5)
        axes[r, 0].set_ylabel(label, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return saved(fig, path)


def plot_cluster_gallery(tiles: pd.DataFrame, record: RunRecord, cluster: int, n: int = 6, size: int = 96,
                         path: str | os.PathLike | None = None) -> Figure:
    """One cluster: kept tiles and those left out.

    Nearest and farthest from its centroid (rows), captioned with tile id, scene and entropy.
    """
    members = tiles[tiles["cluster"] == cluster]
    if members.empty:
        raise InputError(f"cluster {cluster}: no tile is assigned to it")
    scene = members["scene"].iloc[0]
    rows = [(label, part) for label, part in gallery_picks(tiles, cluster, n).items()]
    kept = int((members["status"] == Status.KEPT).sum())
    return _plot_rows(rows, record, n, size, f"cluster {cluster} ({scene}): {len(members)} tiles, {kept} kept", path)


def plot_scene_gallery(tiles: pd.DataFrame, record: RunRecord, scene: str, n: int = 4, size: int = 96,
                       path: str | os.PathLike | None = None) -> Figure:
    """Every cluster of one scene, two rows each: kept and left out.

    Each row shows the ``n`` nearest tiles to the centroid, then the ``n`` farthest.

    Args:
        tiles: the run's tiles.
        record: the run's record (its bands and stretch).
        scene: the scene to show.
        n: tiles at each end of a row.
        size: the thumbnails' side in pixels.
        path: write the figure there as PNG when given.

    Returns:
        The figure.
    """
    members = tiles[(tiles["scene"] == scene) & (tiles["cluster"] >= 0)]
    if members.empty:
        raise InputError(f"scene {scene!r}: no tile is assigned to it")
    rows = []
    for cluster in sorted(members["cluster"].unique()):
        picks = gallery_picks(tiles, int(cluster), n)
        rows.append((f"c{cluster} kept", pd.concat([picks["kept, nearest"], picks["kept, farthest"]])))
        rows.append((f"c{cluster} left out", pd.concat([picks["left out, nearest"], picks["left out, farthest"]])))
    kept = int((members["status"] == Status.KEPT).sum())
    return _plot_rows(rows, record, 2 * n, size, f"scene {scene}: {len(members)} tiles, {kept} kept "
                      "(each row: nearest to the centroid, then farthest)", path)


def plot_gallery(tiles: pd.DataFrame, record: RunRecord, n: int = 8, size: int = 128, seed: int = 0,
                 path: str | os.PathLike | None = None) -> Figure:
    """Thumbnails of kept tiles (top row) and pruned ones (bottom row).

    Args:
        tiles: the run's tiles.
        record: the run's record (its bands and stretch).
        n: tiles a row.
        size: the thumbnails' side in pixels.
        seed: the random draw of tiles.
        path: write the figure there as PNG when given.

    Returns:
        The figure.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for label, part in (("kept", tiles[tiles["status"] == Status.KEPT]),
                        ("pruned", tiles[tiles["status"] != Status.KEPT])):
        pick = part.iloc[np.sort(rng.choice(len(part), min(n, len(part)), replace=False))] if len(part) else part
        rows.append((label, pick))
    return _plot_rows(rows, record, n, size, "Kept (top) and pruned (bottom) tiles", path)


@dataclass
class GalleryPage:
    """One written gallery page: its title, file and what it shows."""

    title: str
    path: Path
    clusters: int
    tiles: int
    kept: int


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "scene"


def write_galleries(run_file: str | os.PathLike, folder: str | os.PathLike, n: int = 6, size: int = 96,
                    on_progress: ProgressCallback = no_progress) -> list[GalleryPage]:
    """HTML gallery pages of a run in ``folder``.

    One page per scene (each of its clusters: kept and left-out tiles, nearest and farthest from the
    centroid), or, for a run without stage 2, one page of tiles sampled per status. Thumbnails are JPEG
    files loaded lazily by the browser, so a page stays light whatever the run's size (at most 4·``n``
    tiles per cluster).
    """
    tiles, record = read_run(run_file)
    out = Path(folder)
    (out / "thumbs").mkdir(parents=True, exist_ok=True)
    sections: dict[str, list[tuple[str, dict[str, pd.DataFrame]]]] = {}
    if _has_clusters(tiles):
        clustered = tiles[tiles["cluster"] >= 0]
        for scene, part in clustered.groupby("scene", sort=True):
            sections[str(scene)] = [
                (_cluster_heading(clustered, int(c)), gallery_picks(clustered, int(c), n))
                for c in sorted(part["cluster"].unique())
            ]
    else:
        sections["all tiles"] = [("tiles sampled per status", sampled_picks(tiles, 2 * n, seed=record.seed or 0))]
    wanted = pd.concat([p for blocks in sections.values() for _, picks in blocks for p in picks.values()])
    wanted = wanted.drop_duplicates("tile_id")
    _write_thumbnails(wanted, record, out / "thumbs", size, on_progress)
    pages = []
    for title, blocks in sections.items():
        page = out / f"{_slug(title)}.html"
        members = tiles[tiles["scene"] == title] if title in set(tiles.get("scene", [])) else tiles
        body = [f"<h1>{html.escape(title)}</h1>",
                f"<p>{html.escape(Path(run_file).name)}: "
                f"{len(members)} tiles, {int((members['status'] == Status.KEPT).sum())} kept. Captions: tile id, "
                "scene, entropy (bits), cosine distance to the centroid.</p>"]
        for heading, picks in blocks:
            body.append(f"<h2>{html.escape(heading)}</h2>")
            for label, part in picks.items():
                body.append(f"<div class='row'><div class='label'>{html.escape(label)} ({len(part)})</div>"
                            + "".join(_figure_html(t) for _, t in part.iterrows()) + "</div>")
        page.write_text(_page(title, "".join(body)), encoding="utf-8")
        pages.append(GalleryPage(title, page, len(blocks), len(members), int((members["status"] == Status.KEPT).sum())))
    return pages


def _cluster_heading(tiles: pd.DataFrame, cluster: int) -> str:
    members = tiles[tiles["cluster"] == cluster]
    kept = int((members["status"] == Status.KEPT).sum())
    return f"cluster {cluster} ({members['scene'].iloc[0]}): {len(members)} tiles, {kept} kept"


def _write_thumbnails(tiles: pd.DataFrame, record: RunRecord, folder: Path, size: int,
                      on_progress: ProgressCallback) -> None:
    from PIL import Image

    reader = Thumbnails(record, size)
    batch = 64
    for start in range(0, len(tiles), batch):
        part = tiles.iloc[start:start + batch]
        for tile_id, image in zip(part["tile_id"], reader.read(part)):
            if image is not None:
                Image.fromarray(image).save(folder / f"{_slug(str(tile_id))}.jpg", quality=85)
        on_progress("gallery", min(start + batch, len(tiles)), len(tiles))


def _figure_html(tile: pd.Series) -> str:
    name = _slug(str(tile["tile_id"]))
    scene = tile.get("scene")
    scene = "" if scene is None or pd.isna(scene) else f"{html.escape(str(scene))} · "
    distance = tile.get("centroid_distance")
    distance = "" if distance is None or pd.isna(distance) or distance < 0 else f" · d {distance:.3f}"
    return (f"<figure title='{html.escape(str(tile['status']))}'><img loading='lazy' src='thumbs/{name}.jpg' "
            f"alt='not readable'><figcaption>{html.escape(str(tile['tile_id']))}<br>{scene}"
            f"{tile['entropy']:.2f} bits{distance}</figcaption></figure>")


def _page(title: str, body: str) -> str:
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>rsprune gallery: {html.escape(title)}</title><style>"
            "body{font-family:sans-serif;margin:1em}.row{display:flex;flex-wrap:wrap;align-items:flex-start}"
            ".label{width:9em;font-size:12px;padding-top:2em}figure{margin:2px;width:110px}"
            "img{width:96px;height:96px;background:#eee}figcaption{font-size:9px;word-break:break-all}"
            f"</style></head><body>{body}</body></html>")


def galleries_folder(report: str | os.PathLike) -> Path:
    """Where :func:`write_report` puts a report's gallery pages: ``<name>_galleries`` beside it."""
    report = Path(report)
    return report.with_name(f"{report.stem}_galleries")
