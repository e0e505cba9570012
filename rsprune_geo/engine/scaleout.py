"""Scale-out: the per-tile work of both stages on local threads or a Dask cluster."""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any

from ..errors import InputError, counted, require_extra

if TYPE_CHECKING:  # pragma: no cover
    from distributed import Future

log = logging.getLogger(__name__)


@contextlib.contextmanager
def dask_client(address: str | None = None, workers: int | None = None) -> Iterator[Any | None]:
    """A ``distributed.Client`` for the run, or ``None`` to work on local threads.

    ``address``: an existing scheduler (``tcp://host:8786``); ``workers``: start a
    ``LocalCluster`` of that many single-threaded worker processes. The dashboard link is
    logged. Tasks lost with a dying worker are retried by Dask on the others.
    """
    if not address and not workers:
        yield None
        return
    require_extra("distributed", "cluster", "`dask_address`/`workers` (a Dask cluster)")
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.admin.low-level-log-length": MESSAGE_LOG_LENGTH}):
        yield from _client(Client, LocalCluster, address, workers)


#: How many recent messages each of Dask's connections keeps for debugging (Dask's default, 1000,
#: keeps every window task's arguments, the per-window decisions among them, alive on the driver:
#: about 45 bytes a tile of a million-tile run).
MESSAGE_LOG_LENGTH = 10


def _client(Client: Any, LocalCluster: Any, address: str | None, workers: int | None) -> Iterator[Any]:
    """The body of :func:`dask_client`, under its Dask configuration."""
    cluster = None
    try:
        if address:
            client = Client(address, timeout="20s")
        else:
            assert workers is not None
            if workers < 1:
                raise InputError(f"`workers` {workers}: must be at least 1")
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                   dashboard_address=":0", silence_logs=40)
            client = Client(cluster)
    except OSError as exc:
        raise InputError(f"cannot reach the Dask scheduler {address} ({exc})") from None
    try:
        link = getattr(client, "dashboard_link", None)
        n = len(client.scheduler_info().get("workers", {}))
        log.info("dask: %s at %s%s", counted(n, "worker"), getattr(client.scheduler, "address", address),
                 f", dashboard {link}" if link else "")
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def map_tasks(func: Callable[..., Any], tasks: Iterable[tuple], client: Any | None = None,
              threads: int | None = None, broadcast: dict[str, object] | None = None,
              processes: bool = False, in_flight: int | None = None) -> Iterator[tuple[int, Any]]:
    """Run ``func(*task, **broadcast)`` for every task; yield ``(index, result)`` as each finishes.

    With a ``distributed.Client`` the tasks run on its workers (``broadcast`` values, such as an
    encoder, are sent to every worker once); otherwise on ``threads`` local threads (default:
    one per core; 1 runs them in this thread, in order), or local processes with ``processes``.
    Tasks are taken from ``tasks`` as others finish, at most ``in_flight`` at a time (default:
    four per worker or thread), so their arguments are never all held at once.
    """
    broadcast = broadcast or {}
    if client is not None:
        from distributed.client import FutureCancelledError

        def scatter() -> dict[str, Future]:
            # a fresh key for each value (hash=False): a value scattered again under the key of one just
            # released (the same spec in the next pass) can have its tasks cancelled (dask/distributed#3703)
            return {key: client.scatter(value, broadcast=True, hash=False) for key, value in broadcast.items()}

        shared = scatter()
        workers = max(1, len(client.scheduler_info().get("workers", {})))

        def submit(task: tuple) -> Any:
            return client.submit(func, *task, pure=False, **shared)

        def again(task: tuple, error: BaseException) -> Any:
            # the scheduler cancels a task whose inputs it lost, as when a worker dies while the values
            # are scattered: they are scattered again and the task sent again
            if not isinstance(error, FutureCancelledError):
                raise error
            if any(future.status != "finished" for future in shared.values()):  # not sent again yet
                log.warning("dask: a task's inputs were lost with a worker (%s); sending them and the task "
                            "again", error.reason)
                shared.update(scatter())
            return submit(task)

        yield from _bounded(tasks, submit, _first_done_dask, in_flight or 4 * workers, release=True, retry=again)
        return
    threads = threads or os.cpu_count() or 1
    if threads == 1 and not processes:
        for i, task in enumerate(tasks):
            yield i, func(*task, **broadcast)
        return
    # processes are spawned, never forked: a fork copies the run's thread pools and locks (GDAL's,
    # onnxruntime's) in whatever state they are, and the child can wait on them for ever
    executor: Any = (ProcessPoolExecutor(max_workers=threads, mp_context=multiprocessing.get_context("spawn"))
                     if processes else ThreadPoolExecutor(max_workers=threads))
    call = functools.partial(_star, func, broadcast)
    with executor as pool:
        yield from _bounded(tasks, lambda task: pool.submit(call, task), _first_done, in_flight or 4 * threads)


