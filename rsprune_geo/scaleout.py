"""Scale-out: the per-tile work of both stages on local threads or a Dask cluster."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from .errors import InputError

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
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise InputError("`dask_address`/`workers` need the `distributed` package") from None
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
        log.info("dask: %d worker(s) at %s%s", n, getattr(client.scheduler, "address", address),
                 f", dashboard {link}" if link else "")
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def map_tasks(func: Callable[..., Any], tasks: Sequence[tuple], client: Any | None = None,
              threads: int | None = None, broadcast: dict[str, Any] | None = None,
              processes: bool = False) -> Iterator[tuple[int, Any]]:
    """Run ``func(*task, **broadcast)`` for every task; yield ``(index, result)`` as each finishes.

    With a ``distributed.Client`` the tasks run on its workers (``broadcast`` values, such as an
    encoder, are sent to every worker once); otherwise on ``threads`` local threads (default:
    one per core; 1 runs them in this thread, in order), or local processes with ``processes``.
    """
    broadcast = broadcast or {}
    if not tasks:
        return
    if client is not None:
        from distributed import as_completed as dask_completed

        shared = {key: client.scatter(value, broadcast=True) for key, value in broadcast.items()}
        futures = {client.submit(func, *task, pure=False, **shared): i for i, task in enumerate(tasks)}
        for future in dask_completed(futures):
            yield futures[future], future.result()
        return
    threads = threads or os.cpu_count() or 1
    if processes:
        import functools
        from concurrent.futures import ProcessPoolExecutor

        call = functools.partial(_star, func, broadcast)
        with ProcessPoolExecutor(max_workers=threads) as pool:
            running = {pool.submit(call, task): i for i, task in enumerate(tasks)}
            for future in as_completed(running):
                yield running[future], future.result()
        return
    if threads == 1 or len(tasks) == 1:
        for i, task in enumerate(tasks):
            yield i, func(*task, **broadcast)
        return
    with ThreadPoolExecutor(max_workers=threads) as pool:
        running = {pool.submit(func, *task, **broadcast): i for i, task in enumerate(tasks)}
        try:
            for future in as_completed(running):
                yield running[future], future.result()
        finally:
            for future in running:
                future.cancel()


def _star(func: Callable[..., Any], broadcast: dict[str, Any], task: tuple) -> Any:
    """``func(*task, **broadcast)``, as a picklable call for process pools."""
    return func(*task, **broadcast)
