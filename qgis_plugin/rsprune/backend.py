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
    keep: float | None = options.form_default("keep")
    stage1_keep: float | None = options.form_default("stage1_keep")  # None: rsprune's default for the rule
    entropy_min: float | None = options.form_default("entropy_min")
    encoder: str = options.form_default("encoder")
    max_per_cell: int | None = options.form_default("max_per_cell")  # kept tiles per ground cell (0: no cap)
    prior_banks: list[str] = field(default_factory=list)
    overwrite: bool = True

    def values(self) -> dict:
        """The run parameters by their names in rsprune (``None``: rsprune's own default)."""
        return {"tile_size": self.tile_size, "stride": self.stride or None, "keep": self.keep,
                "stage1_keep": self.stage1_keep, "entropy_min": self.entropy_min, "encoder": self.encoder,
                "max_per_cell": self.max_per_cell, "prior_bank": list(self.prior_banks)}

    def validate(self) -> None:
        if not self.rasters:
            raise BackendError("choose at least one raster layer backed by a file")
        for path in self.rasters:
            if not os.path.isfile(path) and not path.startswith("/vsi"):
                raise BackendError(f"{path}: not a file on disk (save the layer to a GeoTIFF first)")
        if not self.output.lower().endswith(".gpkg"):
            raise BackendError("the output must be a GeoPackage (.gpkg)")
        for name, value in self.values().items():
            if name != "prior_bank" and name != "encoder":
                problem = options.check(name, value)
                if problem:
                    raise BackendError(problem)
        for bank in self.prior_banks:
            if not os.path.isdir(bank):
                raise BackendError(f"{bank}: the prior bank folder does not exist")

    def cli_arguments(self) -> list[str]:
        """``rsprune run`` arguments, one list item per argument (paths stay single items)."""
        args = ["run", *self.rasters, "-o", self.output, "--progress-json"]
        for name, value in self.values().items():
            flag = options.option(name)["flag"]
            for item in (value if isinstance(value, list) else [value]):
                if item is not None:
                    args += [flag, repr(float(item)) if isinstance(item, float) else str(item)]
        if self.overwrite:
            args.append("--overwrite")
        return args


def in_process_available() -> bool:
    """True when rsprune_geo (and what it needs) imports in this Python (QGIS's)."""
    if importlib.util.find_spec("rsprune_geo") is None:
        return False
    try:
        import rsprune_geo  # noqa: F401
    except Exception:  # a package without its dependencies, or a numpy/GDAL clash
        return False
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
    """Run ``rsprune run`` as a subprocess; returns the final ``ok`` event.

    ``on_progress(percent, stage)`` gets the JSON progress; ``is_canceled()`` is polled, and a
    cancel terminates the process (its output is written atomically, so nothing half-written
    stays behind).
    """
    params.validate()
    cli = cli or configured_cli()
    if not cli:
        raise BackendError("rsprune is not configured: set the path to the rsprune command in "
                           "RS-Prune > Settings (or $RSPRUNE_CLI)")
    process = subprocess.Popen([cli, *params.cli_arguments()], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, shell=False)
    final, other = None, []
    try:
        for line in process.stderr:
            if is_canceled():
                process.terminate()
                process.wait(timeout=30)
                raise Canceled()
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                other.append(line.strip())
                continue
            if event.get("event") == "progress":
                on_progress(stage_percent(event), event.get("stage", ""))
            elif event.get("event") in ("ok", "error"):
                final = event
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    if is_canceled():
        raise Canceled()
    if final is None:
        raise BackendError("rsprune stopped without a result: " + " ".join(other[-3:]))
    if final["event"] == "error":
        raise BackendError(final["message"])
    return final


def run_in_process(params: PruneParams, on_progress, is_canceled) -> dict:
    """Run through the Python API in this process (when rsprune_geo imports)."""
    import rsprune_geo

    params.validate()

    def progress(stage, done, total):
        if is_canceled():
            raise Canceled()
        on_progress(stage_percent({"stage": stage, "done": done, "total": total}), stage)

    values = params.values()
    values["prior_bank"] = tuple(values["prior_bank"])
    result = rsprune_geo.run(params.rasters, params.output, overwrite=params.overwrite, on_progress=progress,
                             **values)
    counts = result.tiles["status"].value_counts()
    return {"event": "ok", "output": str(result.output), "tiles": len(result.tiles),
            "counts": {str(k): int(v) for k, v in counts.items()}}


#: Where each stage sits on the progress bar (start, end), in percent.
STAGE_SPANS = {"tiling": (0, 5), "stage1": (5, 35), "prior_bank": (35, 45), "encoding": (45, 90),
               "selection": (90, 95), "evaluation": (95, 95), "writing": (95, 100)}


def stage_percent(event: dict) -> float:
    """Overall percent of a progress event."""
    start, end = STAGE_SPANS.get(event.get("stage", ""), (0, 100))
    total = max(int(event.get("total", 1)), 1)
    return start + (end - start) * min(int(event.get("done", 0)), total) / total
