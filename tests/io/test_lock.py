"""One writing run per work directory: a second one refuses in one line or waits; the OS releases
the lock when the holder dies (kill -9 included); read-only commands run alongside."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from landmark_retrieval.io.lock import WorkDirectoryBusy, work_lock

HOLD = textwrap.dedent("""
    import sys, time
    from landmark_retrieval.io.lock import work_lock
    with work_lock(sys.argv[1], shared=sys.argv[3] == "shared"):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def _holder(work: Path, seconds: float = 60, shared: bool = False) -> subprocess.Popen:
    """A process that holds the lock of ``work`` for ``seconds`` (returns once it holds it)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(work), str(seconds), "shared" if shared else "exclusive"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    with work_lock(tmp_path / "w"):
        with work_lock(tmp_path / "w"):
            pass
        with work_lock(tmp_path / "w" / ".." / "w"):  # the same directory, another spelling
            pass
    assert (tmp_path / "w" / ".lock").read_text().startswith(f"PID {os.getpid()}: ")


def test_a_second_process_is_refused_with_the_holder_s_pid_and_may_wait(tmp_path):
    work = tmp_path / "w"
    proc = _holder(work, 60)
    try:
        with pytest.raises(WorkDirectoryBusy, match=rf"in use by another run \(PID {proc.pid}: .*\): wait for it "
                                                    r"to finish, or run the same command with --wait"):
            with work_lock(work):
                pass
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # kill -9: the OS releases the lock, nothing stale is left
        proc.wait()
    t0 = time.monotonic()
    with work_lock(work):
        pass
    assert time.monotonic() - t0 < 5
    proc = _holder(work, 1.5)
    t0 = time.monotonic()
    with work_lock(work, wait=True):  # waits for the holder to finish
        assert time.monotonic() - t0 > 0.5  # the holder slept 1.5 s with it
    proc.wait()


def test_shared_holders_run_together_and_exclude_a_writer(tmp_path):
    """Searches hold the lock shared: several at once, while a writer (index) is refused or waits;
    a writer excludes them in turn."""
    work = tmp_path / "w"
    reader = _holder(work, 60, shared=True)
    try:
        with pytest.raises(WorkDirectoryBusy, match=rf"in use by another run \(PID {reader.pid}: "):
            with work_lock(work):
                pass
        with work_lock(work, shared=True):  # a second reader: at once
            pass
    finally:
        os.kill(reader.pid, signal.SIGKILL)
        reader.wait()
    writer = _holder(work, 60)
    try:
        with pytest.raises(WorkDirectoryBusy, match=rf"PID {writer.pid}: "):
            with work_lock(work, shared=True):
                pass
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
    with work_lock(work, shared=True):
        with work_lock(work, shared=True):  # re-entrant
            pass
        with pytest.raises(RuntimeError, match="holds the lock shared"):
            with work_lock(work):  # no upgrade: two readers upgrading would wait for each other
                pass


def test_a_lock_whose_directory_is_removed_while_waiting_is_taken_afresh(tmp_path):
    """A finished search removes its scratch directory, lock file included: a process that waited
    for that lock takes the lock of the new file, so that no two processes ever work there at once."""
    scratch = tmp_path / "searches" / "key"
    script = textwrap.dedent("""
        import shutil, sys, time
        from landmark_retrieval.io.lock import work_lock
        with work_lock(sys.argv[1]):
            print("held", flush=True)
            time.sleep(1.5)
            shutil.rmtree(sys.argv[1])
    """)
    proc = subprocess.Popen([sys.executable, "-c", script, str(scratch)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    probe = ("import sys\nfrom landmark_retrieval.io.lock import WorkDirectoryBusy, work_lock\n"
             "try:\n    with work_lock(sys.argv[1]):\n        print('got')\n"
             "except WorkDirectoryBusy:\n    print('busy')\n")
    with work_lock(scratch, wait=True):  # waits on the file the holder then removes
        assert proc.wait(30) == 0
        assert (scratch / ".lock").is_file()
        # were this process holding the removed file's lock, a newcomer would get the new file's
        late = subprocess.run([sys.executable, "-c", probe, str(scratch)], capture_output=True, text=True, timeout=60)
        assert late.stdout.strip() == "busy", late.stderr


def _cli(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "landmark_retrieval", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.mark.slow
def test_two_runs_on_one_work_directory(small_dataset, tmp_path):
    """Two real runs started at once on one work directory: one finishes with the submission of a
    lone run, the other refuses in one line (or, with --wait, waits and then gives the same
    submission); nothing is set aside; a read-only command runs alongside; a plain run after
    both gives the same submission again."""
    common = ("--data", small_dataset, "--preset", "demo", "--workers", "1")
    lone = _cli("run", *common, "--work", tmp_path / "lone", "--out", tmp_path / "lone.csv")
    assert lone.wait(600) == 0, lone.stderr.read()
    expected = (tmp_path / "lone.csv").read_bytes()

    work = tmp_path / "w"
    first = _cli("run", *common, "--work", work, "--out", tmp_path / "a.csv")
    deadline = time.monotonic() + 60
    while not (work / ".lock").is_file() or not (work / ".lock").read_text():
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.05)
    second = _cli("run", *common, "--work", work, "--out", tmp_path / "b.csv")
    waiting = _cli("run", *common, "--work", work, "--out", tmp_path / "c.csv", "--wait")
    assert second.wait(120) == 2
    errors = [line for line in second.stderr.read().splitlines() if "ERROR" in line]
    assert len(errors) == 1 and f"in use by another run (PID {first.pid}:" in errors[0], errors
    assert not (tmp_path / "b.csv").exists()
    assert first.wait(600) == 0, first.stderr.read()
    assert waiting.wait(600) == 0, waiting.stderr.read()
    assert "waiting for it to finish" in waiting.stderr.read()
    assert (tmp_path / "a.csv").read_bytes() == expected == (tmp_path / "c.csv").read_bytes()
    assert not list(work.rglob("damaged"))
    again = _cli("run", *common, "--work", work, "--out", tmp_path / "d.csv")
    assert again.wait(600) == 0 and (tmp_path / "d.csv").read_bytes() == expected


@pytest.mark.slow
def test_a_killed_run_does_not_block_the_next_one_and_evaluate_runs_alongside(small_dataset, tmp_path):
    common = ("--data", small_dataset, "--preset", "demo", "--workers", "1", "--work", tmp_path / "w")
    assert _cli("run", *common, "--out", tmp_path / "a.csv").wait(600) == 0
    holder = _holder(tmp_path / "w", 60)  # e.g. a notebook cell still running
    try:
        evaluate = _cli("evaluate", "--data", small_dataset, "--work", tmp_path / "w", "--json")
        assert evaluate.wait(300) == 0, evaluate.stderr.read()  # read-only: runs alongside
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    rerun = _cli("run", *common, "--out", tmp_path / "b.csv")
    assert rerun.wait(600) == 0, rerun.stderr.read()
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


def test_a_shard_held_open_by_another_process_is_not_set_aside(tmp_path):
    """HDF5 refuses to open a file another process writes ("unable to lock file"): that is busy,
    not damaged: the store says so and the shard stays where it is."""
    import numpy as np

    from landmark_retrieval.features import Features
    from landmark_retrieval.io.store import FeatureStore
    from landmark_retrieval.io.writer import ShardWriter

    store = tmp_path / "features" / "test"
    with ShardWriter(store) as writer:
        writer.add("a", Features(np.zeros((3, 2), np.float32), np.eye(3, 4, dtype=np.float32), np.ones(3, np.float32),
                                 np.ones(3, np.float32), (10, 10)))
    shard = next(store.glob("*.h5"))
    script = "import sys, time, h5py\nf = h5py.File(sys.argv[1], 'a')\nprint('open', flush=True)\ntime.sleep(60)\n"
    proc = subprocess.Popen([sys.executable, "-c", script, str(shard)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "open"
        with pytest.raises(RuntimeError, match="held open by another process"):
            FeatureStore(store, repair=True)
        assert shard.is_file() and not (store / "damaged").exists()
    finally:
        proc.kill()
        proc.wait()
    with FeatureStore(store) as reopened:
        assert reopened.has_local("a")
