"""The inputs scanned (:func:`scan_sources`): every file described once.

Opened, or planned from its STAC item's metadata where that says enough (:func:`planned_source`).

A folder of a hundred million chips is a run of as many sources, so they are held as columns: each
chip keeps only what is its own (its folder, name, fingerprint and key, in flat arrays, a few tens
of bytes) and what chips share (size, bands, CRS, mask, blocks) is held once per distinct
description. A :class:`SourceTable` is a sequence of
:class:`~rsprune_geo.reading.sources.RasterSource`, each built when asked.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, overload

import numpy as np
import pyarrow as pa
from rasterio import Affine

from ..engine.scaleout import map_tasks
from ..errors import InputError, SkippedInput, counted
from ..files import file_fingerprint
from .pixels import MaskMode
from .sources import (
    CHIP_SUFFIXES,
    RASTER_SUFFIXES,
    SUPPORTED_DTYPES,
    RasterSource,
    iter_paths,
    open_source,
    source_key,
)
from .stac import ItemGrid, StacPath

#: Sources a :class:`SourceTable` gathers before packing them into its arrays.
CHUNK = 1 << 13
#: The bytes of a fingerprint (:func:`~rsprune_geo.files.file_fingerprint`) a table keeps.
_FINGERPRINT_BYTES = 12


@dataclass(eq=False)
class SourceTable(Sequence[RasterSource]):
    """Sources in columns, in order.

    ``folder`` (an index into ``folders``) and ``names`` (a path is ``folders[folder] + names``),
    ``fingerprint`` (its bytes), ``key`` (as an unsigned integer of ``key_digits`` hex digits),
    ``profile`` (an index into ``profiles``, the sources' shared values with no path), ``tag`` (an index
    into ``tags``, the date tags) and, when they differ (georeferenced chips), ``transforms`` (the six
    affine coefficients of each). Build one with :meth:`of` or :class:`TableBuilder`.
    """

    folders: list[str]
    folder: np.ndarray
    names: pa.ChunkedArray
    fingerprint: np.ndarray
    key: np.ndarray
    profiles: list[RasterSource]
    profile: np.ndarray
    tags: list[tuple[tuple[str, str], ...]]
    tag: np.ndarray
    transforms: np.ndarray | None = None
    key_digits: int = 8
    _cache: dict[int, RasterSource] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, sources: Iterable[RasterSource]) -> SourceTable:
        """The table of ``sources`` (any iterable, consumed once)."""
        builder = TableBuilder()
        for source in sources:
            builder.add(source)
        return builder.table()

    def __len__(self) -> int:
        return int(self.key.size)

    @overload
    def __getitem__(self, index: int) -> RasterSource: ...

    @overload
    def __getitem__(self, index: slice) -> list[RasterSource]: ...

    def __getitem__(self, index: int | slice) -> RasterSource | list[RasterSource]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        held = self._cache.get(index)  # the last few asked for (a task asks for its sources again)
        if held is not None:
            return held
        path = self.path(index)
        fingerprint = (file_fingerprint(path) if path.startswith("/vsi")
                       else self.fingerprint[index].tobytes().hex())
        source = replace(self.profiles[int(self.profile[index])], path=path, fingerprint=fingerprint,
                         key=f"{int(self.key[index]):0{self.key_digits}x}", date_tags=self.tags[int(self.tag[index])])
        if self.transforms is not None:
            source = replace(source, transform=Affine(*self.transforms[index].tolist()))
        if len(self._cache) >= 64:
            self._cache.clear()
        self._cache[index] = source
        return source

    def __iter__(self) -> Iterator[RasterSource]:
        for index in range(len(self)):
            yield self[index]

    def path(self, index: int) -> str:
        """The path of source ``index``."""
        return self.folders[int(self.folder[index])] + self.names[index].as_py()

    def paths(self) -> Iterator[str]:
        """Every source's path, in order (without building the sources)."""
        start = 0
        for chunk in self.names.chunks:
            folders = self.folder[start : start + len(chunk)]
            for folder, name in zip(folders.tolist(), chunk.to_pylist()):
                yield self.folders[folder] + name
            start += len(chunk)

    def affine(self) -> np.ndarray:
        """The sources' affine coefficients ``(a, b, c, d, e, f)``.

        One row for each, or a single row when they share one transform.
        """
        if self.transforms is not None:
            return self.transforms
        first = self.profiles[0].transform if self.profiles else Affine.identity()
        return np.array([tuple(first)[:6]], dtype=np.float64)

    def sizes(self) -> tuple[np.ndarray, np.ndarray]:
        """Each source's width and height in pixels."""
        widths = np.array([p.width for p in self.profiles], dtype=np.int64)
        heights = np.array([p.height for p in self.profiles], dtype=np.int64)
        return widths[self.profile], heights[self.profile]

    def distinct(self, name: str) -> list:
        """The distinct values of a field the sources share (``crs``, ``dtype``, ``bands``...)."""
        values: list = []
        for profile in self.profiles:
            value = getattr(profile, name)
            if all(value != v for v in values):
                values.append(value)
        return values

    @property
    def nbytes(self) -> int:
        """Bytes the table's arrays hold (its per-source part)."""
        arrays = [self.folder, self.fingerprint, self.key, self.profile, self.tag, self.transforms]
        return self.names.nbytes + sum(a.nbytes for a in arrays if a is not None)


