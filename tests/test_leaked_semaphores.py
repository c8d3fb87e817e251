"""No "leaked semaphore" warning reaches the terminal when verification's processes are killed.

multiprocessing's locks are named POSIX semaphores under the spawn start method; when the process
that created them is killed (kill -9, the OOM killer), the resource tracker unlinks them and prints
``resource_tracker: There appear to be N leaked semaphore objects to clean up at shutdown``. The
verification pool unlinks their names as soon as every worker has opened them (nothing is left to
leak), and starts the tracker without that one warning for the second the workers take to start.
"""
from __future__ import annotations

import inspect
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from multiprocessing import resource_tracker
from pathlib import Path

import pytest
from _procs import POINTS, group_members, interrupt, wait_gone

from landmark_retrieval.matching.pool import _leak_warning_filter

linux = pytest.mark.skipif(sys.platform != "linux", reason="uses /proc, /dev/shm and signals")
LEAK = "leaked semaphore"
SETTINGS = ["--preset", "demo", "--set", "verify.num_to_rerank=10", "--set", "verify.num_workers=2"]


def _python(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (no inherited warning filters)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=60, env=env)


def test_the_filter_names_exactly_the_trackers_leak_warning():
    option = _leak_warning_filter()
    assert option is not None and option.startswith("ignore::UserWarning:multiprocessing.resource_tracker:")
    line = int(option.rsplit(":", 1)[1])
    lines, first = inspect.getsourcelines(resource_tracker.main)
    call = "".join(lines[line - first:line - first + 3])
    assert call.lstrip().startswith("warnings.warn(") and "leaked" in call


KILLED_WITH_SEMAPHORES = """
    import multiprocessing as mp, os, signal, sys
    from landmark_retrieval.matching.pool import _start_resource_tracker, _unlink_semaphores
    ctx = mp.get_context("spawn")
    if "{mode}" == "quiet-tracker":
        _start_resource_tracker()
        assert "PYTHONWARNINGS" not in os.environ  # restored at once
    lock, queue = ctx.Lock(), ctx.Queue()
    names = [lock._semlock.name, queue._rlock._semlock.name, queue._wlock._semlock.name, queue._sem._semlock.name]
    if "{mode}" == "unlinked":
        assert _unlink_semaphores(lock, queue) == 4
        assert _unlink_semaphores(lock, queue) == 0  # once only
        assert not any(os.path.exists("/dev/shm/sem." + n.lstrip("/")) for n in names)
        with lock:  # still working
            queue.put(1)
        assert queue.get(timeout=10) == 1
    print(" ".join(names), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


@linux
@pytest.mark.parametrize("mode", ["unlinked", "quiet-tracker", "as-multiprocessing-leaves-them"])
def test_a_killed_process_leaves_no_semaphore_and_no_warning(mode):
    res = _python(KILLED_WITH_SEMAPHORES.format(mode=mode))
    assert res.returncode == -signal.SIGKILL, res.stderr
    names = res.stdout.split()
    assert len(names) == 4, res.stderr
    deadline = time.monotonic() + 10  # the tracker cleans up when it sees the pipe close
    while any(os.path.exists("/dev/shm/sem." + n.lstrip("/")) for n in names) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(os.path.exists("/dev/shm/sem." + n.lstrip("/")) for n in names)
    if mode == "as-multiprocessing-leaves-them":  # the reproduction: what the fix avoids
        assert LEAK in res.stderr
    else:
        assert LEAK not in res.stderr and res.stderr == "", res.stderr


# ---------------------------------------------------------------------------------------------
# real verification runs, a worker or the run killed
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def extracted(tmp_path_factory) -> Path:
    """A work directory with features and retrieval done (verification not yet)."""
    from landmark_retrieval.demo import DemoSpec, build_demo_dataset

    root = tmp_path_factory.mktemp("semaphores")
    data = build_demo_dataset(root / "data", DemoSpec(seed=7))
    work = root / "work"
    base = [sys.executable, "-m", "landmark_retrieval"]
    for step in ("extract", "retrieve"):
        subprocess.run([*base, step, "--data", str(data), "--work", str(work), *SETTINGS], check=True,
                       capture_output=True)
    return work


def verify_cmd(work: Path):
    return [sys.executable, "-m", "landmark_retrieval", "verify", "--work", str(work), *SETTINGS]


def _workers(pid: int) -> list:
    """The verification workers of run ``pid`` (its group's spawned processes, not the tracker)."""
    found = []
    for member in group_members(pid):
        try:
            cmdline = Path(f"/proc/{member}/cmdline").read_bytes()
        except OSError:
            continue
        if member != pid and b"spawn_main" in cmdline:
            found.append(member)
    return found


@linux
@pytest.mark.slow
def test_a_killed_worker_ends_the_run_with_one_message_and_no_leak_warning(extracted, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(extracted, work)
    proc = subprocess.Popen(verify_cmd(work), stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    while not (POINTS["verify-start"](work) and _workers(proc.pid)):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1].decode()[-3000:]
        time.sleep(0.005)
    time.sleep(0.5)  # mid-verification: the worker is starting or verifying
    workers = _workers(proc.pid)
    if workers:
        os.kill(workers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    err = err.decode()
    assert LEAK not in err, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    if proc.returncode != 0:  # 0: the worker had finished its share before it was killed
        assert proc.returncode == 2, err[-3000:]
        assert err.count("A verification worker process ended abruptly") == 1, err[-3000:]
    assert wait_gone(proc.pid) == []
    subprocess.run(verify_cmd(work), check=True, capture_output=True)  # resumes


@linux
@pytest.mark.slow
def test_a_run_killed_while_its_workers_start_prints_no_leak_warning(extracted, tmp_path):
    """Killed as soon as a worker process exists: the pool's semaphores exist and are not unlinked
    yet (the workers have not opened them); the tracker unlinks them, without its warning."""
    work = tmp_path / "work"
    shutil.copytree(extracted, work)
    proc = subprocess.Popen(verify_cmd(work), stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    while not _workers(proc.pid):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1].decode()[-3000:]
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert wait_gone(proc.pid) == []
    assert LEAK not in err.decode(), err.decode()[-3000:]


@linux
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_a_run_killed_or_interrupted_while_verifying_prints_no_leak_warning(extracted, tmp_path, sig):
    """Killed mid-verification: the semaphores' names are already unlinked, nothing is left to leak."""
    work = tmp_path / "work"
    shutil.copytree(extracted, work)
    code, err, group, _ = interrupt(verify_cmd(work), work, "verify", sig)
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 130), err[-3000:]
    assert wait_gone(group) == []  # the resource tracker too: it has written all it will write
    assert LEAK not in err, err[-3000:]
