"""The whole pipeline: extract -> retrieve -> verify -> predict -> submit (-> evaluate).

With a time budget (``run.time_budget``, see :mod:`landmark_retrieval.budget`) the same steps run
in an order that writes a valid submission early (test features and database global descriptors
first, a global-only submission, then verification) and stop optional work in time; the final
artifacts of a run that is given enough time are the same either way.
"""
from __future__ import annotations

import copy
import functools
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from .backends.base import Backend
from .backends.cluster import DaskEngine, cluster_engine
from .backends.extraction import aggregate_globals
from .budget import Budget, RunPlan, format_duration
from .config import Config, parse_duration
from .dependencies import check_dependencies
from .evaluate import evaluate
from .extract import (
    check_features,
    dataset_splits,
    extract,
    extract_candidates,
    extract_nonlandmark,
    train_local_deferred,
    write_failures,
)
from .io.dataset import Dataset, load_dataset
from .io.layout import (
    codebook_path,
    feature_dir,
    load_retrieval,
    load_verification,
    metrics_path,
    provisional_dir,
    retrieval_path,
)
from .io.lock import work_lock
from .io.progress import observe_progress
from .io.store import FeatureStore, read_meta, write_meta
from .io.submission import read_retrieval_submission, read_submission, write_retrieval_submission, write_submission
from .predict import predict
from .presets import config_summary, save_run_config
from .retrieve import retrieve
from .submit import submit
from .verify import verify

logger = logging.getLogger("landmark_retrieval")


@dataclass
class RunResult:
    """What a run produced: artifact paths, step timings (s) and, with a solution, metrics."""

    work: Path
    submission: Path
    timings: Dict[str, float] = field(default_factory=dict)
    metrics: Optional[Dict[str, float]] = None
    score_error: Optional[str] = None  # why scoring failed (the submission is written regardless)
    figure: Optional[Path] = None  # a picture of verified matches, when one was drawn
    time_budget: Optional[float] = None  # seconds, when the run had a budget
    #: work a budgeted run left out to finish in time (a later run does it); empty = complete
    skipped: List[str] = field(default_factory=list)


def run(conf: Config, data: Union[str, Path, Dataset], work: Union[str, Path] = "work",
        out: Union[str, Path] = "submission/submission.csv", overwrite: bool = False,
        backend: Optional[Backend] = None, time_budget: Union[None, str, float, Budget] = None,
        engine: Optional[DaskEngine] = None, wait: bool = False) -> RunResult:
    """Run every step; each one skips work already done in ``work``.

    ``conf`` is saved as ``WORK/config.json`` (the CLI's step commands continue with it); when
    it differs from the configuration saved there before, a warning names the changed settings.

    Args:
        conf: configuration (see :func:`landmark_retrieval.presets.get_config`).
        data: GLR-layout dataset root.
        work: directory for features and intermediate artifacts.
        out: submission path.
        overwrite: recompute artifacts made with other settings instead of raising.
        backend: reuse an already-loaded backend.
        time_budget: seconds or a duration (``"8h30m"``) this call may take, or a
            :class:`~landmark_retrieval.budget.Budget`; None = ``conf.run.time_budget``,
            ``"none"`` = no limit. See :mod:`landmark_retrieval.budget`: a submission is written
            early and improved while time is left; ``RunResult.skipped`` says what was left out.
        engine: where images are extracted (default: ``conf.run.cluster``'s Dask cluster, else
            this process; see :mod:`landmark_retrieval.backends.cluster`).
        wait: when another run holds ``work``, wait for it instead of raising
            (:mod:`landmark_retrieval.io.lock`).

    Returns:
        A :class:`RunResult`; ``metrics`` is set when the dataset has ``solution.csv``.

    Raises:
        WorkDirectoryBusy: another process is running in ``work`` (and ``wait`` is false).
    """
    with work_lock(work, wait=wait):
        return _run(conf, data, work, out, overwrite, backend, time_budget, engine)


