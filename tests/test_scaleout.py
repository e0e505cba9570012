"""Scale-out on a real Dask LocalCluster: same results as the local schedulers, and a worker
killed mid-run loses and duplicates nothing."""

import os
import signal
import subprocess
import threading
import time

import pytest

import rsprune_geo
from rsprune_geo.errors import InputError
from rsprune_geo.fixtures.demo import DemoSpec, write_demo_mosaic, write_prior_bank

from . import gates

distributed = pytest.importorskip("distributed")  # a dependency: present in `make test`
import cloudpickle  # noqa: E402 - with dask

cloudpickle.register_pickle_by_value(gates)  # the gates reach the workers as they are


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    return {"root": root, "mosaic": str(write_demo_mosaic(root / "m.tif", DemoSpec(size=1024, seed=5))),
            "bank": str(write_prior_bank(root / "bank", per_class=4))}


def options(data, cache):
    return dict(tile_size=64, keep=0.1, prior_bank=(data["bank"],), encoder="rcf-empirical",
                cache_dir=str(data["root"] / cache), group_px=256, batch_size=8)


def comparable(result):
    return result.tiles[["tile_id", "status", "cluster", "entropy", "nodata_fraction", "b1_mean"]]


def test_local_cluster_of_two_processes_gives_the_same_run(data):
    local = rsprune_geo.run([data["mosaic"]], scheduler="sync", **options(data, "c-local"))
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=":0", silence_logs=40)
    client = distributed.Client(cluster)
    try:
        with distributed.get_task_stream(client) as stream:
            on_cluster = rsprune_geo.run([data["mosaic"]], dask_address=cluster.scheduler_address,
                                         **options(data, "c-cluster"))
        workers = set(client.scheduler_info()["workers"])
    finally:
        client.close()
        cluster.close()
    assert comparable(local).equals(comparable(on_cluster))
    # the work ran on the workers: the window tasks (read, score, encode, write a part) and the
    # decisions written back part by part
    ran = {(task["key"][0] if isinstance(task["key"], tuple) else task["key"]).rsplit("-", 1)[0]: task["worker"]
           for task in stream.data}
    assert any(name.startswith("run_task") for name in ran) and any(
        name.startswith("update_part") for name in ran), sorted(ran)
    assert set(ran.values()) <= workers


def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(data, monkeypatch):
    monkeypatch.setattr("rsprune_geo.reading.grid.TASK_MIN_TILES", 1)  # a task per row band: many to lose
    baseline = rsprune_geo.run([data["mosaic"]], scheduler="sync", **options(data, "c-base"))
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=":0", silence_logs=40)
    client = distributed.Client(cluster)
    flag = str(data["root"] / "c-kill-go-on")
    # each worker waits after its first shard until a worker is killed: the run cannot end first
    client.run(gates.install, "rsprune_geo.features.cache:EmbeddingCache.store", 1, flag)
    try:
        outcome = {}

        def work():
            try:
                outcome["result"] = rsprune_geo.run([data["mosaic"]], dask_address=cluster.scheduler_address,
                                                    **options(data, "c-kill"))
            except Exception as exc:  # reported below
                outcome["error"] = exc

        thread = threading.Thread(target=work)
        thread.start()
        shards = data["root"] / "c-kill" / "embeddings"
        deadline = time.time() + 240
        while len(list(shards.glob("*/*/shard-*.ids.npy"))) < 2 and thread.is_alive() and time.time() < deadline:
            time.sleep(0.02)
        assert thread.is_alive(), "the run ended before a worker could be killed"
        pids = client.run(os.getpid)
        busy = [address for address, keys in client.processing().items() if keys] or list(pids)
        os.kill(pids[busy[0]], signal.SIGKILL)
        gates.open_gate(flag)
        thread.join(timeout=300)
        assert "error" not in outcome, outcome.get("error")
        result = outcome["result"]
        assert result.tiles.tile_id.is_unique and len(result.tiles) == len(baseline.tiles)
        assert comparable(result).equals(comparable(baseline))
        # the killed worker's tasks were handed to the survivor: some task went to "processing" twice
        log = client.run_on_scheduler(
            lambda dask_scheduler: [(str(entry[0]), entry[2]) for entry in dask_scheduler.transition_log])
        starts: dict[str, int] = {}
        for key, finish in log:
            if finish == "processing":
                starts[key] = starts.get(key, 0) + 1
        assert any(n > 1 for n in starts.values()), "no task was retried after the worker died"
    finally:
        client.close()
        cluster.close()


