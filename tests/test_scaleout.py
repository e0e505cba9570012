"""Scale-out on a real Dask LocalCluster: same results as the local schedulers, and a worker
killed mid-run loses and duplicates nothing."""

import os
import signal
import threading
import time

import pytest

import rsprune_geo
from rsprune_geo.errors import InputError
from rsprune_geo.fixtures.demo import DemoSpec, write_demo_mosaic, write_prior_bank

distributed = pytest.importorskip("distributed")  # a dependency: present in `make test`


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
    # the work ran on the workers: stage 1's windows and stage 2's encode-and-assign batches
    ran = {(task["key"][0] if isinstance(task["key"], tuple) else task["key"]).rsplit("-", 1)[0]: task["worker"]
           for task in stream.data}
    assert any(name.startswith("score_group") for name in ran) and any(
        name.startswith("encode_and_assign") for name in ran), sorted(ran)
    assert set(ran.values()) <= workers


def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(data):
    baseline = rsprune_geo.run([data["mosaic"]], scheduler="sync", **options(data, "c-base"))
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=":0", silence_logs=40)
    client = distributed.Client(cluster)
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
        os.kill(next(iter(pids.values())), signal.SIGKILL)
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
    assert {"stage1", "encoding", "writing"} <= stages and events[-1]["event"] == "ok"