#: The fields a :class:`SourceTable` holds once per distinct description.
_PROFILE_FIELDS = ("width", "height", "count", "dtype", "crs", "bands", "nodata", "mask_mode",
                   "alpha_band", "block_shape", "overviews")


class TableBuilder:
    """Gathers sources one by one into a :class:`SourceTable`, a chunk of plain lists at a time."""

    def __init__(self) -> None:
        self.folders: list[str] = []
        self._folder_index: dict[str, int] = {}
        self.profiles: list[RasterSource] = []
        self._profile_index: dict[tuple, int] = {}
        self.tags: list[tuple[tuple[str, str], ...]] = []
        self._tag_index: dict[tuple, int] = {}
        self._chunks: list[tuple[np.ndarray, pa.Array, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                 np.ndarray | None]] = []
        self._pending: list[tuple[int, str, bytes, int, int, int]] = []
        self._transforms: list[tuple[float, ...]] = []  # the pending sources' (while any differs)
        self._first_transform: tuple[float, ...] | None = None
        self._varied = False  # whether the sources' transforms differ
        self._key_digits = 0

    def __len__(self) -> int:
        return sum(chunk[3].size for chunk in self._chunks) + len(self._pending)

    def add(self, source: RasterSource) -> None:
        """Append ``source``."""
        name = os.path.basename(source.path)
        folder = source.path[: len(source.path) - len(name)]
        f = self._folder_index.get(folder)
        if f is None:
            f = self._folder_index[folder] = len(self.folders)
            self.folders.append(folder)
        shared = tuple(getattr(source, n) for n in _PROFILE_FIELDS)
        p = self._profile_index.get(shared)
        if p is None:
            p = self._profile_index[shared] = len(self.profiles)
            self.profiles.append(replace(source, path="", fingerprint="", key="", date_tags=()))
        t = self._tag_index.get(source.date_tags)
        if t is None:
            t = self._tag_index[source.date_tags] = len(self.tags)
            self.tags.append(source.date_tags)
        digest = b"" if source.path.startswith("/vsi") else bytes.fromhex(source.fingerprint)
        self._pending.append((f, name, digest.ljust(_FINGERPRINT_BYTES, b"\0")[:_FINGERPRINT_BYTES],
                              int(source.key, 16), p, t))
        self._key_digits = self._key_digits or len(source.key)
        if len(source.key) != self._key_digits:
            raise ValueError("a table's sources are keyed alike (all chips or none)")
        transform = tuple(source.transform)[:6]
        if self._first_transform is None:
            self._first_transform = transform
        self._varied = self._varied or transform != self._first_transform
        self._transforms.append(transform)
        if len(self._pending) >= CHUNK:
            self._pack()

    def _pack(self) -> None:
        if not self._pending:
            return
        folder, names, digests, keys, profiles, tags = zip(*self._pending)
        transforms = np.array(self._transforms, dtype=np.float64) if self._varied else None
        self._chunks.append((
            np.array(folder, dtype=np.int32), pa.array(names, type=pa.string()),
            np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(-1, _FINGERPRINT_BYTES),
            np.array(keys, dtype=np.uint64), np.array(profiles, dtype=np.int32), np.array(tags, dtype=np.int32),
            transforms))
        self._pending.clear()
        self._transforms.clear()

    def table(self) -> SourceTable:
        """The table of the sources added (their indexes held in the smallest integer type)."""
        self._pack()
        chunks = self._chunks or [(np.zeros(0, np.int32), pa.array([], type=pa.string()),
                                   np.zeros((0, _FINGERPRINT_BYTES), np.uint8), np.zeros(0, np.uint64),
                                   np.zeros(0, np.int32), np.zeros(0, np.int32), None)]

        def joined(k: int, count: int) -> np.ndarray:
            return np.concatenate([c[k] for c in chunks]).astype(_index_type(count))

        table = SourceTable(
            folders=self.folders, folder=joined(0, len(self.folders)),
            names=pa.chunked_array([c[1] for c in chunks], type=pa.string()),
            fingerprint=np.concatenate([c[2] for c in chunks]), key=np.concatenate([c[3] for c in chunks]),
            profiles=self.profiles, profile=joined(4, len(self.profiles)), tags=self.tags,
            tag=joined(5, len(self.tags)), transforms=self._joined_transforms(chunks),
            key_digits=self._key_digits or 8)
        self._chunks = []
        return table

    def _joined_transforms(self, chunks: list) -> np.ndarray | None:
        """Each source's transform, when they differ.

        Chunks packed before the first that differed hold none: theirs is the first source's.
        """
        if not self._varied:
            return None
        first = np.array(self._first_transform, dtype=np.float64)
        return np.concatenate([c[6] if c[6] is not None else np.tile(first, (c[3].size, 1)) for c in chunks])


