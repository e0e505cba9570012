"""A pass over the run's windows.

Every task read once, its compact columns gathered into the driver's
:class:`~rsprune_geo.engine.columns.TileColumns`.

On a Dask cluster each task runs whole on a worker (read, score, resize, encode, write its part),
a bounded number of tasks in flight. Locally, reader threads read, score and resize window after
window while the run's thread encodes them in batches sized for the runtime, so decoding
overlaps inference and the encoder keeps every core it asks for.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..choices import Scheduler
from ..features.base import Encoder
from ..progress import ProgressCallback, no_progress
from ..reading.grid import RunGrid, TaskTiles
from ..reading.pixels import Scaling
from ..stages.clustering import SceneCentroids
from .columns import TileColumns
from .scaleout import Periodic, map_tasks, release_freed_memory
from .window import Encode, PassSpec, WindowWork, encode_works, window_works


@dataclass
class Encoding:
    """What a pass encodes with.

    Stage 2's ``encoder`` and the prior bank's ``centroids``, which tiles (``what``), and where their
    vectors go when the run keeps them (``on_vectors``).
    """

    encoder: Encoder
    centroids: SceneCentroids
    what: Encode = Encode.PASSED
    on_vectors: Callable[[np.ndarray, np.ndarray], None] | None = None


#: Windows read ahead of the encoder, at most (memory: one window's images each).
READ_AHEAD = 8
#: Images a local pass hands an onnxruntime encoder at once (measured: 128 keeps two cores busy
#: while a reader thread decodes; 32 leaves a fifth of the encoder's speed unused).
ONNX_BATCH = 128
#: Tasks in flight on a Dask cluster per worker.
TASKS_PER_WORKER = 4
#: Seconds between two releases of freed memory while a pass runs (see :func:`release_freed_memory`).
RELEASE_EVERY_S = 5.0


def run_pass(grid: RunGrid, scalings: Sequence[Scaling], spec: PassSpec, columns: TileColumns,
             encoder: Encoder | None = None, centroids: SceneCentroids | None = None, client: Any | None = None,
             on_progress: ProgressCallback = no_progress, wanted: np.ndarray | None = None,
             on_vectors: Callable[[np.ndarray, np.ndarray], None] | None = None,
             scheduler: Scheduler | str = Scheduler.THREADS) -> list[tuple[str, str]]:
    """Run every window task and gather the columns.

    With ``wanted``, a second pass encodes those positions. The columns are stage 1's status, reason,
    entropy and ground cell (a first pass), each encoded tile's cluster and distance, and its vectors
    through ``on_vectors(positions, vectors)`` when ``spec.vectors``. Locally, ``scheduler`` says how:
    reader threads with the encoder on this thread (``threads``), whole tasks in processes
    (``processes``), or everything in this thread (``sync``). Progress: ``stage1`` in a first pass,
    ``encoding`` in a second, in tiles, as each task finishes. Returns the windows that could not be
    read, as ``(path, message)`` (their tiles are ``nodata``; see :class:`PassSpec`'s ``strict``).
    """
    scheduler = Scheduler.parse(scheduler, "scheduler")
    tasks, total = grid.tasks, grid.count
    if wanted is not None:
        owner = np.zeros(grid.size, dtype=bool)
        owner[wanted] = True
        tasks, total = [], 0
        for task in grid.tasks:
            positions = grid.task_positions(task)
            if owner[positions].any():
                tasks.append(task)
                total += positions.size
    stage = "stage1" if wanted is None else "encoding"
    on_progress(stage, 0, total)
    done, unreadable = 0, []
    if client is not None:
        works = _on_cluster(grid, tasks, scalings, spec, encoder, centroids, client, wanted)
    elif scheduler is Scheduler.THREADS:
        works = _locally(grid, tasks, scalings, spec, encoder, centroids, wanted)
    else:
        works = _in_processes(grid, tasks, scalings, spec, encoder, centroids, wanted,
                              processes=scheduler is Scheduler.PROCESSES)
    release = Periodic(RELEASE_EVERY_S)
    for item in works:
        if item is None:  # a task finished: its tiles counted (a task of chips holds many windows)
            on_progress(stage, done, total)
            if release.due():  # what the readers freed, now and then
                release_freed_memory()
            continue
        _gather(item, columns, first=wanted is None, on_vectors=on_vectors)
        done += item.positions.size
        if item.error is not None:
            unreadable.append(item.error)
    on_progress(stage, done, total)  # a task's end can be told before its last windows are encoded
    return unreadable


def _gather(work: WindowWork, columns: TileColumns, first: bool,
            on_vectors: Callable[[np.ndarray, np.ndarray], None] | None) -> None:
    """Put a window's columns in the driver's."""
    positions = work.positions
    if first:
        columns.status[positions] = work.status
        columns.reason[positions] = work.reason
        columns.entropy[positions] = work.entropy
        columns.cell[positions] = work.cell
    if work.cluster is not None:
        encoded = positions[work.encode]
        columns.cluster[encoded] = work.cluster
        columns.distance[encoded] = work.distance
        if on_vectors is not None and work.vectors is not None:
            on_vectors(encoded, work.vectors)


def run_task(tiles: Sequence[TaskTiles], scalings: Sequence[Scaling], wanted: np.ndarray | None,
             spec: PassSpec | None = None, encoder: Encoder | None = None,
             centroids: SceneCentroids | None = None) -> list[WindowWork]:
    """A whole task where it runs (a Dask worker).

    Each window read, scored, encoded and assigned; what travels back is the windows' compact columns
    (and vectors when the pass keeps them).
    """
    assert spec is not None
    out: list[WindowWork] = []
    pending: list[WindowWork] = []
    size = run_batch_size(encoder) if encoder is not None and centroids is not None else 0

    def flush() -> None:
        if pending and encoder is not None and centroids is not None:
            encode_works(pending, encoder, centroids, spec)
        for work in pending:
            work.images = None
        out.extend(pending)
        pending.clear()

    for work in window_works(tiles, scalings, spec, wanted):  # small windows (chips) encoded in batches
        pending.append(work)
        if sum(len(w.images) for w in pending if w.images is not None) >= size:
            flush()
    flush()
    return out


def _task_wanted(tiles: Sequence[TaskTiles], wanted: np.ndarray | None) -> np.ndarray | None:
    """The wanted positions that are this task's."""
    if wanted is None:
        return None
    mine = np.concatenate([member.positions for member in tiles])
    return mine[np.isin(mine, wanted)]


def _on_cluster(grid: RunGrid, tasks, scalings, spec: PassSpec, encoder, centroids, client,
                wanted) -> Iterator[WindowWork | None]:
    """The tasks on a Dask cluster.

    A bounded number in flight (the encoder and centroids sent to each worker once); a task lost with a
    worker is run again by Dask on another.
    """
    encode = encoder is not None and centroids is not None and (spec.encode is not Encode.NONE or wanted is not None)
    shared: dict[str, object] = {"spec": spec}
    if encode:
        shared.update(encoder=encoder, centroids=centroids)

    def arguments():
        for task in tasks:
            tiles = grid.task_tiles(task)
            yield tiles, [scalings[source] for source in task.sources], _task_wanted(tiles, wanted)

    for _, works in map_tasks(run_task, arguments(), client, broadcast=shared,
                              in_flight=TASKS_PER_WORKER * _workers(client)):
        yield from works
        yield None


def _in_processes(grid: RunGrid, tasks, scalings, spec: PassSpec, encoder, centroids, wanted,
                  processes: bool) -> Iterator[WindowWork | None]:
    """Whole tasks in local processes (the encoder sent with each), or one after the other here."""
    encode = encoder is not None and centroids is not None and (spec.encode is not Encode.NONE or wanted is not None)
    shared: dict[str, object] = {"spec": spec, **({"encoder": encoder, "centroids": centroids} if encode else {})}

    def arguments():
        for task in tasks:
            tiles = grid.task_tiles(task)
            yield tiles, [scalings[source] for source in task.sources], _task_wanted(tiles, wanted)

    for _, works in map_tasks(run_task, arguments(), threads=None if processes else 1, broadcast=shared,
                              processes=processes):
        yield from works
        yield None


def _workers(client: Any) -> int:
    """How many workers a Dask client has."""
    return max(1, len(client.scheduler_info().get("workers", {})))


def _locally(grid: RunGrid, tasks, scalings, spec: PassSpec, encoder, centroids, wanted,
             readers: int | None = None) -> Iterator[WindowWork | None]:
    """The tasks on local reader threads; windows encoded here, in batches, as they come."""
    encode = encoder is not None and centroids is not None and (spec.encode is not Encode.NONE or wanted is not None)
    readers = readers or (max(1, (os.cpu_count() or 1) // 2) if encode else (os.cpu_count() or 1))
    inbox: queue.Queue = queue.Queue(maxsize=READ_AHEAD)
    stop = threading.Event()

    def read(task) -> None:
        try:
            tiles = grid.task_tiles(task)
            for work in window_works(tiles, [scalings[source] for source in task.sources], spec,
                                     _task_wanted(tiles, wanted)):
                _put(inbox, ("work", work), stop)
            _put(inbox, ("done", None), stop)
        except BaseException as exc:  # noqa: BLE001 - handed to the run's thread, which raises it
            _put(inbox, ("error", exc), stop)

    batch: list[WindowWork] = []
    size = run_batch_size(encoder) if encode else 0
    in_flight: deque[tuple[list[WindowWork], Future]] = deque()
    with ThreadPoolExecutor(max_workers=readers) as pool, ThreadPoolExecutor(max_workers=2) as encoding:
        futures = [pool.submit(read, task) for task in tasks]
        try:
            finished = 0
            while finished < len(tasks):
                kind, item = inbox.get()
                if kind == "error":
                    raise item
                if kind == "done":
                    finished += 1
                    yield None
                if kind == "work":
                    batch.append(item)
                held = sum(len(w.images) for w in batch if w.images is not None)
                # a short batch goes only to an idle encoder (windows of a tile or a few, as chips
                # are, would otherwise reach it one image at a time)
                idle = all(future.done() for _, future in in_flight)
                if batch and (not encode or held >= size or finished == len(tasks) or (idle and inbox.empty())):
                    if not encode:
                        yield from batch
                    else:  # two batches in flight: one is prepared while the other runs
                        in_flight.append((batch, encoding.submit(encode_works, batch, encoder, centroids, spec)))
                    batch = []
                while in_flight and (len(in_flight) > 1 or finished == len(tasks) or in_flight[0][1].done()):
                    done, future = in_flight.popleft()
                    future.result()
                    yield from done
        finally:
            stop.set()
            for future in futures:
                future.cancel()
            while not inbox.empty():
                inbox.get_nowait()


def _put(inbox: queue.Queue, item: tuple, stop: threading.Event) -> None:
    """Hand ``item`` to the run's thread, giving up when the run stops."""
    while not stop.is_set():
        try:
            inbox.put(item, timeout=0.1)
            return
        except queue.Full:
            continue
    raise _Stopped()


class _Stopped(Exception):
    """The run stopped: a reader thread leaves its task."""


def run_batch_size(encoder: Encoder) -> int:
    """Images handed to the encoder at once.

    On onnxruntime :data:`ONNX_BATCH` (it splits them over the cores, and two batches are in flight),
    else the encoder's own batch.
    """
    return max(encoder.batch_size, ONNX_BATCH) if encoder.runtime.onnx else encoder.batch_size
