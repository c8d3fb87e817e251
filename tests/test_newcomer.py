"""Rough edges a new user hit (issue #21).

A. A retrieval run (GLR2021 layout: ``index/`` + ``test/``, no ``train.csv``) speaks of index
   images: no "train" and no made-up landmark (-1, None) in its logs, printed lines, tables and
   figure titles.
B. A time budget shorter than extraction still uses its time: the run extracts what it can,
   predicts the test images that have features, and finishes within the budget.
"""
from __future__ import annotations

import contextlib
import csv
import io
import logging
import re
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from landmark_retrieval import cli, visualize
from landmark_retrieval.backends.sift import SiftBackend
from landmark_retrieval.budget import Budget
from landmark_retrieval.demo import DemoSpec, build_demo_dataset
from landmark_retrieval.io.dataset import load_dataset
from landmark_retrieval.io.progress import observe_progress
from landmark_retrieval.io.store import FeatureStore
from landmark_retrieval.io.submission import read_retrieval_submission, read_submission
from landmark_retrieval.pipeline import run
from landmark_retrieval.presets import get_config

#: wording that must not describe index images
WRONG = re.compile(r"\btrain\b|landmark -1|landmark None|label -1|predicted -1", re.IGNORECASE)
def _wrong(lines: List[str]) -> List[str]:
    return [line for line in lines if WRONG.search(line)]


def _titles(fig) -> List[str]:
    out = [ax.get_title() for ax in fig.axes]
    if fig._suptitle is not None:
        out.append(fig._suptitle.get_text())
    return [t for t in out if t]


