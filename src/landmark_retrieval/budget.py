"""A run's time budget: a plan from measured throughput, and optional work stopped in time.

With ``run.time_budget`` (``landmark-retrieval run --time-budget 8h30m``, or ``time_budget=`` of
:func:`landmark_retrieval.pipeline.run`) the run orders its work so that a valid submission exists
early and improves it while time is left:

1. a placeholder submission (one row per test id, no prediction) unless the output already is a
   valid submission for these test ids: something valid exists from the first second;
2. test features, then the database's features (global descriptors first when local ones are
   deferred; VLAD: local features, then the codebook), retrieval, and a **global-only submission**;
3. candidate local features and **verification**, stopped when only the time to predict and write
   the submission is left; the improved submission is written (atomically) at every checkpoint
   (``run.checkpoint_every``) and at the end.

After the first images of extraction the run logs its plan: the time of every step, estimated
from the measured images per second (and the machine's measured float32, k-means and
element-wise speeds for the codebook, retrieval and verification), and a warning when it does not
fit. When extraction cannot finish in time it stops, and the submission is predicted from the
images extracted by then (in ``WORK/provisional/``: the work directory stays an ordinary resumable
run): test images with features get a prediction, the others an empty row. Extraction stops when
only the time to predict from *the images extracted so far* is left (re-estimated after every
image), and while the test images are extracted, up to a quarter of the extraction time is kept
for the database (:data:`DB_SHARE`): without database images nothing can be predicted. A later
run (with more time) continues where this one stopped and ends with the submission an unbudgeted
run writes.

Steps stop at safe points only: an observer of the progress bars (see
:func:`landmark_retrieval.io.progress.observe_progress`) raises :class:`BudgetExhausted` after an
image is stored or a test image is verified, which the steps handle like Ctrl-C (the current
shard is completed, finished verifications are kept). Retrieval, the codebook and predicting are
never stopped: the plan keeps time for them (1.5 times their estimate) before the deadline, plus a
safety margin (2 % of the budget, 0.5 s to 10 min).
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .backends.codebook import kmeans as codebook_kmeans
from .config import parse_duration

if TYPE_CHECKING:
    from .backends.base import Backend
    from .config import Config
    from .io.dataset import Dataset

logger = logging.getLogger("landmark_retrieval")

#: share of the extraction time kept for the database while test images are extracted
DB_SHARE = 0.25
#: passes over the descriptors of a codebook fit: 25 k-means iterations and the k-means++ start
KMEANS_PASSES = 26
#: seconds per image of encoding a global descriptor besides its arithmetic (reading, writing)
ENCODE_OVERHEAD = 0.002


def format_duration(seconds: float) -> str:
    """``8h30m``, ``12m05s``, ``42s``, ``1.5s`` (negative times get a minus sign)."""
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds < 10:
        return f"{seconds:.1f}s"
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    if h:
        return f"{h}h{m:02d}m"
    if m:
        return f"{m}m{sec:02d}s"
    return f"{sec}s"


class BudgetExhausted(BaseException):
    """Raised inside a stoppable step when its time is up (the pipeline catches it).

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` of a step mistakes
    it for a failed image; the steps handle it as they handle Ctrl-C.
    """


@dataclass
class _Rate:
    """Items per second of one progress bar."""

    t0: float
    total: Optional[int]
    done: int = 0
    t: float = 0.0
    reported: bool = False

    @property
    def seconds_per_item(self) -> Optional[float]:
        if self.done <= 0 or self.t <= self.t0:
            return None
        return (self.t - self.t0) / self.done


def measure_kmeans(rows: int = 2000, dim: int = 128, words: int = 32, iterations: int = 5,
                   repeats: int = 3) -> float:
    """Seconds per descriptor x word x dimension x pass of this machine's k-means (the codebook
    fit's :func:`~landmark_retrieval.backends.codebook.kmeans`): the best of ``repeats`` small
    fits on random rows, which run every iteration (a slight over-estimate: real descriptors
    often converge earlier, and a small fit pays its fixed costs over fewer rows)."""
    x = np.random.default_rng(0).standard_normal((rows, dim)).astype(np.float32)
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        codebook_kmeans(x, words, 0, iterations=iterations)
        best = min(best, time.perf_counter() - t0)
    return best / (rows * words * dim * (iterations + 1))


def measure_scatter(rows: int = 500, dim: int = 128, words: int = 32, repeats: int = 3) -> float:
    """Seconds per descriptor value of element-wise numpy work as in a VLAD encoding (residuals
    summed per word with ``np.add.at``): the best of ``repeats`` runs."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, dim)).astype(np.float32)
    words_of = rng.integers(0, words, rows)
    centres = rng.standard_normal((words, dim)).astype(np.float32)
    best = float("inf")
    for _ in range(max(1, repeats)):
        out = np.zeros((words, dim), np.float32)
        t0 = time.perf_counter()
        np.add.at(out, words_of, x - centres[words_of])
        best = min(best, time.perf_counter() - t0)
    return best / (rows * dim)


def measure_flops(size: int = 384, seconds: float = 0.05) -> float:
    """float32 operations per second of this machine's numpy matrix product: the best of the
    products run in ``seconds`` (after a warm-up that starts the BLAS threads)."""
    a = np.random.default_rng(0).standard_normal((size, size)).astype(np.float32)
    a @ a
    best, start = float("inf"), time.perf_counter()
    while True:
        t0 = time.perf_counter()
        a @ a
        t1 = time.perf_counter()
        best = min(best, t1 - t0)
        if t1 - start > seconds:
            break
    return 2.0 * size ** 3 / max(best, 1e-9)


class Budget:
    """The time a run may take, measured from its creation.

    Args:
        seconds: the budget.
        clock: monotonic seconds (tests pass a fake one).
        flops: float32 operations per second used to estimate retrieval and verification
            (default: measured once).
        safety: seconds kept free before the deadline (default 2 % of the budget, 0.5 s to 10 min).
        kmeans: seconds per descriptor x word x dimension x pass of a codebook fit (default:
            measured once, see :func:`measure_kmeans`; ``2 / flops`` when ``flops`` is given).
        scatter: seconds per descriptor value of a global descriptor's encoding (default:
            measured once, see :func:`measure_scatter`; ``1 / flops`` when ``flops`` is given).

    A budget made with a fixed ``flops`` (tests, reproducible plans) measures nothing.
    """

    MIN_ITEMS = 10  # items of a bar before its throughput counts as measured

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic, flops: Optional[float] = None,
                 safety: Optional[float] = None, kmeans: Optional[float] = None, scatter: Optional[float] = None):
        parsed = parse_duration(seconds)
        if parsed is None:
            raise ValueError("Budget: expected a positive time, got none")
        self.seconds = parsed
        self.clock = clock
        self.start = clock()
        self.deadline = self.start + self.seconds
        self.safety = float(safety) if safety is not None else min(600.0, max(0.5, 0.02 * self.seconds))
        self._flops = flops
        fixed = flops is not None
        self._kmeans = kmeans if kmeans is not None else (2.0 / flops if fixed else None)
        self._scatter = scatter if scatter is not None else (1.0 / flops if fixed else None)
        self.rates: Dict[str, _Rate] = {}
        self._stop: Optional[Tuple[str, Union[float, Callable[[], float]]]] = None
        #: called with the bar's description when a bar's throughput is first measured
        self.on_measured: Optional[Callable[[str], None]] = None

    # -- time ----------------------------------------------------------------------------------
    def now(self) -> float:
        return self.clock()

    def elapsed(self) -> float:
        return self.now() - self.start

    def remaining(self) -> float:
        return self.deadline - self.now()

    @property
    def flops(self) -> float:
        if self._flops is None:
            self._flops = measure_flops()
        return self._flops

    @property
    def kmeans(self) -> float:
        """Seconds per descriptor x word x dimension x pass of a codebook fit."""
        if self._kmeans is None:
            self._kmeans = measure_kmeans()
        return self._kmeans

    @property
    def scatter(self) -> float:
        """Seconds per descriptor value of encoding a global descriptor (element-wise work)."""
        if self._scatter is None:
            self._scatter = measure_scatter()
        return self._scatter

    def seconds_per(self, desc: str) -> Optional[float]:
        """Measured seconds per item of the bars named ``desc`` (None before MIN_ITEMS)."""
        rate = self.rates.get(desc)
        return rate.seconds_per_item if rate is not None and rate.reported else None

    # -- observing and stopping -----------------------------------------------------------------
    def observe(self, desc: str, done: int, total: Optional[int]) -> None:
        """Progress observer (see :func:`landmark_retrieval.io.progress.observe_progress`)."""
        t = self.clock()
        rate = self.rates.get(desc)
        if done == 0 or rate is None:
            rate = self.rates[desc] = _Rate(t0=t, total=total)
        else:
            rate.done, rate.t = done, t
            if not rate.reported and done >= min(self.MIN_ITEMS, total or self.MIN_ITEMS):
                rate.reported = True
                if self.on_measured is not None:
                    self.on_measured(desc)
        stop = self._stop
        if stop is not None and desc.startswith(stop[0]):
            until = stop[1]() if callable(stop[1]) else stop[1]
            if t >= until:
                raise BudgetExhausted(desc)

    @contextlib.contextmanager
    def stoppable(self, prefix: str, until: Union[float, Callable[[], float]]) -> Iterator[None]:
        """Inside this block, bars whose description starts with ``prefix`` stop at ``until``
        (a time of :attr:`clock`, or a function that gives it: asked again at every item)."""
        previous, self._stop = self._stop, (prefix, until)
        try:
            yield
        finally:
            self._stop = previous

    def run(self, prefix: str, until: Union[float, Callable[[], float]], fn: Callable[..., Any], *args: Any,
            **kwargs: Any) -> Tuple[bool, Any]:
        """``fn(*args, **kwargs)``, stopped at ``until`` (see :meth:`stoppable`).

        Returns:
            ``(True, result)`` when it finished, ``(False, None)`` when it was stopped.
        """
        try:
            with self.stoppable(prefix, until):
                return True, fn(*args, **kwargs)
        except BudgetExhausted as exc:
            logger.info("Time budget: stopped %s at %s of %s", exc.args[0] if exc.args else prefix,
                        format_duration(self.elapsed()), format_duration(self.seconds))
            return False, None

    def __str__(self) -> str:
        return f"{format_duration(self.seconds)} ({format_duration(max(0.0, self.remaining()))} left)"


@dataclass
class Step:
    """One line of a plan."""

    name: str
    seconds: Optional[float]  # None: not measured yet
    required: bool  # needed for any submission (else: improves it)
    note: str = ""


@dataclass
class RunPlan:
    """What a budgeted run still has to do, with estimated times (see :class:`Budget`)."""

    conf: "Config"
    dataset: "Dataset"
    backend: "Backend"
    budget: Budget
    splits: Sequence[str]  # extraction order
    deferred: bool  # database local features only for re-ranking candidates
    todo: Dict[str, int] = field(default_factory=dict)  # images left per split, when known
    stored: Dict[str, int] = field(default_factory=dict)  # images stored per split when the run began
    #: when extraction started (clock time; default: the budget's start)
    extraction_start: Optional[float] = None
    _sizes: Dict[str, int] = field(default_factory=dict, repr=False)

    # -- numbers --------------------------------------------------------------------------------
    def _size(self, split: str) -> int:
        """Images of a split (counted once: the plan is asked at every extracted image)."""
        if split not in self._sizes:
            self._sizes[split] = len(self.dataset.ids(split))
        return self._sizes[split]

    def _images(self, split: str) -> int:
        """Images of a split still to extract: 0 once done, what its bar has left while it runs,
        else those not :attr:`stored` yet."""
        if split in self.todo:
            return self.todo[split]
        rate = self.budget.rates.get(f"extract {split}")
        if rate is not None and rate.total is not None:
            return max(0, rate.total - rate.done)
        return max(0, self._size(split) - self.stored.get(split, 0))

    def extracted(self, split: str) -> int:
        """Images of a split extracted so far (by this run or, per :attr:`stored`, before it)."""
        return max(0, self._size(split) - self._images(split))

    def _local(self) -> Tuple[int, int]:
        """Local features per image and their dimension (as aggregated: ORB's 32 bytes are 256 bits)."""
        section = getattr(self.conf.extract, self.backend.name, None)
        dim = self.backend.local_dim or 128
        if getattr(self.backend.aggregator, "binary", False):
            dim *= 8  # packed bytes, aggregated as bits
        return int(getattr(section, "max_keypoints", 1000) or 1000), int(dim)

    def _global_dim(self) -> int:
        agg = self.backend.aggregator
        if agg is not None and hasattr(agg, "global_dim"):  # VLAD, BoW, Fisher (backends.aggregators)
            return int(agg.global_dim(self._local()[1]))
        if agg is not None:
            return int(getattr(agg, "num_words", 64)) * self._local()[1]
        return 2048

    def extract_rate(self, split: str) -> Optional[float]:
        """Seconds per image of a split: measured, else the rate measured on another split."""
        rate = self.budget.seconds_per(f"extract {split}")
        if rate is None:
            measured = [r for r in (self.budget.seconds_per(f"extract {s}") for s in self.splits) if r is not None]
            rate = max(measured) if measured else None
        return rate

    def aggregate_seconds(self, db_images: Optional[int] = None, images: Optional[int] = None) -> float:
        """Fitting the codebook on ``db_images`` database images and encoding ``images`` images
        (default: all of them): k-means at the measured k-means speed, encoding at the measured
        float32 and element-wise speeds, plus reading and writing."""
        agg = self.backend.aggregator
        if agg is None:
            return 0.0
        kp, dim = self._local()
        db = self.dataset.db_split
        db_images = self._size(db) if db_images is None else db_images
        images = sum(self._size(s) for s in dict.fromkeys([*self.splits, db])) if images is None else images
        if db_images <= 0:
            return 0.0  # nothing to fit a codebook on: no submission from a codebook
        rows = min(db_images * kp, int(getattr(agg, "max_training", 200_000)))
        words = int(getattr(agg, "num_words", 64))
        fit = KMEANS_PASSES * rows * words * dim * self.budget.kmeans
        encode = images * (kp * words * dim * 2.0 / self.budget.flops + kp * dim * self.budget.scatter
                           + ENCODE_OVERHEAD)
        return fit + encode

    def retrieve_seconds(self, queries: Optional[int] = None, db_images: Optional[int] = None) -> float:
        """Retrieval of ``queries`` test images among ``db_images`` (default: all of them)."""
        q = len(self.dataset.test_ids) if queries is None else queries
        n = self._size(self.dataset.db_split) if db_images is None else db_images
        dim = self._global_dim()
        return 0.05 + 2.0 * q * n * dim / self.budget.flops + q * n * 1e-8 + n * dim * 4 / 5e8  # + top-k, reading

    def submit_seconds(self) -> float:
        """Predicting and writing the submission."""
        return 0.05 + 2e-4 * len(self.dataset.test_ids)

    def finish_seconds(self, extracted: bool = False) -> float:
        """What follows extraction before the global-only submission exists: for every image, or
        (``extracted``) for the images extracted so far, should extraction stop now."""
        if not extracted:
            return self.aggregate_seconds() + self.retrieve_seconds() + self.submit_seconds()
        db = self.dataset.db_split
        n_db, n_test = self.extracted(db), self.extracted("test")
        images = sum(self.extracted(s) for s in dict.fromkeys([*self.splits, db]))
        return self.aggregate_seconds(n_db, images) + self.retrieve_seconds(n_test, n_db) + self.submit_seconds()

    def verify_seconds(self) -> Tuple[Optional[float], Optional[float]]:
        """Candidate local features (None when not deferred or not measured) and verification."""
        q, r = len(self.dataset.test_ids), self.conf.verify.num_to_rerank
        kp, dim = self._local()
        candidates = None
        if self.deferred:
            rate = self.extract_rate("test")
            n = min(self._size(self.dataset.db_split), q * r)
            candidates = n * rate if rate is not None else None
        measured = self.budget.seconds_per("verify")
        workers = self.conf.verify.num_workers or (os.cpu_count() or 1)
        pair = 2.0 * kp * kp * dim / self.budget.flops + self.conf.verify.max_iterations * 3.5e-6
        verify = measured * q if measured is not None else q * r * pair / max(1, workers)
        return candidates, verify

    # -- stop times -----------------------------------------------------------------------------
    def _db_reserve(self, split: Optional[str], stop: float) -> float:
        """Seconds kept for the database's images while ``split`` is extracted before them: the
        time they need at the measured rate, at most :data:`DB_SHARE` of the extraction time."""
        db = self.dataset.db_split
        order = list(self.splits)
        if split is None or split == db or db not in order or split not in order or \
                order.index(split) > order.index(db):
            return 0.0
        rate = self.extract_rate(db)
        if rate is None:
            return 0.0
        start = self.extraction_start if self.extraction_start is not None else self.budget.start
        return min(self._images(db) * rate, DB_SHARE * max(0.0, stop - start))

    def extraction_stop(self, split: Optional[str] = None) -> float:
        """When extraction (of ``split``) must stop so that a submission is written in time: the
        deadline, less the safety margin, 1.5 times what predicting from the images extracted so
        far takes, and (before the database) the time kept for the database's images. Asked at
        every extracted image: it moves earlier as images are added."""
        b = self.budget
        stop = b.deadline - b.safety - 1.5 * self.finish_seconds(extracted=True)
        return stop - self._db_reserve(split, stop)

    def optional_stop(self) -> float:
        """When candidate extraction and verification must stop."""
        b = self.budget
        return b.deadline - b.safety - 1.5 * self.submit_seconds()

    # -- the plan -------------------------------------------------------------------------------
    def steps(self) -> List[Step]:
        out = []
        for split in self.splits:
            n, rate = self._images(split), self.extract_rate(split)
            what = "global descriptors" if split == self.dataset.db_split and self.deferred else "features"
            out.append(Step(f"extract {split}", n * rate if rate is not None else (0.0 if n == 0 else None), True,
                            f"{n} images, {what}"))
        if self.backend.aggregator is not None:
            out.append(Step(f"{self.backend.name} codebook + global descriptors", self.aggregate_seconds(), True))
        out.append(Step("retrieve", self.retrieve_seconds(), True))
        out.append(Step("global-only submission", self.submit_seconds(), True))
        if self.conf.verify.enabled:
            candidates, verify = self.verify_seconds()
            if self.deferred:
                out.append(Step("extract candidates", candidates, False))
            out.append(Step("verify", verify, False))
            out.append(Step("verified submission", self.submit_seconds(), False))
        return out

    def describe(self) -> Tuple[str, Optional[str]]:
        """The plan as one line, and a warning when it does not fit (None when it does)."""
        steps = self.steps()
        parts = [f"{s.name} {format_duration(s.seconds) if s.seconds is not None else '?'}" for s in steps]
        left = self.budget.remaining() - self.budget.safety
        known = [s.seconds for s in steps if s.seconds is not None]
        total = sum(known)
        unknown = [s.name for s in steps if s.seconds is None]
        line = f"{' | '.join(parts)}; total {format_duration(total)}{' + unmeasured' if unknown else ''}"
        required = sum(s.seconds or 0.0 for s in steps if s.required)
        if required > left:
            extraction = [s for s in steps if s.name.startswith("extract ") and s.required]
            available = left - sum(s.seconds or 0.0 for s in steps if s.required and s not in extraction)
            db = next((s for s in extraction if s.name == f"extract {self.dataset.db_split}"), None)
            where = "before extraction starts"
            for s in extraction:
                keep = 0.0  # kept for the database while the splits before it are extracted
                if db is not None and db.seconds and extraction.index(s) < extraction.index(db):
                    keep = min(db.seconds, DB_SHARE * max(0.0, available))
                if s.seconds is not None and available - keep < s.seconds:
                    share = max(0.0, available - keep) / s.seconds if s.seconds else 0.0
                    where = f"at about {share:.0%} of {s.name[len('extract '):]}"
                    if keep and db is not None and db.seconds:
                        where += f" and {min(1.0, keep / db.seconds):.0%} of {db.name[len('extract '):]}"
                    break
                available -= s.seconds or 0.0
            return line, (f"the required steps need {format_duration(required)} but {format_duration(max(0.0, left))}"
                          f" are left: extraction will stop {where} and the submission will be predicted from the "
                          "images extracted by then, without verification; run again (with more time) to finish")
        if total > left:
            spare = left - required
            optional = [s for s in steps if not s.required]
            cand = next((s for s in optional if s.name == "extract candidates"), None)
            if cand is not None and cand.seconds is not None and cand.seconds > spare:
                why = "candidate local features cannot all be extracted, so nothing will be verified"
            else:
                ver = next((s for s in optional if s.name == "verify"), None)
                spare -= (cand.seconds or 0.0) if cand is not None else 0.0
                spare -= self.submit_seconds()
                share = max(0.0, spare) / ver.seconds if ver is not None and ver.seconds else 0.0
                why = f"verification will cover about {min(1.0, share):.0%} of the test images (the others keep " \
                      "their global-only prediction)"
            return line, (f"the plan needs {format_duration(total)} but {format_duration(max(0.0, left))} are left: "
                          f"{why}; run again (with more time) to finish")
        return line, None

    def log(self, why: str) -> None:
        """Log the plan (info) and, when it does not fit, a warning."""
        line, warning = self.describe()
        logger.info("Time budget %s, plan %s: %s", self.budget, why, line)
        if warning:
            logger.warning("Time budget %s: %s", format_duration(self.budget.seconds), warning)
