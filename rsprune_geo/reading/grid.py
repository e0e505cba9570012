"""The run's tile grid as arithmetic.

Every tile a position in one enumeration of the run (sources in order, each row by row), its id,
window, footprint and order key computed when asked, and the work cut into window tasks; so a run of
any size is planned without a table of its tiles.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import shapely
from rasterio.windows import Window

from ..choices import EdgeMode
from ..errors import InputError, param
from .dates import SourceDates
from .scan import SourceTable
from .sources import RasterSource
from .tiling import grid_offsets, read_aoi, window_polygons

#: Tiles per window task (a part of the tile table), at most: a task reads its windows one by one.
TASK_TILES = 4096
#: Tiles a task gathers before it stands alone: consecutive small tasks (a folder of chips, small
#: rasters, large tiles) are joined into one, as every part costs a file, a write and an update
#: whatever its size (``benchmarks/bench_chips.py``: a folder of chips ran 6x faster joined).
TASK_MIN_TILES = 256


@dataclass(slots=True)
class SourceGrid:
    """One source's tiles.

    A grid of ``rows`` × ``cols`` pixel offsets (tiles ``width`` × ``height`` px), whose first tile is
    the run's position ``start``; ``present`` marks the grid's tiles inside the area of interest
    (``None``: all of them).
    """

    source: RasterSource
    index: int
    rows: np.ndarray
    cols: np.ndarray
    width: int
    height: int
    start: int = 0
    present: np.ndarray | None = None
    chip: bool = False

    @property
    def size(self) -> int:
        """Grid tiles (present or not)."""
        return int(self.rows.size * self.cols.size)

    @property
    def count(self) -> int:
        """Tiles present."""
        return self.size if self.present is None else int(self.present.sum())

    def ij(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row and column indexes (into ``rows``/``cols``) of run positions of this source."""
        return np.divmod(np.asarray(positions, dtype=np.int64) - self.start, self.cols.size)

    def offsets(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel ``(row_off, col_off)`` of run positions of this source."""
        i, j = self.ij(positions)
        return self.rows[i], self.cols[j]

    def tile_ids(self, positions: np.ndarray) -> list[str]:
        """The tiles' stable ids (``<source key>-r<row>-c<col>-<size>``)."""
        return self.task_tiles(0, []).tile_ids(*self.offsets(positions))

    def footprints(self, positions: np.ndarray) -> np.ndarray:
        """Footprint polygons of run positions in the source's CRS.

        The window's corners through its affine transform.
        """
        return window_polygons(self.source.transform, *self.offsets(positions), self.width, self.height)

    def task_tiles(self, part: int, windows: Sequence[tuple[int, int, int, int]]) -> TaskTiles:
        """What a worker needs to run the ``windows`` (index ranges) of this grid as part ``part``."""
        spans = []
        for i0, i1, j0, j1 in windows:
            present = None
            if self.present is not None:
                i, j = np.meshgrid(np.arange(i0, i1), np.arange(j0, j1), indexing="ij")
                present = self.present[(i * self.cols.size + j).ravel()]
            spans.append((i0, i1, j0, j1, present))
        return TaskTiles(part, self.source, self.index, self.width, self.height, self.chip, self.rows, self.cols,
                         self.start, spans)


#: A task member: a source's index and its windows, as ``(i0, i1, j0, j1)`` index ranges.
Member = tuple[int, tuple[tuple[int, int, int, int], ...]]

#: A chip's one window: its grid's one row and column.
_CHIP_WINDOWS = ((0, 1, 0, 1),)


@dataclass(frozen=True)
class ChipRange(Sequence[Member]):
    """The members of a task of consecutive chips ``first`` to ``stop`` (excluded).

    Each its one window, held as two numbers.
    """

    first: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.first

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        return (self.first + index % len(self), _CHIP_WINDOWS)

    def __iter__(self) -> Iterator[Member]:
        return ((source, _CHIP_WINDOWS) for source in range(self.first, self.stop))


@dataclass(frozen=True)
class WindowTask:
    """A unit of work.

    Windows of one or more sources, each read once, their tiles a part of the tile table. ``members``
    are ``(source index, windows)``, windows as ``(i0, i1, j0, j1)`` ranges of the source grid's row and
    column indexes (consecutive chips: a :class:`ChipRange`).
    """

    part: int
    members: Sequence[Member]

    @property
    def sources(self) -> list[int]:
        """The indexes of the sources the task reads."""
        return [source for source, _ in self.members]


@dataclass
class TaskTiles:
    """What a worker needs to run a task, in a few hundred bytes whatever its size.

    The source, the tile size, its grid's offsets and first position, and the task's windows as index
    ranges (with, inside an area of interest, which of their tiles are present).
    """

    part: int
    source: RasterSource
    source_index: int
    width: int
    height: int
    chip: bool
    rows: np.ndarray
    cols: np.ndarray
    start: int
    windows: list[tuple[int, int, int, int, np.ndarray | None]]
    date: np.datetime64 = field(default_factory=lambda: np.datetime64("NaT", "ns"))

    def iter_windows(self) -> Iterator[tuple[Window, np.ndarray, np.ndarray, np.ndarray]]:
        """Each window with tiles.

        Its pixel window, and its tiles' run positions and pixel offsets (row by row).
        """
        for i0, i1, j0, j1, present in self.windows:
            ii, jj = np.meshgrid(np.arange(i0, i1), np.arange(j0, j1), indexing="ij")
            i, j = ii.ravel(), jj.ravel()
            if present is not None:
                i, j = i[present], j[present]
            if i.size == 0:
                continue
            r0, c0 = int(self.rows[i0]), int(self.cols[j0])
            window = Window(c0, r0, int(self.cols[j1 - 1]) + self.width - c0,
                            int(self.rows[i1 - 1]) + self.height - r0)
            yield window, self.start + i * self.cols.size + j, self.rows[i], self.cols[j]

    @property
    def positions(self) -> np.ndarray:
        """The task's tile positions, in the order of its part."""
        parts = [positions for _, positions, _, _ in self.iter_windows()]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def tile_ids(self, row_off: np.ndarray, col_off: np.ndarray) -> list[str]:
        """The stable ids of tiles at these pixel offsets (``<source key>-r<row>-c<col>-<size>``)."""
        if self.chip:
            size = self.width if self.width == self.height else f"{self.width}x{self.height}"
            return [f"{self.source.key}-r0-c0-{size}"] * len(row_off)
        return [f"{self.source.key}-r{r}-c{c}-{self.width}" for r, c in zip(row_off.tolist(), col_off.tolist())]

    def footprints(self, row_off: np.ndarray, col_off: np.ndarray) -> np.ndarray:
        """Footprint polygons of tiles at these pixel offsets, in the source's CRS."""
        return window_polygons(self.source.transform, row_off, col_off, self.width, self.height)


class ChipGrids(Sequence[SourceGrid]):
    """The grids of a run of chips, each one tile, the chip's position its index.

    Built when asked from the sources (a :class:`~rsprune_geo.reading.scan.SourceTable`) and, inside an
    area of interest, which chips touch it (``present``).
    """

    def __init__(self, sources: Sequence[RasterSource], present: np.ndarray | None = None) -> None:
        self.sources = sources
        self.present = present
        self._origin = np.zeros(1, np.int64)  # a chip's one tile, its offsets held once for every chip
        self._origin.flags.writeable = False

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        source = self.sources[index]
        return SourceGrid(source, index, self._origin, self._origin, source.width, source.height, start=index,
                          present=None if self.present is None else self.present[index : index + 1], chip=True)

    def __iter__(self) -> Iterator[SourceGrid]:
        return (self[i] for i in range(len(self)))

    @property
    def tiles(self) -> int:
        """Chips present."""
        return len(self) if self.present is None else int(self.present.sum())


@dataclass
class RunGrid:
    """Every source's grid, the positions over them all and the window tasks.

    Every source's grid, one enumeration of positions over them all, the window tasks, and the sources'
    acquisition ``dates`` (each task's tiles are told theirs).
    """

    sources: Sequence[SourceGrid]
    tasks: list[WindowTask] = field(default_factory=list)
    dates: SourceDates | None = None

    @property
    def chips(self) -> ChipGrids | None:
        """The grids as chips (a position a source), when they are."""
        return self.sources if isinstance(self.sources, ChipGrids) else None

    @property
    def size(self) -> int:
        """Positions in the run (tiles present or not)."""
        if self.chips is not None:
            return len(self.chips)
        return self.sources[-1].start + self.sources[-1].size if self.sources else 0

    @property
    def count(self) -> int:
        """Tiles in the run."""
        if self.chips is not None:
            return self.chips.tiles
        return sum(s.count for s in self.sources)

    def sizes(self) -> np.ndarray:
        """Positions of each source."""
        if self.chips is not None:
            return np.ones(len(self.chips), dtype=np.int64)
        return np.array([s.size for s in self.sources], dtype=np.int64)

    def present(self) -> np.ndarray:
        """Which positions are tiles (a bool per position)."""
        if self.chips is not None:
            return self.chips.present.copy() if self.chips.present is not None else np.ones(self.size, dtype=bool)
        out = np.ones(self.size, dtype=bool)
        for grid in self.sources:
            if grid.present is not None:
                out[grid.start : grid.start + grid.size] = grid.present
        return out

    def source_of(self, positions: np.ndarray) -> np.ndarray:
        """The source index of each run position."""
        if self.chips is not None:
            return np.asarray(positions, dtype=np.int64)
        starts = np.array([s.start for s in self.sources], dtype=np.int64)
        return np.searchsorted(starts, np.asarray(positions, dtype=np.int64), side="right") - 1

    def task_tiles(self, task: WindowTask) -> list[TaskTiles]:
        """What a worker needs to run ``task``: a :class:`TaskTiles` for each source it reads."""
        tiles = [self.sources[source].task_tiles(task.part, windows) for source, windows in task.members]
        if self.dates is not None:
            for member in tiles:
                member.date = self.dates.of(member.source_index)
        return tiles

    def task_positions(self, task: WindowTask) -> np.ndarray:
        """The run positions of a task's tiles, in the order its part holds them."""
        return np.concatenate([member.positions for member in self.task_tiles(task)])

    def order_keys(self, positions: np.ndarray) -> np.ndarray:
        """An int64 key per position that sorts like the tiles' ids (the tie-break of every ranking).

        Without making the ids.
        """
        positions = np.asarray(positions, dtype=np.int64)
        keys = np.zeros(positions.size, dtype=np.int64)
        which = self.source_of(positions)
        by_key = np.argsort(self._source_keys(), kind="stable")
        source_rank = np.empty(len(self.sources), dtype=np.int64)
        source_rank[by_key] = np.arange(len(self.sources))
        if self.chips is not None:  # a chip's one tile: its id sorts as its source's key
            return source_rank[positions]
        span = max(s.size for s in self.sources)
        for s in np.unique(which):
            grid = self.sources[s]
            mine = which == s
            i, j = grid.ij(positions[mine])
            keys[mine] = source_rank[s] * span + _text_rank(grid.rows)[i] * grid.cols.size + _text_rank(grid.cols)[j]
        return keys


    def _source_keys(self) -> np.ndarray:
        """Each source's key, in an array that sorts as the keys' text."""
        if self.chips is not None and isinstance(self.chips.sources, SourceTable):
            return self.chips.sources.key  # unsigned integers that sort as the keys' text
        return np.array([s.source.key for s in self.sources])


def _text_rank(values: np.ndarray) -> np.ndarray:
    """Rank of each integer by its decimal text (``"1024" < "256"``), as the ids compare them."""
    order = sorted(range(values.size), key=lambda k: str(int(values[k])))
    rank = np.empty(values.size, dtype=np.int64)
    rank[order] = np.arange(values.size)
    return rank


def plan_grid(sources: Sequence[RasterSource], tile_size: int, stride: int | None = None,
              edge: EdgeMode | str = EdgeMode.DROP, chips: bool = False, aoi: str | None = None,
              group_px: int = 2048, task_tiles: int = TASK_TILES, min_task_tiles: int | None = None) -> RunGrid:
    """The run's tile grid.

    Each source's grid of ``tile_size`` windows (``stride`` apart, partial edge tiles dropped or
    padded), or one tile per raster (``chips``), restricted to the tiles touching the area of interest
    ``aoi`` (a vector file); and its window tasks (windows of about ``group_px`` square, up to
    ``task_tiles`` tiles a task, small ones joined up to ``min_task_tiles``: see :func:`_tasks`). An
    :class:`InputError` when no tile is left.
    """
    stride = stride or tile_size
    area = None
    if aoi:
        if any(s.crs is None for s in sources):
            raise InputError(f"{param('aoi')} needs georeferenced rasters (the inputs have no CRS)")
        area = read_aoi(aoi)
    if chips:
        chip_grids = ChipGrids(sources)
        if area is not None:
            chip_grids.present = np.fromiter((_touching(grid, area)[0] for grid in chip_grids), dtype=bool,
                                             count=len(chip_grids))
        run = RunGrid(chip_grids)
    else:
        run = RunGrid(_source_grids(sources, tile_size, stride, edge, area))
    if run.count == 0:
        raise InputError("no tile to process: the area of interest misses every raster")
    run.tasks = _tasks(run, group_px, task_tiles, min_task_tiles)
    return run


def _source_grids(sources: Sequence[RasterSource], tile_size: int, stride: int, edge: EdgeMode | str,
                  area: gpd.GeoSeries | None) -> list[SourceGrid]:
    """Each raster's grid of tiles, its first position after the previous grid's last."""
    grids, start = [], 0
    for index, source in enumerate(sources):
        if EdgeMode.parse(edge, "edge") is EdgeMode.DROP and (tile_size > source.width or
                                                              tile_size > source.height):
            raise InputError(
                f"{source.path}: tile size {tile_size} px is larger than the raster ({source.width}x"
                f"{source.height} px); use a smaller {param('tile_size')} or {param('edge')} pad")
        grid = SourceGrid(source, index, grid_offsets(source.height, tile_size, stride, edge),
                          grid_offsets(source.width, tile_size, stride, edge), tile_size, tile_size)
        grid.start = start
        if area is not None:
            grid.present = _touching(grid, area)
        start += grid.size
        grids.append(grid)
    return grids


def _touching(grid: SourceGrid, area: gpd.GeoSeries, chunk: int = 1 << 16) -> np.ndarray:
    """Which of a source grid's tiles touch the area of interest (any CRS), a chunk at a time."""
    if area.crs is not None and grid.source.crs is not None and area.crs != grid.source.crs:
        area = area.to_crs(grid.source.crs)
    shape = shapely.union_all(area.geometry.values)
    shapely.prepare(shape)
    out = np.zeros(grid.size, dtype=bool)
    for lo in range(0, grid.size, chunk):
        positions = grid.start + np.arange(lo, min(lo + chunk, grid.size))
        out[lo : lo + positions.size] = shapely.intersects(grid.footprints(positions), shape)
    return out


def _tasks(run: RunGrid, group_px: int, task_tiles: int, min_tiles: int | None = None) -> list[WindowTask]:
    """Windows of about ``group_px`` square over each source's grid (aligned with the tiles).

    Gathered along each row band into pieces of at most ``task_tiles`` tiles; consecutive pieces of
    under ``min_tiles`` tiles (default :data:`TASK_MIN_TILES`; across sources too) joined into one task,
    in the same order.
    """
    min_tiles = TASK_MIN_TILES if min_tiles is None else min_tiles
    if run.chips is not None:  # a chip a piece of one tile: consecutive chips joined
        step = max(1, min(min_tiles, task_tiles))
        return [WindowTask(part, ChipRange(lo, min(lo + step, len(run.chips))))
                for part, lo in enumerate(range(0, len(run.chips), step))]
    pieces: list[tuple[int, tuple[tuple[int, int, int, int], ...], int]] = []
    for grid in run.sources:
        row_groups = _groups(grid.rows // group_px)
        col_groups = _groups(grid.cols // group_px)
        for i0, i1 in row_groups:
            pending: list[tuple[int, int, int, int]] = []
            held = 0
            for j0, j1 in col_groups:
                n = (i1 - i0) * (j1 - j0)
                if pending and held + n > task_tiles:
                    pieces.append((grid.index, tuple(pending), held))
                    pending, held = [], 0
                pending.append((i0, i1, j0, j1))
                held += n
            if pending:
                pieces.append((grid.index, tuple(pending), held))
    tasks: list[WindowTask] = []
    members: list[tuple[int, tuple[tuple[int, int, int, int], ...]]] = []
    held = 0
    for source, windows, n in pieces:
        if members and (held >= min_tiles or held + n > task_tiles):
            tasks.append(WindowTask(len(tasks), tuple(members)))
            members, held = [], 0
        members.append((source, windows))
        held += n
    if members:
        tasks.append(WindowTask(len(tasks), tuple(members)))
    return tasks


def _groups(keys: np.ndarray) -> list[tuple[int, int]]:
    """``(start, stop)`` index ranges of equal consecutive ``keys``."""
    if keys.size == 0:
        return []
    cuts = np.flatnonzero(np.diff(keys)) + 1
    bounds = np.r_[0, cuts, keys.size]
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]