class _Records(logging.Handler):
    """Every record of the package logger, debug included."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def retrieval_session(tmp_path_factory) -> Dict[str, object]:
    """A retrieval dataset without train.csv, run from the command line with ``-v``; what it
    logged and printed, its tables and the titles of its figures."""
    root = tmp_path_factory.mktemp("newcomer_retrieval")
    data = build_demo_dataset(root / "data", DemoSpec(train_views=2, test_views=1, distractor_views=1, seed=3,
                                                      task="retrieval", label_views=0))
    assert not (data / "train.csv").exists() and (data / "index").is_dir()
    work, out = root / "work", root / "submission.csv"
    logger = logging.getLogger("landmark_retrieval")
    handler = _Records()
    logger.addHandler(handler)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            assert cli.main(["-v", "run", "--data", str(data), "--work", str(work), "--out", str(out), "--preset",
                             "demo", "--set", "verify.num_to_rerank=5", "--set", "verify.num_workers=2"]) == 0
            assert cli.main(["-v", "evaluate", "--data", str(data), "--work", str(work)]) == 0
            assert cli.main(["-v", "show", "--data", str(data), "--work", str(work), "--out",
                             str(root / "show" / "q.png")]) == 0
        query = visualize.pick_query(data, work)
        db_id = visualize.best_neighbour(data, work, query)
        table = visualize.neighbour_table(data, work, query)
        titles = _titles(visualize.show_query(data, work, query)) + _titles(visualize.show_pair(data, work, query,
                                                                                                db_id))
    finally:
        logger.removeHandler(handler)
    return {"data": data, "work": work, "out": out, "records": handler.records, "printed": printed.getvalue(),
            "table": table, "titles": titles}


@pytest.mark.slow
def test_retrieval_run_says_index_image(retrieval_session):
    s = retrieval_session
    records = s["records"]
    logged = [r.getMessage() for r in records]
    assert any(r.levelno == logging.DEBUG for r in records)  # -v reached the run
    assert not _wrong(logged), _wrong(logged)
    assert any("index images" in line for line in logged)
    printed = s["printed"].splitlines()
    assert any(line.startswith("neighbours:") for line in printed) and any("map100" in line for line in printed)
    without_paths = s["printed"].replace(str(s["data"].parent), "ROOT")
    assert not _wrong(printed) and "-1" not in without_paths and "None" not in without_paths

    table = s["table"]
    assert "landmark_id" not in table.columns  # index images have no landmark without train.csv
    assert "correct" in table.columns and table["correct"].iloc[0]  # from solution.csv's relevant images
    assert not _wrong(table.to_string().splitlines())

    titles = s["titles"]
    assert len(titles) >= 6, titles  # the query, its neighbours, the pair and its verdict
    assert not _wrong(titles) and not any("-1" in t or "None" in t for t in titles), titles
    assert sum(t.startswith("#") and " index " in t for t in titles) >= 5, titles
    assert any(t.startswith("index ") and "keypoints" in t for t in titles), titles  # show_pair's index image
    assert any("relevant index images" in t for t in titles), titles

    work = s["work"]
    with open(work / "predictions.csv", newline="") as fh:
        assert next(csv.reader(fh)) == ["id", "images", "global_images"]
    with open(work / "failures.csv", newline="") as fh:
        assert not _wrong(fh.read().splitlines())
    assert s["out"].read_text().startswith("id,images\n")


@pytest.mark.slow
def test_retrieval_run_says_index_image_everywhere(retrieval_session):
    logged = [r.getMessage() for r in retrieval_session["records"]]
    assert not _wrong(logged), _wrong(logged)


@pytest.mark.slow
def test_recognition_figures_keep_their_wording(small_dataset, tmp_path):
    work = tmp_path / "work"
    run(get_config("demo", ["verify.num_workers=1", "verify.num_to_rerank=5"]), small_dataset, work,
        tmp_path / "submission.csv")
    query = visualize.pick_query(small_dataset, work)
    db_id = visualize.best_neighbour(small_dataset, work, query)
    table = visualize.neighbour_table(small_dataset, work, query)
    assert "landmark_id" in table.columns and (table["landmark_id"] >= 0).all()
    titles = _titles(visualize.show_query(small_dataset, work, query))
    assert "predicted " in titles[0] and "true: " in titles[0]
    neighbours = [t for t in titles if t.startswith("#")]
    assert neighbours and all(re.match(r"#\d+ landmark \d+\n", t) for t in neighbours), neighbours
    pair = _titles(visualize.show_pair(small_dataset, work, query, db_id))
    label = load_dataset(small_dataset).labels()[db_id]
    assert pair[1].startswith(f"train {db_id}, landmark {label} (")


# --------------------------------------------------------------------------------------------
# B. A budget shorter than extraction
# --------------------------------------------------------------------------------------------
class FakeClock:
    """Seconds that pass only when an image is extracted: 1 s each unless ``per_image`` says
    otherwise for a bar (an observer of the progress bars, registered outside the run's own so
    that it ticks first)."""

    def __init__(self, per_image: Optional[Dict[str, float]] = None) -> None:
        self.t = 0.0
        self.last: Dict[str, int] = {}
        self.per_image = per_image or {}

    def __call__(self) -> float:
        return self.t

    def observe(self, desc: str, done: int, total) -> None:
        if desc.startswith("extract "):
            self.t += (done - (self.last.get(desc, 0) if done else done)) * self.per_image.get(desc, 1.0)
            self.last[desc] = done


def _fake_run(data: Path, tmp_path: Path, seconds: float, per_image: Optional[Dict[str, float]] = None, **kwargs):
    clock = FakeClock(per_image)
    budget = Budget(seconds, clock=clock, flops=1e15, safety=1.0)
    conf = get_config("demo", ["verify.num_workers=1", "run.checkpoint_every=none"])
    with observe_progress(clock.observe):
        result = run(conf, data, tmp_path / "work", tmp_path / "submission.csv", time_budget=budget, **kwargs)
    return result, clock


def test_test_images_alone_longer_than_the_budget_leave_time_for_the_database(small_dataset, tmp_path):
    """16 test and 26 train images at 1 s each, 20 s: the test images alone would take all the
    time (and with no train image nothing could be predicted). A quarter of the extraction time
    is kept for the train images: 15 test images, then train images until the deadline."""
    ds = load_dataset(small_dataset)
    result, clock = _fake_run(small_dataset, tmp_path, 20)
    assert clock.t <= 20 - 1  # the safety margin is kept (extraction stops between images)
    with FeatureStore(tmp_path / "work" / "features" / "test") as s:
        n_test = len(s.local_ids)
    with FeatureStore(tmp_path / "work" / "features" / "train") as s:
        n_train = len(s.local_ids)
    # 1 s safety, ~0.2 s after extraction: ~18.8 s to extract, a quarter kept for the train images
    assert n_test == 15 and n_train == 4
    sub = read_submission(tmp_path / "submission.csv")
    assert list(sub) == ds.test_ids and sum(v is not None for v in sub.values()) == n_test
    assert len(result.skipped) == 1
    assert f"stopped with 15 of {len(ds.test_ids)} test, 4 of 26 train images extracted" in result.skipped[0]
    assert f"for 15 of {len(ds.test_ids)} test images (the others have an empty prediction)" in result.skipped[0]


def test_test_images_resume_once_the_database_is_done(small_dataset, tmp_path, caplog):
    """Train images faster than the test images' rate that the plan assumes for them: once they
    are all extracted, the test images continue until the deadline."""
    ds = load_dataset(small_dataset)
    # 17 s: ~15.8 s to extract; test images stop at ~11.9 s (a quarter kept), 26 train images take 2.6 s
    result, clock = _fake_run(small_dataset, tmp_path, 17, per_image={"extract train": 0.1})
    assert clock.t <= 17  # (the image that crosses the stop is finished: the safety margin covers it)
    assert "train images next, then more test images while time is left" in caplog.text
    with FeatureStore(tmp_path / "work" / "features" / "train") as s:
        assert len(s.local_ids) == len(ds.train_ids)
    with FeatureStore(tmp_path / "work" / "features" / "test") as s:
        n_test = len(s.local_ids)
    assert 12 < n_test < len(ds.test_ids)  # more than before the train images
    assert f"for {n_test} of {len(ds.test_ids)} test images" in result.skipped[0]


def test_retrieval_budget_with_no_index_image_says_index(tmp_path, caplog):
    data = build_demo_dataset(tmp_path / "data", DemoSpec(train_views=1, test_views=1, distractor_views=1, seed=3,
                                                           task="retrieval", label_views=0))
    result, _ = _fake_run(data, tmp_path, 1.5)  # one test image, then the time is up
    assert "too few to predict from" in result.skipped[0] and "of 13 index images" in result.skipped[0]
    assert "no index image has features" in caplog.text
    logged = [r.getMessage() for r in caplog.records]
    assert not _wrong(logged), _wrong(logged)
    assert all(not v for v in read_retrieval_submission(tmp_path / "submission.csv").values())


class SlowSift(SiftBackend):
    """The demo's RootSIFT with a fixed extra time per image: on any machine, extracting the demo
    dataset takes several times the budget of the test below."""

    SECONDS = 0.15

    def extract(self, image, local=True, global_=True):
        time.sleep(self.SECONDS)
        return super().extract(image, local=local, global_=global_)


@pytest.mark.slow
def test_a_budget_shorter_than_extraction_predicts_what_it_extracted(tmp_path):
    """The demo dataset with the demo preset, extraction slowed to take at least twice the budget:
    the run extracts test images, then train images, predicts the test images it extracted from
    them, and returns within the budget (+1 s on a busy machine); the note says what it left out."""
    data = build_demo_dataset(tmp_path / "demo")  # 40 test and 39 train images
    ds = load_dataset(data)
    conf = get_config("demo")
    n_images = len(ds.test_ids) + len(ds.train_ids)
    budget = 6.0  # extraction alone takes at least 79 x 0.15 = 11.9 s (18 s on 2 busy cores)
    assert budget < 0.55 * n_images * SlowSift.SECONDS
    out = tmp_path / "submission.csv"
    t0 = time.monotonic()
    result = run(conf, data, tmp_path / "work", out, backend=SlowSift(conf.extract), time_budget=budget)
    elapsed = time.monotonic() - t0
    assert elapsed <= budget + 1.0, f"{elapsed:.1f} s for a {budget} s budget"
    sub = read_submission(out)
    assert list(sub) == ds.test_ids
    predicted = sum(v is not None for v in sub.values())
    with FeatureStore(tmp_path / "work" / "features" / "test") as s:
        extracted = len(s.local_ids)
    with FeatureStore(tmp_path / "work" / "features" / "train") as s:
        assert len(s.local_ids) >= 1  # time was kept for the database
    assert predicted == extracted >= 0.2 * len(ds.test_ids), (predicted, extracted, result.skipped)
    assert len(result.skipped) == 1 and result.skipped[0].startswith("extraction: stopped with ")
    assert f"predicted from them for {predicted} of {len(ds.test_ids)} test images" in result.skipped[0]
    assert result.metrics is None and result.time_budget == budget