def test_unreachable_scheduler_is_a_clear_error(data):
    with pytest.raises(InputError, match="cannot reach the Dask scheduler"):
        rsprune_geo.run([data["mosaic"]], dask_address="tcp://127.0.0.1:9")


def test_progress_json_under_a_dask_cluster(data, tmp_path):
    import json
    import subprocess
    import sys

    opts = options(data, "c-json")
    proc = subprocess.run([sys.executable, "-m", "rsprune_geo.cli", "run", data["mosaic"], "-o",
                           str(tmp_path / "j.gpkg"), "--tile-size", "64", "--keep", "0.1", "--prior-bank",
                           data["bank"], "--encoder", opts["encoder"], "--cache-dir", opts["cache_dir"],
                           "--workers", "2", "--progress-json"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = [json.loads(line) for line in proc.stderr.splitlines()]  # every stderr line is an event
    stages = {e["stage"] for e in events if e["event"] == "progress"}
    assert {"prior_bank", "stage1", "selection", "writing"} <= stages and events[-1]["event"] == "ok"


def _started(command: list[str], log) -> subprocess.Popen:
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def test_a_real_cluster_on_the_loopback_loses_a_worker_and_selects_the_same(data, tmp_path, monkeypatch):
    """A ``dask scheduler`` and two ``dask worker`` processes started from the command line; a run
    with ``dask_address`` writes a run folder; one worker is killed mid-run. The selection equals a
    local run's, and the driver wrote no file the workers could write: every part of the tile
    table, the decisions written back and the GeoPackage are renamed into place by a worker."""
    import sys
    from pathlib import Path

    dask = str(Path(sys.executable).with_name("dask"))
    scheduler_file = tmp_path / "scheduler.json"
    log = open(tmp_path / "cluster.log", "w")  # noqa: SIM115 - closed with the processes
    scheduler = _started([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                          "--scheduler-file", str(scheduler_file)], log)
    workers = []
    try:
        deadline = time.time() + 60
        while not scheduler_file.exists() and time.time() < deadline:
            time.sleep(0.1)
        workers = [_started([dask, "worker", "--scheduler-file", str(scheduler_file), "--nthreads", "1",
                             "--no-dashboard", "--host", "127.0.0.1", "--memory-limit", "0", "--no-nanny"], log)
                   for _ in range(2)]
        client = distributed.Client(scheduler_file=str(scheduler_file), timeout="60s")
        client.wait_for_workers(2, timeout=120)
        address = client.scheduler.address
        flag = str(tmp_path / "go-on")
        # each worker waits after its second part until one is killed: the run cannot end first
        client.run(gates.install, "rsprune_geo.engine.window:write_part", 2, flag)
        client.close()

        renamed: list[str] = []
        real_replace = os.replace
        monkeypatch.setattr(os, "replace", lambda a, b: renamed.append(str(b)) or real_replace(a, b))
        # a task a window, so that the fourth part is written early in the pass, not at its end
        monkeypatch.setattr("rsprune_geo.reading.grid.TASK_MIN_TILES", 1)
        opts = dict(options(data, "c-real"), tile_size=32, group_px=128)
        outcome: dict = {}

        def work():
            try:
                outcome["result"] = rsprune_geo.run([data["mosaic"]], tmp_path / "run", dask_address=address,
                                                    **opts)
            except Exception as exc:  # reported below
                outcome["error"] = exc

        thread = threading.Thread(target=work)
        thread.start()
        deadline = time.time() + 240
        while len(list(tmp_path.glob(".rsprune-*.tmp.parts/tiles/part-*.parquet"))) < 4 and thread.is_alive() \
                and time.time() < deadline:
            time.sleep(0.02)
        assert thread.is_alive(), "the run ended before a worker could be killed"
        workers[0].send_signal(signal.SIGKILL)
        gates.open_gate(flag)
        thread.join(timeout=400)
        assert "error" not in outcome, outcome.get("error")
        result = outcome["result"]
        monkeypatch.undo()
    finally:
        for process in [*workers, scheduler]:
            process.kill()
            process.wait()
        log.close()
    assert result.output == tmp_path / "run" and (tmp_path / "run" / "tiles.gpkg").exists()
    local = rsprune_geo.run([data["mosaic"]], scheduler="sync", **dict(options(data, "c-real-local"), tile_size=32,
                                                                       group_px=128))
    a = result.tiles.set_index("tile_id").sort_index()
    b = local.tiles.set_index("tile_id").sort_index()
    assert a.index.is_unique and a[["status", "reason", "cluster", "cluster_rank"]].equals(
        b[["status", "reason", "cluster", "cluster_rank"]])
    written_here = [name for name in renamed if name.endswith((".parquet", ".gpkg"))]
    assert written_here == [], written_here  # parts, decisions and the GeoPackage: all by the workers


def test_the_drivers_dask_connections_keep_no_backlog_of_task_arguments():
    """Dask's connections keep their last 1000 messages for debugging by default; on the driver
    those hold every window task's arguments (the per-window decisions of the write-back among
    them), tens of bytes a tile of a large run. The run's client keeps a short log."""
    import dask

    from rsprune_geo.engine.scaleout import MESSAGE_LOG_LENGTH, dask_client, map_tasks

    with dask_client(workers=1) as client:
        assert dask.config.get("distributed.admin.low-level-log-length") == MESSAGE_LOG_LENGTH
        payloads = [(bytes(50_000),) for _ in range(3 * MESSAGE_LOG_LENGTH)]
        assert [r for _, r in map_tasks(len, payloads, client)] == [50_000] * len(payloads)
        log = client.scheduler_comm.recent_message_log
        assert log.maxlen == MESSAGE_LOG_LENGTH and len(log) <= MESSAGE_LOG_LENGTH
    assert dask.config.get("distributed.admin.low-level-log-length") == 1000  # Dask's own, outside the run


def _plus_first(x: int, value) -> int:
    return x + int(value[0])


def test_the_same_value_broadcast_pass_after_pass_never_cancels_a_task():
    """A run broadcasts the same values (its pass spec, its write-back context) in one pass after
    another; scattered under a key derived from the value, a value sent again as the previous
    pass released it had its tasks cancelled (about a third of 60 tries, dask/distributed#3703)."""
    import numpy as np

    from rsprune_geo.engine.scaleout import dask_client, map_tasks

    with dask_client(workers=2) as client:
        for i in range(30):
            value = np.arange(1, 4) * (i % 2 + 1)
            for _ in range(2):
                got = dict(map_tasks(_plus_first, [(k,) for k in range(8)], client, broadcast={"value": value}))
                assert got == {k: k + i % 2 + 1 for k in range(8)}


def test_tasks_whose_scattered_inputs_were_lost_are_sent_again_with_them():
    """A worker that dies while a value is scattered to it can take the only copy with it; the
    scheduler then cancels every task that needs it ("lost dependencies"), and the run failed
    with FuturesCancelledError. Here the first scatter's copy is dropped on purpose: the tasks
    are cancelled, the value scattered again and the tasks sent again, once each."""
    import numpy as np

    from rsprune_geo.engine.scaleout import dask_client, map_tasks

    with dask_client(workers=1) as client:
        real_scatter, scattered = client.scatter, []

        def losing_the_first(value, **kwargs):
            future = real_scatter(value, **kwargs)
            scattered.append(future)
            if len(scattered) == 1:
                client.cancel(future)  # the scheduler forgets it, as when its workers are gone
            return future

        client.scatter = losing_the_first
        got = dict(map_tasks(_plus_first, [(k,) for k in range(6)], client, broadcast={"value": np.array([5])}))
    assert got == {k: k + 5 for k in range(6)} and len(scattered) == 2
