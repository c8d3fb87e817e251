"""Step 3: geometric verification of retrieved candidates with DEGENSAC.

For each test image and each of its ``num_to_rerank`` nearest train images: putative matches
by nearest neighbour of the test descriptors among the train descriptors (distance threshold,
optional ratio test / mutual check), then ``pydegensac.findHomography`` (seeded) inlier count.
Fewer than ``min_matches`` putative matches (default 5, i.e. "4 or fewer") give 0 inliers;
an estimator error gives 0 inliers and is logged. Binary descriptors (ORB, uint8 packed bits)
are matched by Hamming distance (OpenCV's brute-force matcher, ``max_hamming_distance``);
``verify.estimator`` (degensac, magsac) and ``verify.geometry`` (homography, fundamental)
choose the robust fit (see :mod:`landmark_retrieval.matching.geometry`).

Output ``WORK/verification.csv`` (``query_id,rank,db_id,num_matches,inliers``, written and read
with the ``csv`` module, so any id round-trips), appended one test image at a time in retrieval
order, so an interrupted run resumes at the next test image and gives the same file as an
uninterrupted one. Local features of a train image are read from the feature store (and
cached), never re-extracted.

pydegensac holds the GIL: work is spread over processes. Workers ignore Ctrl-C (the parent
stops them and keeps what is finished) and exit by themselves if the parent dies.
"""
from __future__ import annotations

import csv
import io
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Tuple, Union

from .backends.torch_runtime import check_torch
from .config import Config, VerifyConfig
from .io.store import read_meta
from .matching.lightglue import features_backend, lightglue_kind
from .matching.pool import verify_tasks

if TYPE_CHECKING:
    from .io.dataset import Dataset
from .io.atomic import write_error, write_text_atomic
from .io.layout import (
    VERIFICATION_COLUMNS,
    Retrieval,
    feature_dir,
    fingerprint,
    load_retrieval,
    load_verification,
    read_stamp,
    retrieval_path,
    stamp_changes,
    verification_path,
    write_stamp,
)
from .io.progress import progress
from .io.store import FeatureStore

logger = logging.getLogger("landmark_retrieval")


COLUMNS = VERIFICATION_COLUMNS


# --------------------------------------------------------------------------------------------
# Pure computation
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Worker processes
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Step entry point
# --------------------------------------------------------------------------------------------
#: verify options added after results were first stamped (see :func:`verification_settings`);
#: the default of each reproduces the results verified before it existed: a stamp without it
#: counts as that default (``layout.stamp_changes(absent=...)``), so an upgrade re-verifies nothing
LATER_OPTIONS = ("max_matches", "max_hamming_distance", "estimator", "geometry", "max_keypoints", "matcher",
                 "lightglue")


def verification_settings(conf: VerifyConfig, work: Path) -> dict:
    """What verification results are computed from (their stamp): settings and retrieval.

    Options added later (:data:`LATER_OPTIONS`) are left out at their default value, so that
    results verified before they existed stay current (the same inliers).
    """
    settings = {k: v for k, v in asdict(conf).items() if k not in ("num_workers", "enabled")}
    if conf.matcher != "lightglue":
        settings.pop("lightglue")  # not read
    defaults = asdict(VerifyConfig())
    for key in LATER_OPTIONS:
        if key in settings and settings[key] == defaults[key]:
            del settings[key]
    settings["retrieval"] = fingerprint(read_stamp(retrieval_path(work)) or {})
    return settings


def _rows_text(query_id: str, candidates: List[str], results) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerows([query_id, rank, c, m, i] for rank, (c, (m, i)) in enumerate(zip(candidates, results)))
    return buf.getvalue()


def _tasks(retrieval: Retrieval, n: int) -> List[Tuple[str, List[str]]]:
    return [
        (q, [retrieval.db_ids[j] for j in retrieval.indices[row, :n]])
        for row, q in enumerate(retrieval.query_ids)
    ]


def verify(conf: Config, data: Union[str, Path, "Dataset", None], work: Union[str, Path],
           overwrite: bool = False) -> Path:
    """Step 3: verify the ``conf.verify.num_to_rerank`` best candidates of every test image.

    ``data`` is not read (everything comes from the work directory): it is there so that every
    step has the signature ``step(conf, data, work, overwrite)``; None is fine.

    Resumes an interrupted run (the result is the same as an uninterrupted run's); settings
    that differ from the stored results' start over.

    Returns:
        Path of ``WORK/verification.csv``.
    """
    work = Path(work)
    vc = conf.verify
    out = verification_path(work)
    if vc.matcher == "lightglue":  # before any work: torch, the weights, features LightGlue was trained for
        check_torch("verify.matcher=lightglue")
        lightglue_kind(features_backend(read_meta(feature_dir(work, "test"))))
    retrieval = load_retrieval(retrieval_path(work))
    tasks = _tasks(retrieval, vc.num_to_rerank)
    settings = verification_settings(vc, work)
    changes = stamp_changes(out, settings, absent={k: asdict(VerifyConfig())[k] for k in LATER_OPTIONS})
    done: Dict[str, Dict[str, Tuple[int, int]]] = {}
    if changes is None and not overwrite:
        done = load_verification(out)
    elif changes:
        logger.info("Verifying again: %s", "; ".join(changes))
    # keep only test images whose candidates were all verified; rewrite the file cleanly (atomically)
    expected = dict(tasks)
    done = {q: r for q, r in done.items() if q in expected and all(c in r for c in expected[q])}
    header = io.StringIO()
    csv.writer(header, lineterminator="\n").writerow(COLUMNS)
    text = header.getvalue() + "".join(
        _rows_text(q, cands, [done[q][c] for c in cands]) for q, cands in tasks if q in done)
    if not (out.is_file() and out.read_text(encoding="utf-8") == text):  # untouched when nothing changes
        write_text_atomic(out, text)
    write_stamp(out, settings)
    todo = [t for t in tasks if t[0] not in done and t[1]]
    with FeatureStore(feature_dir(work, retrieval.db_split)) as db:
        candidates = {c for _, cands in todo for c in cands}
        missing = sum(1 for c in candidates if not db.has_local(c))
    if missing:
        logger.warning(
            "%d of %d candidate %s images have no local features and get 0 inliers; with "
            "extract.train_local=candidates run `landmark-retrieval extract --candidates` (or `run`) first",
            missing, len(candidates), retrieval.db_split)
    logger.info("Verifying %d candidates of %d test images (%d already done)",
                vc.num_to_rerank, len(todo), len(done))
    if not todo:
        return out
    workers = vc.num_workers or (os.cpu_count() or 1)
    workers = max(1, min(workers, len(todo)))
    with open(out, "a", newline="", encoding="utf-8") as fh, \
            progress(total=len(todo), desc="verify", unit="query") as bar:
        def write(result) -> None:
            q, cands, res = result
            try:
                fh.write(_rows_text(q, cands, res))
                fh.flush()
            except OSError as exc:
                raise write_error(out, exc) from exc
            bar.update(1)

        verify_tasks(work, vc, todo, workers, write)
        try:
            os.fsync(fh.fileno())
        except OSError as exc:
            raise write_error(out, exc) from exc
    return out