def _run(conf: Config, data: Union[str, Path, Dataset], work: Union[str, Path], out: Union[str, Path],
         overwrite: bool, backend: Optional[Backend], time_budget: Union[None, str, float, Budget],
         engine: Optional[DaskEngine]) -> RunResult:
    budget = _make_budget(conf.run.time_budget if time_budget is None else time_budget)
    work = Path(work)
    check_dependencies(conf)  # a missing optional package: one line, before any work
    dataset = data if isinstance(data, Dataset) else load_dataset(data)
    engine = engine if engine is not None else cluster_engine(conf)
    # refused before anything is saved when the stored features were made with other settings
    backend = check_features(conf, dataset, work, overwrite, backend, engine)
    work.mkdir(parents=True, exist_ok=True)
    save_run_config(work, conf)  # the steps run later on this work directory continue with it
    logger.info("Settings: %s", config_summary(conf))
    timings: Dict[str, float] = {}

    def timed(name, fn, *args, **kwargs):
        t0 = time.perf_counter()
        result = fn(*args, **kwargs)
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
        logger.info("%s done in %.1f s", name, timings[name])
        return result

    skipped: List[str] = []
    scorable = True
    if budget is None:
        timed("extract", extract, conf, dataset, work, overwrite=overwrite, backend=backend, engine=engine)
        shutil.rmtree(provisional_dir(work), ignore_errors=True)  # a budgeted run's scratch: the features are complete
        timed("retrieve", retrieve, conf, dataset, work, overwrite=overwrite)
        if conf.verify.enabled:
            if train_local_deferred(conf, backend):
                timed("extract candidates", extract_candidates, conf, dataset, work, backend=backend, engine=engine)
            timed("verify", verify, conf, dataset, work, overwrite=overwrite)
        timed("predict", predict, conf, dataset, work)
        submission = timed("submit", submit, conf, dataset, work, out=out)
    else:
        submission, scorable = _run_budgeted(conf, dataset, work, Path(out), overwrite, backend, engine, budget,
                                             timings, skipped)
    metrics, score_error = None, getattr(dataset, "solution_error", None)
    if dataset.solution is not None and score_error is None and not scorable:
        logger.info("Not scoring the run: its features are incomplete (the submission is provisional)")
    elif dataset.solution is not None and score_error is None:
        try:
            timed("evaluate", evaluate, conf, dataset, work)
            metrics = json.loads(metrics_path(work).read_text())
        except (ValueError, KeyError) as exc:  # scoring fails, never the submission
            score_error = str(exc)
    if score_error:
        logger.error("The submission %s is written, but it could not be scored: %s", submission, score_error)
    return RunResult(work=work, submission=Path(submission), timings=timings, metrics=metrics,
                     score_error=score_error, time_budget=budget.seconds if budget else None, skipped=skipped)


# --------------------------------------------------------------------------------------------
# A run with a time budget (see landmark_retrieval.budget)
# --------------------------------------------------------------------------------------------
def _make_budget(value: Union[None, str, float, Budget]) -> Optional[Budget]:
    if isinstance(value, Budget):
        return value
    seconds = parse_duration(value, "time_budget")
    return Budget(seconds) if seconds is not None else None


def _global_only(conf: Config) -> Config:
    out = copy.deepcopy(conf)
    out.verify.enabled = False
    return out


def _is_submission_for(path: Path, dataset: Dataset) -> bool:
    """Whether ``path`` is a valid submission with exactly the dataset's test ids."""
    try:
        rows = (read_retrieval_submission(path) if dataset.task == "retrieval" else read_submission(path))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return set(rows) == set(dataset.test_ids) and len(rows) == len(dataset.test_ids)


def _empty_submission(dataset: Dataset, out: Path) -> Path:
    """One row per test id, no prediction: valid, scored 0."""
    if dataset.task == "retrieval":
        return write_retrieval_submission({}, dataset.test_ids, out)
    return write_submission({}, dataset.test_ids, out)


def _stored(work: Path, split: str) -> int:
    """Images of a split with features or a recorded failure in ``work``."""
    with FeatureStore(feature_dir(work, split)) as store:
        return len(set(store.global_ids) | set(store.local_ids) | set(store.failures))


def _count_done(work: Path, splits: List[str], dataset: Dataset) -> str:
    parts = []
    for split in splits:
        total = len(dataset.ids(split))
        parts.append(f"{min(_stored(work, split), total)} of {total} {split}")
    return ", ".join(parts)


