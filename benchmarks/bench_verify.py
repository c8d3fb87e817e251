"""Verification: pairs/s with 1 and 2 workers, per-pair matching and DEGENSAC time, accuracy.

Presets ``kaggle-baseline`` (the host baseline) and ``fast`` (putative matches filtered before
DEGENSAC, among each image's 800 strongest features), and side by side ``fast`` matching all
features (``verify.max_keypoints=none``: the ``fast`` preset before that option), on two sets
of image pairs with 10 candidates per test image:

* **real photos**: the GLR-style evaluation built from ``../shared/data/groups.csv`` (63 train,
  72 test images; ``--quick``: 2 landmarks and 3 distractors), RootSIFT with the 1000 strongest
  keypoints of images resized to at most 1024 px, candidates from the pipeline's own retrieval
  (VLAD). Skipped when the photographs are absent (``LANDMARK_RETRIEVAL_SHARED_DATA`` or
  ``--photos`` point elsewhere).
* **DELG-like**: synthetic 128-d unit descriptors with planar geometry
  (:mod:`landmark_retrieval.testing.local_features`), 1000 per image, 3 of the 10 candidates
  showing the test image's landmark, a fifth of the test images distractors.

Measured:

1. per pair, in this process with one BLAS thread: matching and DEGENSAC time (median over
   repeats of the mean over all pairs) and putative matches; matching with the straightforward
   selection (``argmax``, ``np.partition``, ``argmax`` over columns: the code before it was
   optimised) on the same pairs, side by side;
   and reading: keypoints and descriptors of an image (``FeatureStore.local_points``, what
   verification reads; side by side with all local features, ``FeatureStore.local``), per image
   and per pair as one process reads them (each image once);
2. end to end, pairs/s with 1 and 2 workers (2: this process and one spawned worker, each with
   one BLAS thread): the ``verify()`` step on the real photos (reading ``retrieval.h5`` to
   writing ``verification.csv``), the work sharing (``verify.verify_tasks``, what ``verify()``
   runs) on the DELG-like pairs; medians of repeats; with the CPU time per pair (this process
   and its workers: less affected by other processes than the wall time); the
   ``landmark-retrieval verify`` command (a new interpreter: imports, workers, all) on the real
   photos; how long a worker process takes to start and the CLI module to import;
3. accuracy: GAP and mAP@100 of the real-photo evaluation, the average precision of the
   DELG-like same-landmark pairs ranked by inliers, and whether ``kaggle-baseline`` inlier counts
   equal those of the straightforward implementation.

    python benchmarks/bench_verify.py [--quick] [--repeats N] [--photos DIR] [--out FILE]
"""
from __future__ import annotations

import os

# One BLAS thread in this process: "1 worker" means one core (the worker processes of verify
# set the same for themselves). Set before numpy is imported.
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_name] = "1"

import argparse  # noqa: E402
import csv  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Dict, List, Optional, Sequence, Tuple  # noqa: E402

import numpy as np  # noqa: E402
from suite import REPO, clean_runs, machine_info, median_time, pair_ap, set_patience, write_result  # noqa: E402

PRESETS = ("kaggle-baseline", "fast")
#: measured side by side with the presets: ``fast`` matching all local features (before
#: ``verify.max_keypoints``); per pair, 1 and 2 workers, accuracy
FAST_ALL = "fast, all keypoints"
FAST_ALL_SET = ["verify.max_keypoints=none"]
#: the real-photo groups of --quick (2 landmarks: 14 train, 6 test images) and its distractors
QUICK_GROUPS = ("sacre_coeur", "oxford_graf")
QUICK_DISTRACTORS = 3
SIFT = ["extract.backend=sift", "extract.max_image_size=1024", "extract.sift.max_keypoints=1000"]