def _index_type(count: int) -> type:
    """The smallest unsigned integer type that indexes ``count`` items."""
    for kind in (np.uint8, np.uint16, np.uint32):
        if count <= np.iinfo(kind).max + 1:
            return kind
    return np.int64


def open_sources(
    inputs: Iterable[str | os.PathLike],
    bands: Sequence[int] | None = None,
    allow_no_crs: bool = False,
    chips: bool = False,
) -> list[RasterSource]:
    """Expand ``inputs`` and open each raster as a :class:`RasterSource`.

    Any unusable file is an error; :func:`scan_sources` can skip them instead.

    Args:
        inputs: paths, globs, folders or STAC catalogues.
        bands: the 1-based bands to use (1 or 3); ``None`` for the first three, or the one.
        allow_no_crs: accept rasters without a CRS.
        chips: inputs are image chips (folders of PNG/JPEG/TIFF too), which need no CRS.

    Returns:
        The sources, in the sorted order of their paths.

    Raises:
        InputError: no input matched, or a file cannot be used (see :func:`open_source`).
    """
    return list(scan_sources(inputs, bands, allow_no_crs, chips, strict=True)[0])


def scan_sources(
    inputs: Iterable[str | os.PathLike],
    bands: Sequence[int] | None = None,
    allow_no_crs: bool = False,
    chips: bool = False,
    strict: bool = False,
    client: Any | None = None,
    asset: str | None = None,
) -> tuple[Sequence[RasterSource], list[SkippedInput]]:
    """Like :func:`open_sources`, but an unusable file in a multi-file run is skipped.

    Like :func:`open_sources`, but in a multi-file run an unusable file (not a raster, empty, truncated,
    no CRS, too few bands) is skipped and reported, unless ``strict``. STAC inputs give each item's
    ``asset`` (see :mod:`~rsprune_geo.reading.stac`), dated by the item.

    Returns ``(sources, skipped)`` where ``skipped`` holds ``{"path", "error"}`` records. A run
    of one file, or one where every file is unusable, raises the (first) error. Chips come as a
    :class:`SourceTable` (a few tens of bytes a chip); other sources as a list, consecutive
    equal values (CRS, transform, bands…) held as one object. With a Dask ``client``, the files
    beyond the first :data:`SCAN_ALONE` are opened on its workers, :data:`SCAN_BATCH` at a time,
    and gathered in order.
    """
    held: TableBuilder | list[RasterSource] = TableBuilder() if chips else []
    skipped: list[SkippedInput] = []
    first_error = None
    given = 0
    paths = iter_paths(inputs, CHIP_SUFFIXES if chips else RASTER_SUFFIXES, recursive=chips, asset=asset)
    for p, source in _opened(paths, bands, allow_no_crs or chips, chips, client):
        given += 1
        if isinstance(source, InputError):
            if strict:
                raise source
            first_error = first_error or source
            skipped.append({"path": p, "error": str(source)})
            continue
        if isinstance(p, StacPath):  # a STAC item's raster: the item dates it, and the record names it
            stamped = (("STAC item datetime", p.datetime),) if p.datetime else ()
            source = replace(source, date_tags=stamped + source.date_tags, stac_item=p.item_id,
                             stac_href=p.item_href)
        if isinstance(held, list):
            held.append(source)
        else:
            held.add(source)
    if first_error is not None and (given == 1 or not len(held)):
        raise first_error
    sources = _shared_values(held) if isinstance(held, list) else held.table()
    crss = distinct(sources, "crs")
    if len(crss) > 1 and any(c is None for c in crss):
        missing = next(s for s in sources if s.crs is None)
        raise InputError(
            f"{missing.path}: the raster has no CRS while others have one; "
            "footprints cannot be put in one coordinate system"
        )
    if len({len(b) for b in distinct(sources, "bands")}) > 1:
        raise InputError(
            "inputs mix one-band and three-band selections; pass `bands` to choose the same "
            "number of bands for every file"
        )
    return sources, skipped


