"""How the plugin reaches rsprune_geo: in-process when it imports, else the rsprune CLI.

No pipeline logic lives here: both backends call the same API (``rsprune_geo.run`` or
``rsprune run``). The CLI is started with an argument list, never a shell, and reports
progress as JSON lines on stderr (``rsprune run --progress-json``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field

from . import options

SETTINGS_KEY = "rsprune/cli"


class BackendError(Exception):
    """The backend failed; the message is for the user."""


class Canceled(Exception):
    """The user canceled the run."""


@dataclass
class PruneParams:
    """What the dialog and the Processing algorithm collect; defaults from ``options.json``."""

    rasters: list[str]
    output: str
    tile_size: int = options.form_default("tile_size")
    stride: int | None = options.form_default("stride")  # None: the tile size
    edge: str = options.form_default("edge")  # drop partial edge tiles, or pad them
    keep: float | None = options.form_default("keep")
    stage1_keep: float | None = options.form_default("stage1_keep")  # None: rsprune's default for the rule
    entropy_min: float | None = options.form_default("entropy_min")
    encoder: str = options.form_default("encoder")
    max_per_cell: int | None = options.form_default("max_per_cell")  # kept tiles per ground cell (0: no cap)
    bands: str | None = options.form_default("bands")  # "4,3,2"; None: the colour bands
    max_nodata: float = options.form_default("max_nodata")
    stage1: str | None = options.form_default("stage1")  # None: bank with a prior bank, else paper
    aoi: str | None = None  # a vector file; only tiles touching it
    prior_banks: list[str] = field(default_factory=list)
    overwrite: bool = True
    stac: str | None = None  # a STAC catalogue, item collection or stac-geoparquet file, or its http(s) URL
    asset: str | None = None  # the asset each STAC item gives (None: visual, else red/green/blue)

    def values(self) -> dict:
        """The run parameters by their names in rsprune (``None``: rsprune's own default)."""
        return {"tile_size": self.tile_size, "stride": self.stride or None, "edge": self.edge, "keep": self.keep,
                "stage1_keep": self.stage1_keep, "entropy_min": self.entropy_min, "encoder": self.encoder,
                "max_per_cell": self.max_per_cell, "bands": self.bands or None, "max_nodata": self.max_nodata,
                "stage1": self.stage1 or None, "aoi": self.aoi or None, "prior_bank": list(self.prior_banks),
                "asset": (self.asset or None) if self.stac else None}

    def inputs(self) -> list[str]:
        """What ``rsprune run`` is given: the rasters, then the STAC catalogue."""
        return [*self.rasters, *([self.stac] if self.stac else [])]

    def validate(self) -> None:
        if not self.rasters and not self.stac:
            raise BackendError("choose at least one raster layer backed by a file, or a STAC catalogue")
        if self.stac and not self.stac.startswith(("http://", "https://")) and not os.path.isfile(self.stac):
            raise BackendError(f"{self.stac}: no such STAC catalogue (a Catalog or Collection JSON, an "
                               "ItemCollection, a stac-geoparquet file, or an http(s) URL)")
        for path in self.rasters:
            if not os.path.isfile(path) and not path.startswith("/vsi"):
                raise BackendError(f"{path}: not a file on disk (save the layer to a GeoTIFF first)")
        if not self.output.lower().endswith(".gpkg"):
            raise BackendError("the output must be a GeoPackage (.gpkg)")
        if self.aoi and not os.path.isfile(self.aoi):
            raise BackendError(f"{self.aoi}: the area of interest is not a file")
        for name, value in self.values().items():
            if name not in ("prior_bank", "encoder", "bands", "aoi", "edge", "asset"):
                problem = options.check(name, value)
                if problem:
                    raise BackendError(problem)
        for bank in self.prior_banks:
            if bank not in ("default", "none") and not os.path.exists(bank):
                raise BackendError(f"{bank}: no such prior bank folder or profile")

    def cli_arguments(self) -> list[str]:
        """``rsprune run`` arguments, one list item per argument (paths stay single items)."""
        args = ["run", *self.inputs(), "-o", self.output, "--progress-json"]
        for name, value in self.values().items():
            flag = options.option(name)["flag"]
            for item in (value if isinstance(value, list) else [value]):
                if item is not None:
                    args += [flag, repr(float(item)) if isinstance(item, float) else str(item)]
        if self.overwrite:
            args.append("--overwrite")
        return args


def grid_offsets(length: int, tile_size: int, stride: int, edge: str = "drop") -> list[int]:
    """Pixel offsets of the tiles along one axis.

    As rsprune_geo's tiling lays them out (``drop``: whole tiles only; ``pad``: also the partial tiles
    past the edge that add pixels).
    """
    if edge == "pad":
        return [o for o in range(0, length, stride) if o == 0 or o - stride + tile_size < length]
    return list(range(0, length - tile_size + 1, stride))


def covered_pixels(length: int, tile_size: int, stride: int, edge: str = "drop") -> int:
    """How many pixels of an axis of ``length`` the tiles cover.

    Gaps when the stride exceeds the tile size; overlaps counted once.
    """
    offsets = grid_offsets(length, tile_size, stride, edge)
    ends = offsets[1:] + [length]
    return sum(min(tile_size, end - start, length - start) for start, end in zip(offsets, ends))


def grid_coverage(width: int, height: int, tile_size: int, stride: int | None = None, edge: str = "drop") -> float:
    """Share of a ``width``×``height`` raster that the tile grid covers."""
    stride = stride or tile_size
    covered = covered_pixels(width, tile_size, stride, edge) * covered_pixels(height, tile_size, stride, edge)
    return covered / max(width * height, 1)


FEW_TILES = 20  # fewer tiles with data than this: the dialog suggests a smaller tile size


def tiles_with_data(mask: bytes, mask_width: int, mask_height: int, width: int, height: int, tile_size: int,
                    stride: int | None = None, edge: str = "drop", max_nodata: float = 0.25) -> tuple[int, int]:
    """``(tiles, tiles with data)`` of a ``width``×``height`` raster's grid.

    Judged on a decimated validity mask (one byte a sample, non-zero: data) as a nodata fraction up to
    ``max_nodata``, like rsprune's stage 1 (an estimate: the mask is sampled).
    """
    stride = stride or tile_size
    rows = grid_offsets(height, tile_size, stride, edge)
    cols = grid_offsets(width, tile_size, stride, edge)
    sy, sx = mask_height / max(height, 1), mask_width / max(width, 1)

    def span(offset: int, scale: float, samples: int) -> range:
        start = min(int(offset * scale), samples - 1)
        return range(start, max(start + 1, min(int((offset + tile_size) * scale), samples)))

    with_data = 0
    for row in rows:
        rows_in = span(row, sy, mask_height)
        for col in cols:
            cols_in = span(col, sx, mask_width)
            valid = sum(1 for y in rows_in for x in cols_in if mask[y * mask_width + x])
            with_data += valid >= (1 - max_nodata) * len(rows_in) * len(cols_in)
    return len(rows) * len(cols), with_data


def kept_count(tiles_with_data: int, keep: float) -> int:
    """Tiles a run keeps of ``tiles_with_data``: the fraction rounded, never none while tiles have data.

    The plugin runs without the package; this mirrors ``rsprune_geo.stages.budget.budget_count``, and a
    test holds the two equal.
    """
    rounded = round(keep * tiles_with_data)
    return max(rounded, 1) if keep > 0 and tiles_with_data else rounded


def suggested_tile_size(width: int, height: int, tile_size: int, data_share: float,
                        few: int = FEW_TILES) -> int | None:
    """A smaller tile size (halving, down to 32 px) whose grid gives at least ``few`` tiles with data.

    At the share of tiles with data seen; ``None`` when the current size gives enough or none does.
    """
    def enough(size: int) -> bool:
        return len(grid_offsets(width, size, size)) * len(grid_offsets(height, size, size)) * data_share >= few

    if enough(tile_size):
        return None
    size = tile_size // 2
    while size >= 32:
        if enough(size):
            return size
        size //= 2
    return None


def budget_text(tiles: int, with_data: int, keep: float, suggestion: int | None) -> str:
    """What the dialog says of a grid before OK.

    Tiles, tiles with data, tiles kept, and a tile size to try when the grid yields only a handful.
    """
    kept = kept_count(with_data, keep)
    text = f"{counted(tiles, 'tile')}, about {with_data} with data; keeping {keep:g} of them keeps {kept}"
    if with_data and round(keep * with_data) == 0:
        text += " (the fraction rounds to none: rsprune keeps one)"
    if suggestion:
        text += f". Only a handful: tile size {suggestion} gives more"
    return text


def counted(n: int, word: str, plural: str | None = None) -> str:
    """``n`` and ``word`` with the plural ``n`` takes (``1 tile``, ``2 tiles``)."""
    return f"{n} {word if n == 1 else plural or word + 's'}"


def run_message(event: dict) -> str:
    """What the message bar says of a finished run: tiles kept and pruned, and where it went."""
    counts = event.get("counts") or {}
    kept = int(counts.get(options.KEPT, 0))
    pruned = sum(int(n) for n in counts.values()) - kept
    return f"{counted(kept, 'tile')} kept, {pruned} pruned; written to {event.get('output')}"


def in_process_available() -> bool:
    """True when rsprune_geo (and what it needs) imports in this Python (QGIS's)."""
    if importlib.util.find_spec("rsprune_geo") is None:
        return False
    try:
        import rsprune_geo  # noqa: F401
    except Exception:  # a package without its dependencies, or a numpy/GDAL clash
        return False
    return True


IN_PROCESS_KEY = "rsprune/in_process"


def in_process_allowed() -> bool:
    """Whether the user opted in to running rsprune_geo inside QGIS's own Python.

    Off by default: rasterio's GDAL must not load into QGIS's process unasked.
    """
    try:
        from qgis.core import QgsSettings

        return QgsSettings().value(IN_PROCESS_KEY, False, type=bool)
    except ImportError:  # outside QGIS
        return True


def configured_cli() -> str | None:
    """The rsprune executable: the plugin setting, else $RSPRUNE_CLI, else the PATH."""
    path = None
    try:
        from qgis.core import QgsSettings

        path = QgsSettings().value(SETTINGS_KEY, "", type=str) or None
    except ImportError:  # outside QGIS
        pass
    path = path or os.environ.get("RSPRUNE_CLI") or shutil.which("rsprune")
    return path if path and os.path.isfile(path) and os.access(path, os.X_OK) else None


def run_cli(params: PruneParams, on_progress, is_canceled, cli: str | None = None) -> dict:
    """Run ``rsprune run`` as a subprocess; returns the final ``ok`` event (see :func:`run_command`)."""
    params.validate()
    return run_command(params.cli_arguments(), on_progress, is_canceled, cli, output=params.output)


#: How often a running command checks for Cancel, and how long it has to stop cleanly.
POLL_SECONDS = 0.1
STOP_SECONDS = 3.0


def run_command(arguments: list[str], on_progress, is_canceled, cli: str | None = None,
                output: str | None = None) -> dict:
    """Run ``rsprune ARGUMENTS`` (which must include ``--progress-json``) as a subprocess.

    ``on_progress(percent, stage)`` gets the JSON progress; ``is_canceled()`` is polled every
    :data:`POLL_SECONDS`, whatever the command prints, and a cancel interrupts it (SIGINT: it
    cleans up and writes nothing), killing it if it has not stopped after :data:`STOP_SECONDS`;
    a temporary GeoPackage a killed run leaves beside ``output`` is removed. Returns the ``ok``
    event; raises :class:`Canceled` or :class:`BackendError` (with the command's last words).
    """
    cli = cli or configured_cli()
    if not cli:
        raise BackendError("rsprune is not configured: use RS-Prune > Set up backend…, or choose an existing "
                           "rsprune command in RS-Prune > Settings (or set $RSPRUNE_CLI)")
    creation = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if os.name == "nt" else {}
    process = subprocess.Popen([cli, *arguments], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, text=True, shell=False, **creation)
    final, other = None, []
    try:
        for line in lines_of(process, process.stderr, is_canceled):
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                other.append(line.strip())
                continue
            if event.get("event") == "progress":
                on_progress(stage_percent(event), event.get("stage", ""))
            elif event.get("event") in ("ok", "error"):
                final = event
            elif event.get("event") == "warning":
                other.append(event.get("message", ""))
        process.wait()
    except Canceled:
        _remove_partial(output)
        raise
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if is_canceled():
        _remove_partial(output)
        raise Canceled()
    if final is None:
        tail = " ".join(line for line in other[-3:] if line)
        raise BackendError(f"rsprune stopped without a result (exit code {process.returncode})"
                           + (f": {tail}" if tail else "; check that the configured rsprune is rsprune_geo's command"))
    if final["event"] == "error":
        raise BackendError(final["message"])
    return final


def lines_of(process, pipe, is_canceled):
    """The lines of ``process``'s ``pipe`` as they come (read on a thread).

    Checking ``is_canceled()`` every :data:`POLL_SECONDS` even while it is silent; on Cancel the process
    is stopped (:func:`_stop`) and :class:`Canceled` raised.
    """
    import queue
    import threading

    lines: queue.Queue = queue.Queue()

    def read() -> None:
        for line in pipe:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    while True:
        if is_canceled():
            _stop(process)
            raise Canceled()
        try:
            line = lines.get(timeout=POLL_SECONDS)
        except queue.Empty:
            continue
        if line is None:
            return
        yield line


def outcome(call) -> tuple:
    """``(result, error)`` of ``call()`` for a task.

    ``(result, None)``, ``(None, message)`` when it failed (any exception: a task must never crash
    QGIS), ``(None, None)`` when canceled.
    """
    try:
        return call(), None
    except Canceled:
        return None, None
    except BackendError as exc:
        return None, str(exc)
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"


def _stop(process) -> None:
    """Interrupt a command (it cleans up), then kill it if it does not stop in time."""
    import signal

    if process.poll() is not None:
        return
    try:
        process.send_signal(signal.CTRL_BREAK_EVENT if os.name == "nt" else signal.SIGINT)
        process.wait(timeout=STOP_SECONDS)
    except (subprocess.TimeoutExpired, OSError):
        process.kill()
        process.wait()


def _remove_partial(output: str | None) -> None:
    """Remove what a killed run left beside ``output``.

    A temporary GeoPackage, and the staging folder of its tile table's parts.
    """
    if not output:
        return
    import glob
    import shutil

    folder = glob.escape(os.path.dirname(output) or ".")
    for leftover in glob.glob(os.path.join(folder, ".rsprune-*.tmp.gpkg*")):
        try:
            os.remove(leftover)
        except OSError:
            pass
    for staging in glob.glob(os.path.join(folder, ".rsprune-*.tmp.parts")):
        shutil.rmtree(staging, ignore_errors=True)


#: What a run folder holds: its record, and (when the run chose to, or once QGIS asked) a
#: GeoPackage of its tiles; QGIS's GDAL here reads no GeoParquet, so QGIS shows that one.
RUN_RECORD, RUN_GEOPACKAGE = "run.json", "tiles.gpkg"


def run_location(path: str) -> str:
    """The run behind a path the user chose.

    A GeoPackage, a run folder, or a file inside one (its ``run.json`` or ``tiles.gpkg``).
    """
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    if os.path.isfile(os.path.join(folder, RUN_RECORD)):
        return folder
    return path


def check_run(run: str, on_progress, is_canceled, cli: str | None = None) -> None:
    """Check ``run`` as every ``rsprune`` command checks a run (``rsprune_geo.runs.runfile.check_run``).

    In this process when rsprune_geo runs here, else with ``rsprune info``; a :class:`BackendError` with
    its one line when it is not a run or a damaged one. Without a backend at all, only
    :func:`run_location`'s check is made.
    """
    if in_process_allowed() and in_process_available():
        from rsprune_geo.errors import RsPruneError
        from rsprune_geo.runs.runfile import check_run as check

        try:
            check(run)
        except RsPruneError as exc:
            raise BackendError(str(exc)) from None
        return
    if cli or configured_cli():
        run_command(["info", run, "--progress-json"], on_progress, is_canceled, cli)
    elif not (os.path.isdir(run) or (run.lower().endswith(".gpkg") and os.path.isfile(run))):
        raise BackendError(f"{run}: not an RS-Prune run (a GeoPackage, or a folder holding {RUN_RECORD})")


def run_geopackage(run: str, on_progress, is_canceled, cli: str | None = None) -> str:
    """The GeoPackage QGIS shows for ``run`` (see :func:`run_location`), checked first (:func:`check_run`).

    The file itself, or the run folder's ``tiles.gpkg``, which the backend writes first when the folder
    has none (every tile, styled, with ``rsprune export``).
    """
    run = run_location(run)
    check_run(run, on_progress, is_canceled, cli)
    if not os.path.isdir(run):
        return run
    target = os.path.join(run, RUN_GEOPACKAGE)
    if not os.path.isfile(target):
        run_command(["export", run, "--footprints", target, "--status", "all", "--progress-json"], on_progress,
                    is_canceled, cli, output=target)
    return target


def run_in_process(params: PruneParams, on_progress, is_canceled) -> dict:
    """Run through the Python API in this process (when rsprune_geo imports)."""
    import rsprune_geo

    params.validate()

    def progress(stage, done, total):
        if is_canceled():
            raise Canceled()
        on_progress(stage_percent({"stage": stage, "done": done, "total": total}), stage)

    values = {k: v for k, v in params.values().items() if v is not None}
    from rsprune_geo.bank.profile import banks_or_default

    values["prior_bank"] = banks_or_default(values["prior_bank"])  # as `rsprune run` does
    result = rsprune_geo.run(params.inputs(), params.output, overwrite=params.overwrite, on_progress=progress,
                             **values)
    counts = result.record.counts
    return {"event": "ok", "output": str(result.output), "tiles": sum(counts.values()), "counts": dict(counts)}


#: Where each stage sits on the progress bar (start, end), in percent.
STAGE_SPANS = {"tiling": (0, 5), "prior_bank": (5, 15), "stage1": (15, 80), "encoding": (80, 90),
               "selection": (90, 95), "evaluation": (95, 95), "writing": (95, 100), "export": (0, 100),
               "report": (0, 30), "gallery": (30, 100)}


def stage_percent(event: dict) -> float:
    """Overall percent of a progress event."""
    start, end = STAGE_SPANS.get(event.get("stage", ""), (0, 100))
    total = max(int(event.get("total", 1)), 1)
    return start + (end - start) * min(int(event.get("done", 0)), total) / total
