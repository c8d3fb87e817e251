"""Verification work sharing (this process + spawned workers), BLAS threads while verifying, and
the verification stamp across upgrades (options added later re-verify nothing)."""
from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from landmark_retrieval import verify as V
from landmark_retrieval.config import VerifyConfig
from landmark_retrieval.io.layout import feature_dir, stamp_changes, stamp_path, verification_path, write_stamp
from landmark_retrieval.io.writer import ShardWriter
from landmark_retrieval.matching import pool as P
from landmark_retrieval.matching.pairs import verify_pair
from landmark_retrieval.presets import get_config
from landmark_retrieval.testing.local_features import delg_like_set

FAST = VerifyConfig(ratio_test=0.85, mutual=True, max_matches=200)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A work directory with synthetic DELG-like features of 8 test images (9 candidates each:
    all train images) and a retrieval.h5 listing them; and the synthetic set."""
    syn = delg_like_set(num_landmarks=3, train_views=3, test_views=2, num_distractors=2, num_features=150,
                        scene_points=300, seed=3)
    root = tmp_path_factory.mktemp("pool") / "work"
    for split, feats in (("train", syn.train), ("test", syn.test)):
        with ShardWriter(feature_dir(root, split)) as writer:
            for image_id, f in feats.items():
                writer.add(image_id, f)
    db_ids = sorted(syn.train)
    with h5py.File(root / "retrieval.h5", "w") as f:
        strings = h5py.string_dtype()
        f.create_dataset("query_ids", data=np.array([q for q, _ in syn.tasks], dtype=object), dtype=strings)
        f.create_dataset("db_ids", data=np.array(db_ids, dtype=object), dtype=strings)
        f.create_dataset("indices", data=np.array([[db_ids.index(c) for c in cands] for _, cands in syn.tasks]))
        f.create_dataset("scores", data=np.zeros((len(syn.tasks), 10), np.float32))
        f.attrs["db_split"] = "train"
    return root, syn


def run_tasks(root, tasks, workers, vc=FAST):
    out = []
    P.verify_tasks(root, vc, tasks, workers, out.append)
    return out


def test_results_do_not_depend_on_worker_count(work):
    root, syn = work
    expected = [(q, cands, [(len(r.matches), r.num_inliers) for r in
                            (verify_pair(syn.test[q], syn.train[c], FAST) for c in cands)])
                for q, cands in syn.tasks]
    assert sum(i for _, _, res in expected for _, i in res) > 0  # some pairs verify
    for workers in (1, 2, 3):
        assert run_tasks(root, syn.tasks, workers) == expected, workers


def test_workers_share_the_work_with_this_process(work, monkeypatch, caplog):
    """With this process slowed down, the worker verifies some chunks: same results, in order."""
    root, syn = work
    expected = run_tasks(root, syn.tasks, 1)
    call = P._Verifier.__call__

    def slow(self, task):
        time.sleep(0.35)  # this process only: the spawned worker runs the real code
        return call(self, task)

    monkeypatch.setattr(P._Verifier, "__call__", slow)
    caplog.set_level(logging.DEBUG, logger="landmark_retrieval")
    assert run_tasks(root, syn.tasks, 2) == expected
    here, total = map(int, re.search(r"Verified (\d+) of (\d+) chunks in this process", caplog.text).groups())
    assert total == len(P._chunks(syn.tasks)) and here < total


def test_chunks_hold_whole_tasks_of_at_least_the_pairs_asked():
    tasks = [(f"q{i}", [f"c{j}" for j in range(n)]) for i, n in enumerate([3, 10, 0, 4, 4, 5])]
    chunks = P._chunks(tasks, pairs=8)
    assert [[q for q, _ in chunk] for chunk in chunks] == [["q0", "q1"], ["q2", "q3", "q4"], ["q5"]]
    assert P._chunks([], pairs=8) == []


def test_a_chunk_taken_back_by_the_parent_is_skipped_by_the_worker(work, monkeypatch):
    """The shared claims: a worker verifies a chunk only if this process has not taken it."""
    import multiprocessing as mp

    root, syn = work
    claims = mp.get_context("spawn").Array("b", 3)
    monkeypatch.setattr(P, "_WORKER", P._Verifier(str(root), FAST))
    monkeypatch.setattr(P, "_CLAIMS", claims)
    assert P._take_back(claims, [0, 2]) == 2  # the last one queued first
    assert P._run_chunk(2, syn.tasks[:1]) is None
    assert P._run_chunk(0, syn.tasks[:1]) == run_tasks(root, syn.tasks[:1], 1)
    assert P._take_back(claims, [0, 2]) is None  # both taken
    assert list(claims) == [1, 0, 1]


def test_one_blas_thread_while_verifying_in_this_process(work, monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas_threads():
        return [lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"]

    root, syn = work
    seen = []
    pair = verify_pair

    def spy(*args):
        seen.append(blas_threads())
        return pair(*args)

    monkeypatch.setattr(P, "verify_pair", spy)
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        run_tasks(root, syn.tasks[:2], 1)
        assert blas_threads() == before  # restored
    assert 2 in before  # (a single-threaded BLAS build stays at 1)
    assert seen and all(threads == [1] * len(before) for threads in seen)


def test_stamp_changes_with_options_added_later(tmp_path):
    artifact = tmp_path / "out.csv"
    artifact.write_text("x\n")
    write_stamp(artifact, {"a": 1, "retrieval": "abc"})  # an older version: no "b"
    assert stamp_changes(artifact, {"a": 1, "retrieval": "abc"}) is None
    # without a default for it, a new key is a change, named (not an empty list: "never computed")
    assert stamp_changes(artifact, {"a": 1, "b": None, "retrieval": "abc"}) == ["b: (absent) -> None"]
    assert stamp_changes(artifact, {"a": 1, "b": None, "retrieval": "abc"}, absent={"b": None}) is None
    assert stamp_changes(artifact, {"a": 1, "b": 200, "retrieval": "abc"}, absent={"b": None}) == ["b: None -> 200"]
    assert stamp_changes(artifact, {"a": 2, "retrieval": "abc"}, absent={"b": None}) == ["a: 1 -> 2"]
    write_stamp(artifact, {"a": 1, "b": None, "retrieval": "abc"})  # a newer version recorded b
    assert stamp_changes(artifact, {"a": 1, "retrieval": "abc"}, absent={"b": None}) is None
    assert stamp_changes(artifact, {"a": 1, "retrieval": "abc"}) == ["b: None -> (absent)"]


def test_results_of_an_older_version_are_not_verified_again(work, tmp_path, monkeypatch, caplog):
    """A stamp without max_matches (written before the option existed), or with max_matches
    null, is current for max_matches=None; max_matches=20 verifies again and says why."""
    import shutil

    root = tmp_path / "work"
    shutil.copytree(work[0], root)
    conf = get_config("kaggle-baseline", ["verify.num_workers=1"])
    out = V.verify(conf, None, root)
    csv_before = out.read_bytes()
    stamp = json.loads(stamp_path(out).read_text())
    old = {k: v for k, v in stamp.items() if k not in V.LATER_OPTIONS}
    assert "max_matches" not in old and "max_descriptor_distance" in old
    stamp_path(out).write_text(json.dumps(old))

    def fail(*args, **kwargs):
        raise AssertionError("verified again")

    monkeypatch.setattr(V, "verify_tasks", fail)
    caplog.clear()
    V.verify(conf, None, root)
    assert "Verifying again" not in caplog.text
    assert verification_path(root).read_bytes() == csv_before
    stamp_path(out).write_text(json.dumps({**old, "max_matches": None}))  # a stamp that recorded it
    V.verify(conf, None, root)
    assert "Verifying again" not in caplog.text
    monkeypatch.undo()
    V.verify(get_config("kaggle-baseline", ["verify.num_workers=1", "verify.max_matches=20"]), None, root)
    assert "Verifying again: max_matches: None -> 20" in caplog.text
    assert Path(out).read_bytes() != csv_before  # fewer putative matches


def test_max_keypoints_matches_the_strongest_features_only(work):
    """verify.max_keypoints: each image's strongest N features (by detector score, in stored
    order) are read and matched: the same inliers as verifying features truncated by hand."""
    from landmark_retrieval.features import Features
    from landmark_retrieval.io.store import strongest

    root, syn = work
    capped = VerifyConfig(ratio_test=0.85, mutual=True, max_matches=200, max_keypoints=60)

    def top(f: Features) -> Features:
        keep = strongest(f.scores, 60)
        return Features(f.keypoints[keep], f.descriptors[keep], f.scores[keep], f.scales[keep], f.image_size)

    expected = [(q, cands, [(len(r.matches), r.num_inliers) for r in
                            (verify_pair(top(syn.test[q]), top(syn.train[c]), FAST) for c in cands)])
                for q, cands in syn.tasks]
    full = run_tasks(root, syn.tasks, 1)
    assert run_tasks(root, syn.tasks, 1, capped) == expected
    assert run_tasks(root, syn.tasks, 2, capped) == expected
    assert expected != full  # the cap really changes what is matched
    assert max(m for _, _, res in expected for m, _ in res) <= 60


def test_strongest_keeps_the_highest_scores_in_row_order():
    from landmark_retrieval.io.store import strongest

    scores = np.array([1.0, 3.0, 3.0, 2.0, 0.5], np.float32)
    assert strongest(scores, 2).tolist() == [1, 2]
    assert strongest(scores, 3).tolist() == [1, 2, 3]
    assert strongest(np.array([5.0, 7.0, 5.0, 5.0]), 2).tolist() == [0, 1]  # tie: the earlier row
    assert strongest(scores, 10).tolist() == [0, 1, 2, 3, 4]
    assert strongest(np.zeros(0, np.float32), 3).shape == (0,) and strongest(scores, 0).shape == (0,)


def test_max_keypoints_must_be_positive():
    with pytest.raises(ValueError, match=r"verify\.max_keypoints: expected a positive integer or none, got 0"):
        get_config("fast", ["verify.max_keypoints=0"])
    assert get_config("fast", ["verify.max_keypoints=none"]).verify.max_keypoints is None


def test_verify_pair_applies_max_keypoints_and_maps_indices_back(work):
    from landmark_retrieval.features import Features
    from landmark_retrieval.io.store import strongest

    _, syn = work
    q, cands = syn.tasks[0]
    f0, f1 = syn.test[q], syn.train[cands[0]]
    capped = VerifyConfig(ratio_test=0.85, mutual=True, max_keypoints=60)
    k0, k1 = strongest(f0.scores, 60), strongest(f1.scores, 60)
    by_hand = verify_pair(Features(f0.keypoints[k0], f0.descriptors[k0], f0.scores[k0], f0.scales[k0],
                                     f0.image_size),
                            Features(f1.keypoints[k1], f1.descriptors[k1], f1.scores[k1], f1.scales[k1],
                                     f1.image_size), FAST)
    res = verify_pair(f0, f1, capped)
    assert len(res.matches) == len(by_hand.matches) > 0 and res.num_inliers == by_hand.num_inliers
    assert np.array_equal(res.matches, np.stack([k0[by_hand.matches[:, 0]], k1[by_hand.matches[:, 1]]], axis=1))