def _predicted(path: Path, dataset: Dataset) -> int:
    """Test images with a prediction in the submission at ``path``."""
    rows = read_retrieval_submission(path) if dataset.task == "retrieval" else read_submission(path)
    return sum(1 for value in rows.values() if value)


def _provisional_submission(conf: Config, dataset: Dataset, work: Path, out: Path,
                            backend: Backend) -> Tuple[Path, bool]:
    """The submission from the features extracted so far, computed in ``WORK/provisional/`` (links
    to the run's shards, its own codebook and retrieval): the work directory itself stays a
    resumable run that a later call completes. Returns it, and whether it has predictions."""
    scratch = provisional_dir(work)
    shutil.rmtree(scratch, ignore_errors=True)
    db = dataset.db_split
    aggregating = backend.aggregator is not None
    fitted = codebook_path(work, db).is_file()  # codebook-made globals are usable only with their codebook
    for split in (db, "test"):
        src, dst = feature_dir(work, split), feature_dir(scratch, split)
        dst.mkdir(parents=True, exist_ok=True)
        for shard in sorted(src.glob("*-*.h5")) if src.is_dir() else []:
            if not aggregating or fitted or shard.name.startswith("part-"):
                (dst / shard.name).symlink_to(shard.resolve())
        if aggregating and fitted and split == db:
            (dst / codebook_path(work, db).name).symlink_to(codebook_path(work, db).resolve())
        meta = read_meta(src)
        if meta is not None:
            write_meta(dst, meta)
    conf_g = _global_only(conf)
    conf_g.retrieve.label_aware = False
    for split in (db, "test"):
        with FeatureStore(feature_dir(scratch, split)) as store:
            usable = store.local_ids if aggregating else store.global_ids
        if not usable:
            logger.info("Time budget: nothing to predict from yet (no %s image has features)", split)
            return _empty_submission(dataset, out), False
    try:
        if aggregating:
            stores = {s: FeatureStore(feature_dir(scratch, s)) for s in (db, "test")}
            aggregate_globals(backend, scratch, stores, conf.extract.shard_size, db_split=db)
            for store in stores.values():
                store.close()
        if conf.predict.nonlandmark_dir:
            extract_nonlandmark(conf, scratch, db, backend)
        retrieve(conf_g, dataset, scratch)
    except (ValueError, RuntimeError) as exc:
        logger.info("Time budget: nothing to predict from yet (%s)", exc)
        return _empty_submission(dataset, out), False
    predict(conf_g, dataset, scratch)
    return submit(conf_g, dataset, scratch, out=out, verified=False), True


def _verified_share(work: Path) -> Tuple[int, int]:
    """(test images verified, test images with candidates)."""
    retrieval = load_retrieval(retrieval_path(work))
    return len(set(load_verification(work)) & set(retrieval.query_ids)), len(retrieval.query_ids)