#: Files a scan opens here, one after the other, before it spreads over a Dask cluster's workers.
SCAN_ALONE = 8192
#: Files a worker opens at once.
SCAN_BATCH = 1024


def _opened(paths: Iterator[str], bands: Sequence[int] | None, allow_no_crs: bool, chips: bool,
            client: Any | None) -> Iterator[tuple[str, RasterSource | InputError]]:
    """Each path opened (:func:`~rsprune_geo.reading.sources.open_source`).

    Or the error that says why not, in order: here, or with a Dask ``client`` the first
    :data:`SCAN_ALONE` here and the rest in batches on its workers. (Not in local processes: spawning
    them would run again the main module of a script without a ``__main__`` guard; on two cores they
    gained nothing over 20,000 chips.)
    """
    for _, path in zip(range(SCAN_ALONE) if client is not None else itertools.count(), paths):
        yield path, _open_or_error(path, bands, allow_no_crs, chips)
    if client is None:
        return
    batches = iter(lambda: list(itertools.islice(paths, SCAN_BATCH)), [])
    first = next(batches, None)
    if first is None:
        return
    tasks = ((batch, bands, allow_no_crs, chips) for batch in itertools.chain([first], batches))
    waiting: dict[int, tuple[list[str], list]] = {}
    turn = 0
    for index, (batch, opened) in map_tasks(_scan_batch, tasks, client):
        waiting[index] = (batch, opened)
        while turn in waiting:
            done, results = waiting.pop(turn)
            yield from zip(done, results)
            turn += 1