def _bounded(tasks: Iterable[tuple], submit: Callable[[tuple], Any], wait_first: Callable,
             limit: int, release: bool = False, retry: Callable[[tuple, BaseException], Any] | None = None,
             tries: int = 3) -> Iterator[tuple[int, Any]]:
    """Submit tasks as others finish (at most ``limit`` running).

    Yield ``(index, result)`` as each finishes. ``wait_first(futures)`` returns the finished ones. A
    task whose future was cancelled is handed to ``retry(task, error)``, which sends it again (its new
    future) or raises, ``tries`` times at most.
    """
    pending = enumerate(tasks)
    running: dict[Any, tuple[int, tuple, int]] = {}  # future -> (index, task, tries so far)
    for i, task in itertools.islice(pending, limit):
        running[submit(task)] = (i, task, 0)
    try:
        while running:
            for future in wait_first(list(running)):
                i, task, tried = running.pop(future)
                if retry is not None and future.cancelled() and tried < tries:
                    try:
                        future.result()
                    except BaseException as error:  # noqa: BLE001 - retry decides: again or raise
                        running[retry(task, error)] = (i, task, tried + 1)
                        continue
                result = future.result()
                if release:
                    future.release()
                for j, next_task in itertools.islice(pending, 1):
                    running[submit(next_task)] = (j, next_task, 0)
                yield i, result
    finally:
        for future in running:
            future.cancel()


def _first_done(futures: list) -> set:
    """The finished ones of local futures (waiting for one at least)."""
    return wait(futures, return_when=FIRST_COMPLETED).done


def _first_done_dask(futures: list) -> set:
    """The finished ones of Dask futures (waiting for one at least), cancelled ones included."""
    from distributed import wait as dask_wait
    from distributed.client import FuturesCancelledError

    try:
        return dask_wait(futures, return_when="FIRST_COMPLETED").done
    except FuturesCancelledError:  # distributed's wait raises when one was cancelled: hand it over
        return {future for future in futures if future.status != "pending"}


def _star(func: Callable[..., Any], broadcast: dict[str, object], task: tuple) -> Any:
    """``func(*task, **broadcast)``, as a picklable call for process pools."""
    return func(*task, **broadcast)


class Periodic:
    """Says when more than ``seconds`` have passed since it last said so (or since it was made)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds, self.clock = seconds, clock
        self.last = clock()

    def due(self) -> bool:
        """Whether the period has passed; the period starts again when it has."""
        now = self.clock()
        if now - self.last > self.seconds:
            self.last = now
            return True
        return False


def release_freed_memory() -> None:
    """Give the memory the process has freed back to the system.

    It calls glibc's ``malloc_trim``, as Dask's workers do, and does nothing elsewhere. Otherwise the
    freed pages the threads' malloc arenas keep stay in the driver's resident memory, and grow with the
    run's tiles.
    """
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