def _run_budgeted(conf: Config, dataset: Dataset, work: Path, out: Path, overwrite: bool, backend: Backend,
                  engine: Optional[DaskEngine], budget: Budget, timings: Dict[str, float],
                  skipped: List[str]) -> Tuple[Path, bool]:
    """Extract test then database images, a global-only submission, then verification until the
    deadline (see :mod:`landmark_retrieval.budget`). Returns the submission and whether the work
    directory holds a complete retrieval (so that the run can be scored)."""
    db = dataset.db_split
    splits = ["test", db] + [s for s in dataset_splits(conf, dataset) if s not in ("test", db)]
    deferred = conf.verify.enabled and train_local_deferred(conf, backend)
    plan = RunPlan(conf, dataset, backend, budget, splits, deferred,
                   stored={split: _stored(work, split) for split in splits})
    logged: List[str] = []

    def on_measured(desc: str) -> None:
        if desc.startswith("extract ") and (not logged or desc not in logged):
            seconds = budget.seconds_per(desc) or 0.0
            plan.log(f"after the first {desc[len('extract '):]} images ({seconds:.3g} s/image)"
                     if not logged else f"updated ({desc[len('extract '):]}: {seconds:.3g} s/image)")
            logged.append(desc)

    budget.on_measured = on_measured
    logger.info("Time budget %s: test features and the database's global descriptors first, then a global-only "
                "submission, then verification while time is left", budget)
    if not _is_submission_for(out, dataset):
        _empty_submission(dataset, out)
        logger.info("Time budget: placeholder submission (no predictions yet) at %s", out)

    def timed(name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0

    with observe_progress(budget.observe):
        plan.extraction_start = budget.now()
        pending = list(splits)  # test first: with the database's global descriptors, a submission
        while pending:
            split = pending.pop(0)
            # the stop is asked again at every image: it follows the images extracted so far
            finished, _ = timed("extract", budget.run, "extract", functools.partial(plan.extraction_stop, split),
                                extract, conf, dataset, work, overwrite=overwrite, splits=(split,), backend=backend,
                                aggregate=False, engine=engine)
            if finished:
                plan.todo[split] = 0
                continue
            if split != db and db in pending and budget.now() < plan.extraction_stop():
                # stopped to keep time for the database (RunPlan.extraction_stop): it first, then the rest
                logger.info("Time budget %s: %s images next, then more %s images while time is left",
                            budget, db, split)
                pending.insert(pending.index(db) + 1, split)
                continue
            write_failures(work, dataset)
            what = _count_done(work, splits, dataset)
            submission, predicted = timed("submit", _provisional_submission, conf, dataset, work, out, backend)
            n_test = len(dataset.test_ids)
            outcome = (f"the submission is predicted from them for {_predicted(submission, dataset)} of {n_test} "
                       "test images (the others have an empty prediction), without verification" if predicted
                       else "too few to predict from: the submission has an empty prediction for every test image")
            note = f"extraction: stopped with {what} images extracted; {outcome} (run again with more time)"
            logger.warning("Time budget %s: %s", budget, note)
            skipped.append(note)
            return submission, False
        if not logged:
            plan.log("(every image was extracted before)")
            logged.append("")
        timed("extract", extract, conf, dataset, work, backend=backend, engine=engine)  # codebook, failures.csv
        shutil.rmtree(provisional_dir(work), ignore_errors=True)
        timed("retrieve", retrieve, conf, dataset, work, overwrite=overwrite)
        conf_g = _global_only(conf)
        timed("predict", predict, conf_g, dataset, work)
        submission = timed("submit", submit, conf_g, dataset, work, out=out, verified=False)
        logger.info("Time budget %s: global-only submission written (%s)", budget, submission)
        if not conf.verify.enabled:
            return submission, True

        stop = plan.optional_stop()
        if deferred:
            finished, _ = timed("extract candidates", budget.run, "extract", stop, extract_candidates, conf, dataset,
                                work, backend=backend, engine=engine)
            if not finished:
                note = ("verification: the re-ranking candidates' local features could not all be extracted in time, "
                        "so nothing was verified (the submission is global-only; run again with more time)")
                logger.warning("Time budget %s: %s", budget, note)
                skipped.append(note)
                return submission, True
        every = conf.run.checkpoint_every
        first = True
        while True:
            until = stop if every is None else min(stop, budget.now() + every)
            finished, _ = timed("verify", budget.run, "verify", until, verify, conf, dataset, work,
                                overwrite=overwrite and first)
            first = False
            timed("predict", predict, conf, dataset, work)
            submission = timed("submit", submit, conf, dataset, work, out=out)
            verified, total = _verified_share(work)
            if finished or verified == total:  # (stopped right after the last test image)
                logger.info("Time budget %s: verified submission written (%s)", budget, submission)
                break
            if budget.now() >= stop:
                note = (f"verification of {total - verified} of {total} test images (they keep their global-only "
                        "prediction; run again with more time to verify them)")
                logger.warning("Time budget %s: stopped %s", budget, note)
                skipped.append(note)
                break
            logger.info("Time budget %s: checkpoint, %d of %d test images verified, submission updated (%s)",
                        budget, verified, total, submission)
    logger.info("Time budget: finished after %s of %s", format_duration(budget.elapsed()),
                format_duration(budget.seconds))
    return submission, True
