"""Scale-out: run the per-tile stages on a Dask cluster (an address, or a LocalCluster)."""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator

from .errors import InputError


@contextlib.contextmanager
def dask_client(address: str | None = None, workers: int | None = None,
                announce: bool = True) -> Iterator[object | None]:
    """A ``distributed.Client`` for the run, or ``None`` for Dask's local schedulers.

    ``address``: an existing scheduler (``tcp://host:8786``); ``workers``: start a
    ``LocalCluster`` of that many single-threaded worker processes. The dashboard link is
    printed on stderr. Tasks lost with a dying worker are retried by Dask on the others.
    """
    if not address and not workers:
        yield None
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise InputError("--dask-address/--workers need the `distributed` package") from None
    cluster = None
    try:
        if address:
            client = Client(address, timeout="20s")
        else:
            if workers < 1:
                raise InputError(f"--workers {workers}: must be at least 1")
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                   dashboard_address=":0", silence_logs=40)
            client = Client(cluster)
    except OSError as exc:
        raise InputError(f"cannot reach the Dask scheduler {address} ({exc})") from None
    try:
        if announce:
            link = getattr(client, "dashboard_link", None)
            n = len(client.scheduler_info().get("workers", {}))
            print(f"dask: {n} worker(s) at {client.scheduler.address}"
                  + (f", dashboard {link}" if link else ""), file=sys.stderr)
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
