"""Extraction on a Dask cluster (run.cluster / extract --cluster): a local cluster of two worker
processes writes the features of a local run, loads the backend once per worker, and redoes
the images of a worker killed in the middle of the run."""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Dict

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from landmark_retrieval.backends import cluster as lr_cluster  # noqa: E402
from landmark_retrieval.backends.cluster import DaskEngine  # noqa: E402
from landmark_retrieval.cli import main  # noqa: E402
from landmark_retrieval.demo import DemoSpec, build_demo_dataset  # noqa: E402
from landmark_retrieval.extract import extract  # noqa: E402
from landmark_retrieval.io.store import FeatureStore  # noqa: E402
from landmark_retrieval.presets import get_config  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform != "linux", reason="kills a worker process")]

ARTIFACTS = ("retrieval.h5", "verification.csv")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        lr_cluster.disconnect()  # the CLI's connection to this cluster
        client.close()
        cluster.close()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return build_demo_dataset(tmp_path_factory.mktemp("cluster") / "data", DemoSpec(seed=5))  # 39 train, 40 test


@pytest.fixture(scope="module")
def local_run(dataset, tmp_path_factory) -> Dict[str, object]:
    root = tmp_path_factory.mktemp("local")
    t0 = time.perf_counter()
    extract(get_config("demo"), dataset, root / "work")
    seconds = time.perf_counter() - t0
    assert main(["run", "--data", str(dataset), "--work", str(root / "work"), "--out", str(root / "submission.csv"),
                 "--preset", "demo", "--workers", "1", "-q"]) == 0
    out: Dict[str, object] = {name: (root / "work" / name).read_bytes() for name in ARTIFACTS}
    out["submission.csv"] = (root / "submission.csv").read_bytes()
    out["work"], out["seconds"] = root / "work", seconds
    return out


def assert_same_features(a: Path, b: Path) -> None:
    for split in ("train", "test"):
        with FeatureStore(a / "features" / split) as x, FeatureStore(b / "features" / split) as y:
            assert sorted(x.local_ids) == sorted(y.local_ids) and x.failures == y.failures
            for image_id in x.local_ids:
                fx, fy = x.local(image_id), y.local(image_id)
                for name in ("keypoints", "descriptors", "scores", "scales"):
                    assert np.array_equal(getattr(fx, name), getattr(fy, name)), (split, image_id, name)
                assert fx.image_size == fy.image_size
            ids, gx = x.globals(sorted(x.global_ids))
            ids_y, gy = y.globals(ids)
            assert ids_y == ids and sorted(y.global_ids) == ids and np.array_equal(gx, gy)
        assert (a / "features" / split / "meta.json").read_text() == (b / "features" / split / "meta.json").read_text()


def run_on(dataset: Path, work: Path, out: Path) -> None:
    assert main(["run", "--data", str(dataset), "--work", str(work), "--out", str(out), "--preset", "demo",
                 "--workers", "1", "--set", "run.cluster=none", "-q"]) == 0


def test_cluster_extraction_is_the_local_one(client, dataset, local_run, tmp_path, capsys):
    work = tmp_path / "work"
    t0 = time.perf_counter()
    assert main(["extract", "--data", str(dataset), "--work", str(work), "--preset", "demo",
                 "--cluster", client.scheduler.address]) == 0
    seconds = time.perf_counter() - t0
    print(f"\nextract: local {local_run['seconds']:.2f} s, on 2 Dask workers {seconds:.2f} s")
    assert_same_features(local_run["work"], work)
    assert client.run(lr_cluster.loaded_backends) == {w: 1 for w in client.nthreads()}  # once per worker
    assert sorted(p.name[:6] for p in (work / "features" / "train").glob("part-*.h5"))[0] == "part-c"
    run_on(dataset, work, tmp_path / "submission.csv")
    for name in ARTIFACTS:
        assert (work / name).read_bytes() == local_run[name], name
    assert (tmp_path / "submission.csv").read_bytes() == local_run["submission.csv"]


def test_a_killed_worker_s_images_are_redone(client, dataset, local_run, tmp_path):
    client.wait_for_workers(2)
    pids = client.run(os.getpid)
    work = tmp_path / "work"
    store = work / "features" / "train"
    killed: Dict[str, object] = {}

    def kill_a_busy_worker() -> None:  # once the first chunk is in, kill a worker in the middle of one
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            if store.is_dir() and any(store.glob("part-c*.h5")):
                busy = [w for w, keys in client.processing().items() if keys and w in pids]
                if busy:
                    killed["worker"], killed["keys"] = busy[0], client.processing()[busy[0]]
                    os.kill(pids[busy[0]], signal.SIGKILL)
                    return
            time.sleep(0.005)

    killer = threading.Thread(target=kill_a_busy_worker)
    killer.start()
    try:
        extract(get_config("demo"), dataset, work, engine=DaskEngine(client, chunk_size=2))
    finally:
        killer.join()
    assert killed, "no worker was killed"
    assert pids[killed["worker"]] not in client.run(os.getpid).values()  # it did die (its nanny restarts one)
    assert_same_features(local_run["work"], work)
    run_on(dataset, work, tmp_path / "submission.csv")
    for name in ARTIFACTS:
        assert (work / name).read_bytes() == local_run[name], name
    assert (tmp_path / "submission.csv").read_bytes() == local_run["submission.csv"]


def test_an_unreachable_scheduler_names_the_fix(dataset, tmp_path, caplog):
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "3s"}):  # the default waits 30 s
        assert main(["extract", "--data", str(dataset), "--work", str(tmp_path / "w"), "--preset", "demo",
                     "--cluster", "tcp://127.0.0.1:9"]) == 2
    assert "Cannot reach the Dask scheduler at 'tcp://127.0.0.1:9' (run.cluster)" in caplog.text
    assert "--set run.cluster=none" in caplog.text
