"""rsprune_geo: training-free pruning of remote-sensing imagery (RS-Prune) as a geodata tool."""

import logging as _logging

from .config import RunConfig
from .errors import InputError, OutputError, RsPruneError
from .outputs import plot_map, write_geopackage
from .pipeline import run
from .planning import RunEstimate, estimate_run
from .reading.pixels import Scaling, read_window, source_scaling
from .reading.scan import open_sources
from .reading.sources import RasterSource, open_lazy, open_source
from .reading.tiling import make_tiles
from .runs.record import RunRecord
from .runs.result import RunResult
from .runs.runfile import check_run, read_run
from .runs.vocabulary import Status
from .stages.information import apply_information_filter, grey_levels, score_tiles, shannon_entropy, tile_statistics

__all__ = [
    "InputError",
    "OutputError",
    "RasterSource",
    "RsPruneError",
    "RunConfig",
    "RunEstimate",
    "RunRecord",
    "RunResult",
    "Scaling",
    "Status",
    "apply_information_filter",
    "check_run",
    "estimate_run",
    "grey_levels",
    "make_tiles",
    "open_lazy",
    "open_source",
    "open_sources",
    "plot_map",
    "read_run",
    "read_window",
    "run",
    "score_tiles",
    "shannon_entropy",
    "source_scaling",
    "tile_statistics",
    "write_geopackage",
]

# A library logs and never prints: without a handler set by the application, nothing is shown.
_logging.getLogger(__name__).addHandler(_logging.NullHandler())

try:
    from importlib.metadata import version as _version

    __version__ = _version("rsprune_geo")
except Exception:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
