"""Time budget (run --time-budget): a valid submission early and always, optional work stopped in
time, and a resumed run that ends with the unbudgeted run's results.

Most runs here use a fake clock that advances by one second per finished image or verified test
image, so that the points where a run stops are exact."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Dict

import cv2
import numpy as np
import pytest

from landmark_retrieval.backends.sift import SiftBackend
from landmark_retrieval.budget import Budget, RunPlan, format_duration
from landmark_retrieval.config import parse_duration
from landmark_retrieval.features import Features
from landmark_retrieval.io.dataset import load_dataset
from landmark_retrieval.io.layout import load_verification
from landmark_retrieval.io.progress import observe_progress, progress
from landmark_retrieval.io.store import FeatureStore
from landmark_retrieval.io.submission import read_submission
from landmark_retrieval.pipeline import run
from landmark_retrieval.presets import config_summary, get_config, read_run_config

ARTIFACTS = ("retrieval.h5", "verification.csv")


# --------------------------------------------------------------------------------------------
# Durations and the run section
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value,seconds", [
    ("8h30m", 30600.0), ("90m", 5400.0), ("45s", 45.0), ("1.5h", 5400.0), ("1d", 86400.0), ("2h 15m 10s", 8110.0),
    ("3600", 3600.0), (" 12 ", 12.0), (3600, 3600.0), (0.25, 0.25), ("30600.0", 30600.0),
])
def test_durations(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", [None, "", "none", "None", "off"])
def test_no_budget(value):
    assert parse_duration(value) is None


@pytest.mark.parametrize("value", ["8h30", "abc", "-5", "0", 0, "5min", True, "h"])
def test_bad_durations_name_the_option(value):
    with pytest.raises(ValueError, match=r"^run.time_budget: expected a positive number of seconds or a duration"):
        parse_duration(value)


def test_format_duration():
    assert [format_duration(s) for s in (1.25, 42, 725, 30600, 30599.6, -90)] == \
        ["1.2s", "42s", "12m05s", "8h30m", "8h30m", "-1m30s"]


def test_run_section_is_a_setting(tmp_path):
    conf = get_config("demo", ["run.time_budget=8h30m", "run.checkpoint_every=10m", "run.cluster=local:2"])
    assert (conf.run.time_budget, conf.run.checkpoint_every, conf.run.cluster) == (30600.0, 600.0, "local:2")
    assert get_config("demo", {"run": {"time_budget": 90}}).run.time_budget == 90.0
    assert get_config("demo").run.time_budget is None and get_config("demo").run.checkpoint_every == 1800.0
    assert "run.time_budget=30600.0" in config_summary(conf)
    with pytest.raises(ValueError, match="run.time_budget: expected a positive number of seconds"):
        get_config("demo", ["run.time_budget=soon"])
    from landmark_retrieval.presets import save_run_config

    save_run_config(tmp_path, conf)
    assert read_run_config(tmp_path).run == conf.run  # round trip through config.json


# --------------------------------------------------------------------------------------------
# Observed progress bars
# --------------------------------------------------------------------------------------------
def test_an_observer_sees_every_item_and_can_stop_a_loop_after_one():
    seen, done = [], []

    class Stop(BaseException):
        pass

    def observer(desc, n, total):
        seen.append((desc, n, total))
        if desc == "work" and n == 3:
            raise Stop()

    with observe_progress(observer):
        with pytest.raises(Stop):
            for i in progress(range(10), desc="work"):
                done.append(i)
        with progress(total=2, desc="other") as bar:
            bar.update(2)
    assert done == [0, 1, 2]  # the third item was finished before the stop
    assert seen == [("work", 0, 10), ("work", 1, 10), ("work", 2, 10), ("work", 3, 10), ("other", 0, 2),
                    ("other", 2, 2)]
    assert list(progress(range(3))) == [0, 1, 2]  # unobserved outside the block


# --------------------------------------------------------------------------------------------
# Runs with a fake clock
# --------------------------------------------------------------------------------------------
def fake_run(data, work: Path, out: Path, seconds: float, **kwargs):
    """``run`` under a fake clock; returns the result and the clock."""
    clock = FakeClock()
    budget = Budget(seconds, clock=clock, flops=1e15, safety=1.0)
    conf = get_config("demo", ["verify.num_workers=1", "run.checkpoint_every=none", *kwargs.pop("overrides", [])])
    with observe_progress(clock.observe):
        result = run(conf, data, work, out, time_budget=budget, **kwargs)
    return result, clock


class FakeClock:
    """Seconds that pass only when an image is finished or a test image verified: 1 s each (an
    observer of the progress bars, registered outside the run's own: it ticks first)."""

    def __init__(self):
        self.t = 0.0
        self.last: Dict[str, int] = {}

    def __call__(self) -> float:
        return self.t

    def observe(self, desc: str, done: int, total) -> None:
        if desc.startswith("extract ") or desc == "verify":
            self.t += done - (self.last.get(desc, 0) if done else done)
            self.last[desc] = done


def reference_run(data, root: Path, backend=None, overrides=()) -> Dict[str, bytes]:
    conf = get_config("demo", ["verify.num_workers=1", *overrides])
    run(conf, data, root / "work", root / "submission.csv", backend=backend)
    out = {name: (root / "work" / name).read_bytes() for name in ARTIFACTS}
    out["submission.csv"] = (root / "submission.csv").read_bytes()
    return out


def same_as(reference: Dict[str, bytes], work: Path, out: Path) -> None:
    for name in ARTIFACTS:
        assert (work / name).read_bytes() == reference[name], f"{name} differs from the unbudgeted run"
    assert out.read_bytes() == reference["submission.csv"]


@pytest.fixture(scope="module")
def reference(small_dataset, tmp_path_factory) -> Dict[str, bytes]:
    return reference_run(small_dataset, tmp_path_factory.mktemp("budget_reference"))


def complete_submission(out: Path, data) -> Dict:
    sub = read_submission(out)  # valid: raises otherwise
    assert list(sub) == load_dataset(data).test_ids  # one row per test id, in order
    return sub


def test_extraction_stopped_in_the_database_predicts_from_what_exists(small_dataset, reference, tmp_path, caplog):
    ds = load_dataset(small_dataset)
    work, out = tmp_path / "work", tmp_path / "submission.csv"
    n_test = len(ds.test_ids)
    # 16 test images, then train images; the required steps after extraction take ~0.2 s here and
    # the safety margin is 1 s: extraction must stop once 16 + 9 = 25 >= 26 - 1 - 1.5 * 0.2
    result, clock = fake_run(small_dataset, work, out, n_test + 10)
    assert clock.t <= n_test + 10
    with FeatureStore(work / "features" / "train") as s:
        assert len(s.local_ids) == 9
    with FeatureStore(work / "features" / "test") as s:
        assert len(s.local_ids) == n_test
    assert not (work / "retrieval.h5").exists() and not (work / "features" / "train" / "codebook.h5").exists()
    sub = complete_submission(out, small_dataset)
    assert sum(v is not None for v in sub.values()) == n_test  # predicted from the 9 train images
    assert len(result.skipped) == 1 and "stopped with 16 of 16 test, 9 of 26 train images" in result.skipped[0]
    assert result.metrics is None
    assert "plan after the first test images" in caplog.text
    assert "extraction will stop at about" in caplog.text  # the plan's warning

    result = run(get_config("demo", ["verify.num_workers=1"]), small_dataset, work, out, time_budget="none")
    assert result.skipped == [] and result.time_budget is None
    assert not (work / "provisional").exists()
    same_as(reference, work, out)


def test_nothing_extracted_still_gives_a_complete_submission(small_dataset, tmp_path):
    out = tmp_path / "submission.csv"
    out.write_text("id,landmarks\nnot-a-test-id,1 0.5\n")  # a stale file is replaced at once
    result, _ = fake_run(small_dataset, tmp_path / "work", out, 1.5)
    sub = complete_submission(out, small_dataset)
    assert all(v is None for v in sub.values())
    assert "too few to predict from" in result.skipped[0]


def test_verification_stopped_keeps_finished_test_images_and_resumes(small_dataset, reference, tmp_path, caplog):
    ds = load_dataset(small_dataset)
    n = len(ds.train_ids) + len(ds.test_ids)
    work, out = tmp_path / "work", tmp_path / "submission.csv"
    # extraction ends at n; verification must stop once n + 6 >= n + 7 - 1 (safety) - 1.5 * 0.053 (submission)
    result, clock = fake_run(small_dataset, work, out, n + 7)
    verified = load_verification(work)
    assert len(verified) == 6 and all(len(v) == 10 for v in verified.values())
    assert result.skipped == [f"verification of {len(ds.test_ids) - 6} of {len(ds.test_ids)} test images (they keep "
                              "their global-only prediction; run again with more time to verify them)"]
    assert "global-only submission written" in caplog.text
    sub = complete_submission(out, small_dataset)
    assert sum(v is not None for v in sub.values()) == len(ds.test_ids)
    assert result.metrics is not None  # scored: the retrieval is complete

    result, _ = fake_run(small_dataset, work, out, 1000)  # more time: finishes the rest
    assert result.skipped == []
    assert len(load_verification(work)) == len(ds.test_ids)
    same_as(reference, work, out)


def test_checkpoints_write_the_improved_submission(small_dataset, reference, tmp_path, caplog, monkeypatch):
    import landmark_retrieval.pipeline as pipeline

    written = []
    submit = pipeline.submit

    def counting_submit(conf, dataset, work, **kwargs):
        written.append(len(load_verification(work)))
        return submit(conf, dataset, work, **kwargs)

    monkeypatch.setattr(pipeline, "submit", counting_submit)
    work, out = tmp_path / "work", tmp_path / "submission.csv"
    result, _ = fake_run(small_dataset, work, out, 1000, overrides=["run.checkpoint_every=4"])
    assert written == [0, 4, 8, 12, 16]  # global-only, three checkpoints, the end
    assert caplog.text.count("checkpoint, ") == 3 and result.skipped == []
    same_as(reference, work, out)


# -- the deferred (DELG-like) path: database global descriptors first, local features later ----
class ThumbBackend(SiftBackend):
    """RootSIFT local features and a global descriptor of its own (an 8 x 8 colour thumbnail), so
    that train local features can be deferred as with DELG."""

    name = "sift-thumb"

    def __init__(self):
        super().__init__()
        self.aggregator = None

    def extract(self, image, local=True, global_=True) -> Features:
        feats = super().extract(image) if local else Features.empty(self.local_dim, image.shape[1::-1])
        if global_:
            g = cv2.resize(image, (8, 8), interpolation=cv2.INTER_AREA).astype(np.float32).reshape(-1) - 127.5
            feats.global_descriptor = g / (np.linalg.norm(g) or 1.0)
        return feats


DEFERRED = ["extract.train_local=candidates"]


@pytest.fixture(scope="module")
def deferred_reference(small_dataset, tmp_path_factory) -> Dict[str, bytes]:
    return reference_run(small_dataset, tmp_path_factory.mktemp("deferred_reference"), ThumbBackend(), DEFERRED)


def test_deferred_database_global_descriptors_stopped_then_resumed(small_dataset, deferred_reference, tmp_path):
    ds = load_dataset(small_dataset)
    work, out = tmp_path / "work", tmp_path / "submission.csv"
    # no codebook: what follows extraction takes ~0.1 s here, so it stops once 16 + 11 >= 28 - 1 - 0.155
    result, _ = fake_run(small_dataset, work, out, len(ds.test_ids) + 12, backend=ThumbBackend(), overrides=DEFERRED)
    with FeatureStore(work / "features" / "train") as s:
        assert len(s.global_ids) == 11 and not s.local_ids  # global descriptors only, part of them
    assert sum(v is not None for v in complete_submission(out, small_dataset).values()) == len(ds.test_ids)
    assert "11 of 26 train" in result.skipped[0]

    run(get_config("demo", ["verify.num_workers=1", *DEFERRED]), small_dataset, work, out, backend=ThumbBackend(),
        time_budget=Budget(1000))
    same_as(deferred_reference, work, out)


def test_candidate_extraction_stopped_means_no_verification(small_dataset, deferred_reference, tmp_path):
    ds = load_dataset(small_dataset)
    n = len(ds.train_ids) + len(ds.test_ids)
    work, out = tmp_path / "work", tmp_path / "submission.csv"
    result, _ = fake_run(small_dataset, work, out, n + 6, backend=ThumbBackend(), overrides=DEFERRED)
    assert "could not all be extracted in time, so nothing was verified" in result.skipped[0]
    assert not load_verification(work)  # no test image verified against missing local features
    complete_submission(out, small_dataset)
    fake_run(small_dataset, work, out, 1000, backend=ThumbBackend(), overrides=DEFERRED)
    same_as(deferred_reference, work, out)


def test_plan_estimates_from_measured_throughput(small_dataset):
    conf = get_config("demo")
    ds = load_dataset(small_dataset)
    clock = FakeClock()
    budget = Budget(60, clock=clock, flops=1e15, safety=1.0)
    plan = RunPlan(conf, ds, SiftBackend(conf.extract), budget, ["test", "train"], deferred=False)
    assert plan.steps()[0].seconds is None  # nothing measured yet
    for done in range(0, 11):  # 10 of the 16 test images, 2 s each
        clock.t = 2.0 * done
        budget.observe("extract test", done, len(ds.test_ids))
    steps = {s.name: s.seconds for s in plan.steps()}
    assert steps["extract test"] == pytest.approx(2.0 * 6)  # 6 left
    assert steps["extract train"] == pytest.approx(2.0 * len(ds.train_ids))  # at the test images' rate
    line, warning = plan.describe()
    assert line.startswith("extract test 12s | extract train 52s | sift codebook + global descriptors 0.1s")
    # 60 - 20 - 1 (safety) = 39 s left, ~0.2 s of them after extraction: 26.8 s for 52 s of train images
    assert "extraction will stop at about 52% of train" in warning


# --------------------------------------------------------------------------------------------
# A real run with a tiny budget, from the command line
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_tiny_budget_from_the_command_line(small_dataset, reference, tmp_path):
    work, out = tmp_path / "work", tmp_path / "submission.csv"
    cmd = [sys.executable, "-m", "landmark_retrieval", "run", "--data", str(small_dataset), "--work", str(work),
           "--out", str(out), "--preset", "demo", "--workers", "1"]
    done = subprocess.run(cmd + ["--time-budget", "1.5s", "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    import json

    printed = json.loads(done.stdout)
    assert printed["time_budget"] == 1.5 and printed["skipped"]  # 1.5 s are not enough here
    complete_submission(out, small_dataset)
    done = subprocess.run(cmd + ["--time-budget", "none"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    same_as(reference, work, out)


@pytest.mark.parametrize("on_kaggle,given,passed", [
    (True, "auto", "8h30m"), (False, "auto", None), (True, "2h", "2h"), (False, None, None), (True, "none", "none"),
])
def test_the_notebook_s_budget_reaches_the_pipeline(monkeypatch, tmp_path, on_kaggle, given, passed):
    import types

    from landmark_retrieval import kaggle

    seen = []

    def fake_run(conf, data, work, out, overwrite=False, time_budget=None):
        seen.append(time_budget)
        return types.SimpleNamespace(submission=out)

    monkeypatch.setattr(kaggle, "run", fake_run)
    paths = kaggle.RunPaths(data=tmp_path, work=tmp_path / "work", submission=tmp_path / "submission.csv",
                            model=None, on_kaggle=on_kaggle)
    kaggle.make_submission(get_config("demo"), paths, public_run_shortcut=False, time_budget=given)
    assert seen == [passed]