def default_photos() -> Path:
    return Path(os.environ.get("LANDMARK_RETRIEVAL_SHARED_DATA", REPO.parent / "shared" / "data"))


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------
def quick_photos(photos: Path, tmp: Path) -> Path:
    """A folder like ``photos`` whose groups.csv lists only the --quick groups."""
    out = tmp / "photos"
    out.mkdir()
    with open(photos / "groups.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    distractors = [r for r in rows if r["suggested_role"] == "distractor"][:QUICK_DISTRACTORS]
    keep = [r for r in rows if r["group"] in QUICK_GROUPS] + distractors
    with open(out / "groups.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(keep)
    for top in {Path(r["path"]).parts[0] for r in keep}:
        (out / top).symlink_to((photos / top).resolve())
    return out


def real_photo_run(photos: Path, tmp: Path, quick: bool):
    """Extract RootSIFT and retrieve on the GLR set of ``photos``: ``(dataset, work)``."""
    from landmark_retrieval.extract import extract
    from landmark_retrieval.io.dataset import load_dataset
    from landmark_retrieval.presets import get_config
    from landmark_retrieval.retrieve import retrieve
    from landmark_retrieval.testing.groups import build_glr_from_groups

    if quick:
        photos = quick_photos(photos, tmp)
    data = load_dataset(build_glr_from_groups(photos, tmp / "data"))
    work = tmp / "work-real"
    conf = get_config("kaggle-baseline", SIFT)
    extract(conf, data, work)
    retrieve(conf, data, work)
    return data, work


def write_store(work: Path, split: str, feats: Dict[str, Any]) -> None:
    from landmark_retrieval.io.layout import feature_dir
    from landmark_retrieval.io.writer import ShardWriter

    with ShardWriter(feature_dir(work, split)) as writer:
        for image_id, f in feats.items():
            writer.add(image_id, f)


def pairs_of(work: Path, tasks: Sequence[Tuple[str, List[str]]]) -> List[Tuple[Any, Any]]:
    """The features of every (test, candidate) pair of ``tasks``, read from ``work``."""
    from landmark_retrieval.io.layout import feature_dir, retrieval_db_split
    from landmark_retrieval.io.store import FeatureStore

    with FeatureStore(feature_dir(work, "test")) as test, \
            FeatureStore(feature_dir(work, retrieval_db_split(work))) as train:
        cache: Dict[str, Any] = {}
        out = []
        for q, cands in tasks:
            for c in cands:
                if c not in cache:
                    cache[c] = train.local(c)
            query = test.local(q)
            out += [(query, cache[c]) for c in cands]
    return out


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------
def per_pair(pairs, vc, repeats: int) -> Dict[str, float]:
    """Matching and DEGENSAC ms per pair (medians over repeats), putative matches per pair;
    with ``vc.max_keypoints``, of each image's strongest features (selected when read, untimed)."""
    from landmark_retrieval.io.store import strongest
    from landmark_retrieval.matching.pairs import estimate_homography, match_descriptors

    if vc.max_keypoints is not None:
        pairs = [tuple(f.rows(strongest(f.scores, vc.max_keypoints)) for f in pair) for pair in pairs]

    def one_pass() -> Tuple[float, float, List[int]]:
        tm = tr = 0.0
        putatives = []
        for a, b in pairs:
            t0 = time.perf_counter()
            m = match_descriptors(a.descriptors, b.descriptors, vc.max_descriptor_distance, vc.ratio_test,
                                  vc.mutual, vc.max_matches)
            t1 = time.perf_counter()
            estimate_homography(a.keypoints[m[:, 0]], b.keypoints[m[:, 1]], vc)
            tr += time.perf_counter() - t1
            tm += t1 - t0
            putatives.append(len(m))
        return 1000 * tm / len(pairs), 1000 * tr / len(pairs), putatives

    passes = [value for _, _, value in clean_runs(one_pass, repeats)]
    m, r = statistics.median(v[0] for v in passes), statistics.median(v[1] for v in passes)
    putatives = passes[-1][2]
    return {"matching_ms": round(m, 3), "ransac_ms": round(r, 3), "total_ms": round(m + r, 3),
            "putatives_mean": round(float(np.mean(putatives)), 1)}


def matching_side_by_side(pairs, vc, repeats: int) -> Dict[str, float]:
    """Matching ms per pair on the same pairs, alternately: the straightforward selection
    (:func:`~landmark_retrieval.testing.reference.reference_matches`) and ``match_descriptors``."""
    from landmark_retrieval.matching.pairs import match_descriptors
    from landmark_retrieval.testing.reference import reference_matches

    def timed(fn):
        def run():
            for a, b in pairs:
                fn(a.descriptors, b.descriptors, vc.max_descriptor_distance, vc.ratio_test, vc.mutual,
                   vc.max_matches)
        return run

    ref, now = [], []
    for _ in range(repeats):
        ref += median_time(timed(reference_matches), 1)[1]
        now += median_time(timed(match_descriptors), 1)[1]
    return {"straightforward_ms": round(1000 * statistics.median(ref) / len(pairs), 3),
            "now_ms": round(1000 * statistics.median(now) / len(pairs), 3), "pairs": len(pairs)}


def product_ms(pairs, candidates: int, repeats: int) -> Dict[str, float]:
    """ms per pair of the similarity product alone: one product per pair, and one per test image
    against its candidates stacked (an idea measured, not used: same arithmetic, and the larger
    result falls out of the cache)."""
    groups = [pairs[i:i + candidates] for i in range(0, len(pairs), candidates)]

    def per_pair():
        for a, b in pairs:
            a.descriptors @ b.descriptors.T

    def stacked():
        for group in groups:
            group[0][0].descriptors @ np.concatenate([b.descriptors for _, b in group]).T

    return {"per_pair_ms": round(1000 * median_time(per_pair, repeats)[0] / len(pairs), 3),
            "stacked_per_test_image_ms": round(1000 * median_time(stacked, repeats)[0] / len(pairs), 3)}


def baseline_inliers_identical(pairs, vc) -> bool:
    """kaggle-baseline inliers of verify_pair == those of the straightforward matching."""
    from landmark_retrieval.matching.pairs import estimate_homography, verify_pair
    from landmark_retrieval.testing.reference import reference_matches

    for a, b in pairs:
        m = reference_matches(a.descriptors, b.descriptors, vc.max_descriptor_distance, vc.ratio_test,
                              vc.mutual, vc.max_matches)
        _, mask = estimate_homography(a.keypoints[m[:, 0]], b.keypoints[m[:, 1]], vc)
        if int(mask.sum()) != verify_pair(a, b, vc).num_inliers:
            return False
    return True


def pool_run(work: Path, vc, tasks, workers: int) -> Tuple[float, List[Any], float]:
    """One run of the work sharing (``verify.verify_tasks``): seconds, the results, and the CPU
    seconds (this process and its workers)."""
    from landmark_retrieval.matching.pool import verify_tasks

    results: List[Any] = []
    c0, t0 = cpu_seconds(), time.perf_counter()
    verify_tasks(work, vc, tasks, workers, results.append)
    return time.perf_counter() - t0, results, cpu_seconds() - c0


def worker_start_s(work: Path, vc, repeats: int) -> float:
    """Seconds until two spawned verification workers are ready (imports, feature stores; with
    2 workers, ``verify()`` spawns one and verifies meanwhile)."""
    import concurrent.futures as cf
    import multiprocessing as mp
    from dataclasses import asdict

    from landmark_retrieval.matching import pool as V

    def start():
        pool = cf.ProcessPoolExecutor(2, mp_context=mp.get_context("spawn"), initializer=V._init_worker,
                                      initargs=(str(work), asdict(vc), os.getpid(), None))
        with V._worker_environment():
            futures = [pool.submit(V._run_chunk, i, []) for i in range(2)]
        for f in futures:
            f.result()
        pool.shutdown()

    return round(median_time(start, repeats)[0], 3)


def rate(pairs: int, seconds: float) -> float:
    return round(pairs / seconds, 1)


def cpu_seconds() -> float:
    """CPU seconds of this process and of its finished (joined) child processes."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def wall_and_cpu(fn, repeats: int) -> Tuple[float, float, List[float], Any]:
    """``repeats`` clean runs of ``fn``: median wall seconds, median CPU seconds (this process and
    its children, see :func:`cpu_seconds`), the wall times and the last run's return value."""
    def run():
        c0 = cpu_seconds()
        value = fn()
        return cpu_seconds() - c0, value

    runs = clean_runs(run, repeats)
    return (statistics.median(r[0] for r in runs), statistics.median(r[2][0] for r in runs),
            [round(r[0], 3) for r in runs], runs[-1][2][1])


def workers_figures(pairs: int, seconds: float, cpu: float, times: List[float]) -> Dict[str, Any]:
    return {"seconds": round(seconds, 3), "pairs_per_s": rate(pairs, seconds),
            "cpu_ms_per_pair": round(1000 * cpu / pairs, 3), "times": times}


def read_costs(work: Path, tasks: Sequence[Tuple[str, List[str]]], repeats: int) -> Dict[str, float]:
    """ms to read an image's keypoints and descriptors (what verification reads) and all its
    local features, per image and per pair when each image of ``tasks`` is read once."""
    from landmark_retrieval.io.layout import feature_dir, retrieval_db_split
    from landmark_retrieval.io.store import FeatureStore

    test_ids = [q for q, _ in tasks]
    train_ids = sorted({c for _, cands in tasks for c in cands})
    pairs = sum(len(c) for _, c in tasks)

    def read(method: str):
        def run():
            with FeatureStore(feature_dir(work, "test")) as test, \
                    FeatureStore(feature_dir(work, retrieval_db_split(work))) as train:
                for q in test_ids:
                    getattr(test, method)(q)
                for c in train_ids:
                    getattr(train, method)(c)
        return median_time(run, repeats)[0]

    points, full = read("local_points"), read("local")
    images = len(test_ids) + len(train_ids)
    return {"points_ms_per_image": round(1000 * points / images, 3),
            "local_ms_per_image": round(1000 * full / images, 3),
            "points_ms_per_pair": round(1000 * points / pairs, 3), "images": images}


def cli_verify(work: Path, preset: str, overrides: Sequence[str], pairs: int, repeats: int) -> Dict[str, Any]:
    """``landmark-retrieval verify --overwrite`` as a user runs it (2 workers): wall seconds,
    pairs/s and CPU ms per pair (the command and its workers)."""
    import subprocess

    script = Path(sys.executable).with_name("landmark-retrieval")
    cmd = [str(script)] if script.is_file() else [sys.executable, "-m", "landmark_retrieval"]
    sets = [arg for o in [*overrides, "verify.num_workers=2"] for arg in ("--set", o)]
    cmd += ["verify", "--work", str(work), "--preset", preset, *sets, "--overwrite", "-q"]
    seconds, cpu, times, _ = wall_and_cpu(lambda: subprocess.run(cmd, check=True, capture_output=True), repeats)
    return {**workers_figures(pairs, seconds, cpu, times), "command": " ".join(["landmark-retrieval", *cmd[-11:]])}


def import_cli_s(repeats: int) -> float:
    """Seconds for a new interpreter to import ``landmark_retrieval.cli`` (a spawned worker
    imports the CLI module again when the command runs it)."""
    import subprocess

    cmd = [sys.executable, "-c", "import landmark_retrieval.cli"]
    return round(median_time(lambda: subprocess.run(cmd, check=True), repeats)[0], 3)


# --------------------------------------------------------------------------------------------
def bench_real(photos: Path, tmp: Path, quick: bool, repeats: int) -> Dict[str, Any]:
    from landmark_retrieval.evaluate import evaluate_run
    from landmark_retrieval.io.layout import load_retrieval, retrieval_path
    from landmark_retrieval.predict import predict
    from landmark_retrieval.presets import get_config
    from landmark_retrieval.verify import _tasks, verify

    t0 = time.perf_counter()
    data, work = real_photo_run(photos, tmp, quick)
    tasks = [t for t in _tasks(load_retrieval(retrieval_path(work)), 10) if t[1]]
    pairs = pairs_of(work, tasks)
    out: Dict[str, Any] = {"test_images": len(tasks), "pairs": len(pairs),
                           "setup_s": round(time.perf_counter() - t0, 1),
                           "keypoints_mean": round(float(np.mean([len(b) for _, b in pairs])), 1)}
    base = get_config("kaggle-baseline", SIFT)
    sample = pairs[:40] if quick else pairs  # per-pair figures of --quick: a sample
    out["baseline_inliers_identical"] = baseline_inliers_identical(sample, base.verify)
    out["similarity_product"] = product_ms(pairs[:30 if quick else 300], 10, repeats)
    out["read"] = read_costs(work, tasks, repeats)
    for preset in PRESETS:
        conf = get_config(preset, SIFT)
        res: Dict[str, Any] = {"settings": {k: getattr(conf.verify, k) for k in (
            "max_descriptor_distance", "ratio_test", "mutual", "max_matches", "max_reprojection_error",
            "max_iterations")}}
        res["per_pair"] = per_pair(sample, conf.verify, repeats)
        res["matching_side_by_side"] = matching_side_by_side(pairs[:30 if quick else 300], conf.verify, repeats)
        for workers in (1, 2):
            wconf = get_config(preset, SIFT + [f"verify.num_workers={workers}"])
            seconds, cpu, times, _ = wall_and_cpu(lambda wconf=wconf: verify(wconf, data, work, overwrite=True),
                                                  repeats)
            res[f"workers_{workers}"] = workers_figures(len(pairs), seconds, cpu, times)
        res["cli"] = cli_verify(work, preset, SIFT, len(pairs), repeats)
        predict(conf, data, work)
        metrics = evaluate_run(conf, data, work)
        res["accuracy"] = {k: round(metrics[k], 4) for k in ("global_gap", "verified_gap", "global_map100",
                                                              "verified_map100")}
        out[preset] = res
    res = out[FAST_ALL] = {"per_pair": per_pair(sample, get_config("fast", SIFT + FAST_ALL_SET).verify, repeats)}
    for workers in (1, 2):
        wconf = get_config("fast", SIFT + FAST_ALL_SET + [f"verify.num_workers={workers}"])
        seconds, cpu, times, _ = wall_and_cpu(lambda wconf=wconf: verify(wconf, data, work, overwrite=True), repeats)
        res[f"workers_{workers}"] = workers_figures(len(pairs), seconds, cpu, times)
    predict(wconf, data, work)
    metrics = evaluate_run(wconf, data, work)
    res["accuracy"] = {k: round(metrics[k], 4) for k in ("verified_gap", "verified_map100")}
    out["worker_start_s"] = worker_start_s(work, base.verify, 1 if quick else repeats)
    out["import_cli_s"] = import_cli_s(repeats)
    return out


def bench_delg_like(tmp: Path, quick: bool, repeats: int) -> Dict[str, Any]:
    from landmark_retrieval.presets import get_config
    from landmark_retrieval.testing.local_features import delg_like_set

    sizes = dict(num_landmarks=3, train_views=3, test_views=2, num_distractors=2) if quick else \
        dict(num_landmarks=32, train_views=5, test_views=4, num_distractors=32)
    t0 = time.perf_counter()
    syn = delg_like_set(**sizes, seed=0)
    work = tmp / "work-delg-like"
    write_store(work, "train", syn.train)
    write_store(work, "test", syn.test)
    pairs = pairs_of(work, syn.tasks)
    positive = [syn.is_positive(q, c) for q, cands in syn.tasks for c in cands]
    out: Dict[str, Any] = {"test_images": len(syn.tasks), "pairs": len(pairs), "positive_pairs": int(sum(positive)),
                           "setup_s": round(time.perf_counter() - t0, 1), "sizes": sizes}
    sample = pairs[:40] if quick else pairs  # per-pair figures of --quick: a sample
    out["baseline_inliers_identical"] = baseline_inliers_identical(sample, get_config("kaggle-baseline").verify)
    out["read"] = read_costs(work, syn.tasks, repeats)
    for preset in PRESETS + (FAST_ALL,):
        vc = get_config("fast", FAST_ALL_SET).verify if preset == FAST_ALL else get_config(preset).verify
        res: Dict[str, Any] = {"per_pair": per_pair(sample, vc, repeats)}
        if preset != FAST_ALL:
            res["matching_side_by_side"] = matching_side_by_side(pairs[:30 if quick else 300], vc, repeats)
        results: List[Any] = []
        for workers in (1, 2):
            runs = [value for _, _, value in clean_runs(
                lambda vc=vc, workers=workers: pool_run(work, vc, syn.tasks, workers), repeats)]
            seconds = statistics.median(r[0] for r in runs)
            results = runs[-1][1]
            res[f"workers_{workers}"] = workers_figures(len(pairs), seconds, statistics.median(r[2] for r in runs),
                                                        [round(r[0], 3) for r in runs])
        inliers = [i for _, _, r in results for _, i in r]
        res["accuracy"] = {"pair_ap": round(pair_ap(inliers, positive), 4),
                           "positives_median_inliers": float(np.median([i for i, p in zip(inliers, positive) if p])),
                           "negatives_max_inliers": int(max(i for i, p in zip(inliers, positive) if not p))}
        out[preset] = res
    return out


def summary_rows(figures: Dict[str, Any]) -> List[Tuple[str, str]]:
    rows = []
    for key, label in (("real_photos", "real photos"), ("delg_like", "DELG-like")):
        f = figures.get(key)
        if not f or "skipped" in f:
            if f:
                rows.append((label, f"skipped: {f['skipped']}"))
            continue
        kb, fa = f["kaggle-baseline"], f["fast"]
        n = f["pairs"]
        what = "`verify()` step" if key == "real_photos" else "work sharing (`verify_tasks`)"
        variants = [("kaggle-baseline", kb), ("fast", fa)] + ([(FAST_ALL, f[FAST_ALL])] if FAST_ALL in f else [])
        for name, r in variants:
            r1, r2 = r["workers_1"], r["workers_2"]
            w1, w2 = r1["pairs_per_s"], r2["pairs_per_s"]
            rows.append((f"{label}, {n} pairs, `{name}`: {what}, 1 → 2 workers; CPU per pair (all processes), "
                         "1 → 2 workers",
                         f"{w1:.0f} → **{w2:.0f} pairs/s** ({w2 / w1:.2f}x); "
                         f"{r1.get('cpu_ms_per_pair', float('nan')):.2f} → "
                         f"{r2.get('cpu_ms_per_pair', float('nan')):.2f} ms"))
            if "cli" in r:
                c = r["cli"]
                rows.append((f"{label}, `{name}`: `landmark-retrieval verify` command (new interpreter, 2 workers): "
                             "wall; CPU per pair", f"{c['seconds']:.2f} s, **{c['pairs_per_s']:.0f} pairs/s**; "
                                                   f"{c['cpu_ms_per_pair']:.2f} ms"))
        for name, r in variants:
            p = r["per_pair"]
            rows.append((f"{label}, `{name}`: per pair on one core (matching + DEGENSAC; putatives)",
                         f"{p['total_ms']:.2f} ms ({p['matching_ms']:.2f} + {p['ransac_ms']:.2f}; "
                         f"{p['putatives_mean']:.0f})"))
        if "read" in f:
            rd = f["read"]
            rows.append((f"{label}: reading an image's keypoints + descriptors (all local features); per pair here, "
                         "each image read once",
                         f"{rd['points_ms_per_image']:.2f} ms ({rd['local_ms_per_image']:.2f} ms); "
                         f"{rd['points_ms_per_pair']:.2f} ms"))
        k, f_ = kb["matching_side_by_side"], fa["matching_side_by_side"]
        rows.append((f"{label}: matching per pair, straightforward selection → now, on the same {k['pairs']} pairs "
                     "(`kaggle-baseline`; `fast`)",
                     f"{k['straightforward_ms']:.2f} → {k['now_ms']:.2f} ms; "
                     f"{f_['straightforward_ms']:.2f} → **{f_['now_ms']:.2f} ms**"))
        if "similarity_product" in f:
            sp = f["similarity_product"]
            rows.append((f"{label}: float32 similarity product alone, per pair: one per pair; one per test image "
                         "against its 10 candidates stacked", f"{sp['per_pair_ms']:.2f} ms; "
                                                               f"{sp['stacked_per_test_image_ms']:.2f} ms"))
        if key == "real_photos":
            a0, a1 = kb["accuracy"], fa["accuracy"]
            rows.append(("real photos: GAP / mAP@100, global only; `kaggle-baseline`; `fast`",
                         f"{a0['global_gap']:.4f} / {a0['global_map100']:.4f}; {a0['verified_gap']:.4f} / "
                         f"{a0['verified_map100']:.4f}; **{a1['verified_gap']:.4f} / {a1['verified_map100']:.4f}**"))
            if FAST_ALL in f:
                a2 = f[FAST_ALL]["accuracy"]
                rows.append((f"real photos: GAP / mAP@100 verified, `{FAST_ALL}` (before `verify.max_keypoints`) → "
                             "`fast`", f"{a2['verified_gap']:.4f} / {a2['verified_map100']:.4f} → "
                                       f"{a1['verified_gap']:.4f} / {a1['verified_map100']:.4f}"))
            rows.append(("two worker processes ready (spawn, imports, feature stores); a new interpreter imports the "
                         "CLI module", f"{f['worker_start_s']:.2f} s; {f.get('import_cli_s', float('nan')):.2f} s"))
        else:
            rows.append(("DELG-like: AP of same-landmark pairs ranked by inliers, `kaggle-baseline`; `fast`"
                         + (f"; `{FAST_ALL}`" if FAST_ALL in f else ""),
                         f"{kb['accuracy']['pair_ap']:.4f}; {fa['accuracy']['pair_ap']:.4f}"
                         + (f"; {f[FAST_ALL]['accuracy']['pair_ap']:.4f}" if FAST_ALL in f else "")))
        rows.append((f"{label}: `kaggle-baseline` inliers equal the straightforward implementation's",
                     "yes" if f["baseline_inliers_identical"] else "**NO**"))
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a subset of the photos, 80 synthetic pairs, per-pair figures on samples, 2 repeats")
    parser.add_argument("--repeats", type=int, help="timing repeats (default 3, --quick 2)")
    parser.add_argument("--photos", type=Path, default=default_photos(), help="folder with groups.csv")
    parser.add_argument("--sets", default="real,delg-like", help="comma-separated: real, delg-like (default both)")
    parser.add_argument("--out", type=Path, help="JSON file (default benchmarks/results/verify.json)")
    args = parser.parse_args(argv)
    sets = set(args.sets.split(","))
    repeats = args.repeats or (2 if args.quick else 3)
    set_patience(10 if args.quick else 900)
    started = machine_info()

    from landmark_retrieval.io.progress import set_progress

    set_progress(False)
    logging.getLogger("landmark_retrieval").setLevel(logging.WARNING)
    figures: Dict[str, Any] = {"repeats": repeats, "presets": list(PRESETS)}
    with tempfile.TemporaryDirectory(prefix="bench_verify_") as tmp:
        if "real" not in sets:
            figures["real_photos"] = {"skipped": "not asked for (--sets)"}
        elif (args.photos / "groups.csv").is_file():
            (Path(tmp) / "real").mkdir()
            figures["real_photos"] = bench_real(args.photos, Path(tmp) / "real", args.quick, repeats)
        else:
            figures["real_photos"] = {"skipped": f"no groups.csv in {args.photos}"}
        if "delg-like" in sets:
            (Path(tmp) / "syn").mkdir()
            figures["delg_like"] = bench_delg_like(Path(tmp) / "syn", args.quick, repeats)
        else:
            figures["delg_like"] = {"skipped": "not asked for (--sets)"}
    real = figures["real_photos"]
    setup = ("verification of 10 candidates per test image with the `kaggle-baseline` and `fast` presets: real "
             + (f"photos ({real['test_images']} test images of `../shared/data`, RootSIFT, "
                f"{real['keypoints_mean']:.0f} keypoints per image on average, candidates from retrieval)"
                if "skipped" not in real else "photos skipped")
             + (f" and DELG-like synthetic features ({figures['delg_like']['test_images']} test images, 1000 "
                "128-d descriptors per image, planar geometry)" if "skipped" not in figures["delg_like"] else "")
             + f"; 1 worker = one process with one BLAS thread; medians of {repeats} runs")
    write_result("verify", setup, summary_rows(figures), figures, args.quick, args.out, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