def _scan_batch(paths: list[str], bands: Sequence[int] | None, allow_no_crs: bool, chips: bool
                ) -> tuple[list[str], list[RasterSource | InputError]]:
    """A batch of paths opened where it runs (a process, a Dask worker)."""
    return paths, [_open_or_error(path, bands, allow_no_crs, chips) for path in paths]


def _open_or_error(path: str, bands: Sequence[int] | None, allow_no_crs: bool,
                   chip: bool) -> RasterSource | InputError:
    """The source (planned from its STAC item, else opened), or the :class:`InputError` that says why not."""
    try:
        if isinstance(path, StacPath) and path.grid is not None and path.grid.complete and not chip:
            return planned_source(path, path.grid, bands)
        return open_source(path, bands, allow_no_crs, chip)
    except InputError as exc:
        return exc


def planned_source(path: StacPath, grid: ItemGrid, bands: Sequence[int] | None = None) -> RasterSource:
    """A :class:`RasterSource` from its STAC item's metadata, without opening the file.

    Its fingerprint is the file's (two small reads of a local file, the name of a remote one, as
    :func:`~rsprune_geo.reading.sources.open_source` takes it); its validity is looked up when a
    window task opens it, which also checks the file against the metadata (``planned``).

    Args:
        path: the item's raster path.
        grid: what the item's metadata says of it (complete).
        bands: the bands asked for; ``None`` for the first three, or the one.

    Returns:
        The source: its size, CRS, transform, bands and data type as the item says.

    Raises:
        InputError: the item's data type is not supported, or the bands asked for are not there.
    """
    from rasterio.crs import CRS

    count = int(grid.count or 1)
    chosen = tuple(bands) if bands else ((1, 2, 3) if count >= 3 else (1,))
    if str(grid.dtype) not in SUPPORTED_DTYPES:
        raise InputError(f"{path}: item {path.item_id}'s data type {grid.dtype} is not supported (use one of "
                         f"{', '.join(SUPPORTED_DTYPES)})")
    if max(chosen) > count:
        raise InputError(f"{path}: band {max(chosen)} asked for, but item {path.item_id} has "
                         f"{counted(count, 'band')}")
    return RasterSource(
        path=str(path), width=grid.width, height=grid.height, count=count, dtype=str(grid.dtype),
        crs=CRS.from_user_input(grid.crs), transform=Affine(*grid.transform[:6]), bands=chosen, nodata=grid.nodata,
        mask_mode=MaskMode.FILE, alpha_band=None, block_shape=(512, 512), overviews=(),
        fingerprint=file_fingerprint(str(path)), key=source_key(str(path)),
        date_tags=(("STAC item datetime", path.datetime),) if path.datetime else (), stac_item=path.item_id,
        stac_href=path.item_href, planned=True)


def distinct(sources: Sequence[RasterSource], name: str) -> list:
    """The distinct values of a field the sources may share (``crs``, ``dtype``, ``bands``…).

    In order of appearance; a :class:`SourceTable` knows them without building its sources.
    """
    if isinstance(sources, SourceTable):
        return sources.distinct(name)
    values: list = []
    for source in sources:
        value = getattr(source, name)
        if not any(value is v or value == v for v in values):
            values.append(value)
    return values


#: The fields of consecutive sources that are often equal (a folder of chips), held once.
_SHAREABLE = ("dtype", "crs", "transform", "bands", "mask_mode", "block_shape", "overviews", "date_tags")


def _shared_values(sources: list[RasterSource]) -> list[RasterSource]:
    """The sources, with values equal to the previous source's shared.

    The sources, each value equal to the previous source's (its CRS, transform, bands…) held as the same
    object: a folder of a million chips holds one of each, not a million.
    """
    out = sources[:1]
    for source in sources[1:]:
        previous = out[-1]
        same = {name: getattr(previous, name) for name in _SHAREABLE
                if getattr(previous, name) is not getattr(source, name)
                and getattr(previous, name) == getattr(source, name)}
        out.append(replace(source, **same) if same else source)
    return out
