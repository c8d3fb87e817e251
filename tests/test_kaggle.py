"""Kaggle path detection, configuration choice and the public-run shortcut, on a fake layout."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from landmark_retrieval import kaggle
from landmark_retrieval.pipeline import RunResult

SAMPLE = "id,landmarks\n00084cdf8f600d00,1 0.5\n0005e0dc1ff5e6b3,\n"


def _fake_kaggle(root: Path, train_rows: int, model: bool = True) -> Path:
    """``root/input/...`` as a Kaggle notebook with the competition data (and the DELG model) sees it."""
    comp = root / "input" / "landmark-recognition-2020"
    (comp / "test" / "0" / "0" / "0").mkdir(parents=True)
    (comp / "train").mkdir()
    with open(comp / "train.csv", "wb") as fh:
        fh.write(b"id,landmark_id\n")
        fh.write(b"aaaaaaaaaaaaaaaa,1\n" * train_rows)
    (comp / "sample_submission.csv").write_text(SAMPLE)
    if model:
        m = root / "input" / "delg-saved-models" / "local_and_global"
        (m / "variables").mkdir(parents=True)
        (m / "saved_model.pb").write_bytes(b"\x08\x01")
    (root / "working").mkdir()
    return root / "input"


@pytest.fixture
def public_kaggle(tmp_path):
    """The public competition layout: train.csv with exactly 1,580,470 rows."""
    return _fake_kaggle(tmp_path, kaggle.PUBLIC_TRAIN_ROWS), tmp_path / "working"


@pytest.fixture
def no_pipeline(monkeypatch):
    """Replace pipeline.run: records its calls and writes a one-row submission."""
    calls = []

    def fake_run(conf, data, work, out, overwrite=False, backend=None, time_budget=None):
        calls.append((conf, Path(data), Path(work), Path(out)))
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text("id,landmarks\nx,1 1.0\n")
        return RunResult(work=Path(work), submission=Path(out), timings={"extract": 1.0})

    monkeypatch.setattr("landmark_retrieval.kaggle.run", fake_run)
    return calls


# ---------------------------------------------------------------------------------------------
# detection and paths
# ---------------------------------------------------------------------------------------------
def test_not_on_kaggle_here(tmp_path):
    assert not kaggle.on_kaggle(tmp_path / "input")
    assert not kaggle.on_kaggle(tmp_path)  # a folder without the competition data


def test_on_kaggle_takes_kaggle_paths(public_kaggle):
    inp, working = public_kaggle
    assert kaggle.on_kaggle(inp)
    paths = kaggle.resolve_paths("ignored/data", "ignored/work", "", "ignored.csv",
                                 kaggle_input=inp, kaggle_working=working)
    assert paths.on_kaggle
    assert paths.data == inp / "landmark-recognition-2020"
    assert paths.model == inp / "delg-saved-models" / "local_and_global"  # the default model
    assert paths.models == (paths.model,)
    assert paths.submission == working / "submission.csv"
    assert paths.work == kaggle.KAGGLE_WORK and "working" not in str(paths.work)
    assert "[Kaggle]" in str(paths)


def test_on_kaggle_model_comes_from_any_attached_dataset(public_kaggle):
    inp, working = public_kaggle
    (inp / "my-effnet").mkdir()
    (inp / "my-effnet" / "model.keras").write_bytes(b"PK")
    delg = inp / "delg-saved-models" / "local_and_global"
    # an absolute path, or a path relative to /kaggle/input
    for model in (inp / "my-effnet" / "model.keras", "my-effnet/model.keras"):
        paths = kaggle.resolve_paths(model=model, kaggle_input=inp, kaggle_working=working)
        assert paths.model == inp / "my-effnet" / "model.keras" and paths.models == (paths.model,)
    # several models (a list, or one string joined by os.pathsep): an ensemble
    for models in (["my-effnet/model.keras", delg], f"my-effnet/model.keras{os.pathsep}{delg}"):
        paths = kaggle.resolve_paths(model=models, kaggle_input=inp, kaggle_working=working)
        assert paths.models == (inp / "my-effnet" / "model.keras", delg) and paths.model == paths.models[0]
        assert "model=[" in str(paths)
    with pytest.raises(FileNotFoundError, match=r"my-vit/model\.onnx does not exist: attach the dataset"):
        kaggle.resolve_paths(model="my-vit/model.onnx", kaggle_input=inp, kaggle_working=working)


def test_on_kaggle_without_the_model_says_what_to_attach(tmp_path):
    inp = _fake_kaggle(tmp_path, 3, model=False)
    with pytest.raises(FileNotFoundError, match="delg-saved-models"):
        kaggle.resolve_paths(kaggle_input=inp, kaggle_working=tmp_path / "working")


def test_local_paths_come_from_the_config(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    model = tmp_path / "model"
    model.mkdir()
    paths = kaggle.resolve_paths(data, tmp_path / "w", model, tmp_path / "s.csv", kaggle_input=tmp_path / "none")
    assert (paths.data, paths.work, paths.model, paths.submission, paths.on_kaggle) == (
        data, tmp_path / "w", model, tmp_path / "s.csv", False)
    no_model = kaggle.resolve_paths(str(data), str(tmp_path / "w"), "", str(tmp_path / "s.csv"),
                                    kaggle_input=tmp_path / "none")
    assert no_model.model is None and "classical backend" in str(no_model)


def test_local_missing_paths(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        kaggle.resolve_paths(tmp_path / "nope", build_demo=False, kaggle_input=tmp_path)
    (tmp_path / "data").mkdir()
    with pytest.raises(FileNotFoundError, match="make-test-model"):
        kaggle.resolve_paths(tmp_path / "data", model=tmp_path / "no-model", kaggle_input=tmp_path)
    with pytest.raises(ValueError, match="DATA"):
        kaggle.resolve_paths(None, build_demo=False, kaggle_input=tmp_path)
    built = []
    monkeypatch.setattr("landmark_retrieval.kaggle.build_demo_dataset",
                        lambda root, spec=None: built.append(Path(root)))
    # a given DATA that does not exist is an error, never the demo (see test_bad_inputs.py)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        kaggle.resolve_paths(tmp_path / "demo", kaggle_input=tmp_path)
    assert built == []
    # no DATA at all: the demo, built at demo_dir
    paths = kaggle.resolve_paths(None, kaggle_input=tmp_path, demo_dir=tmp_path / "demo")
    assert built == [tmp_path / "demo"] and paths.data == tmp_path / "demo"


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------
def test_choose_config(tmp_path):
    delg = kaggle.choose_config(tmp_path)
    assert delg.name == "kaggle-baseline" and delg.extract.backend == "delg"
    assert delg.extract.model_path == str(tmp_path) and delg.extract.delg.score_threshold == 175.0
    sift = kaggle.choose_config(None)
    assert sift.name == "demo" and sift.extract.backend == "sift"
    tuned = kaggle.choose_config(tmp_path, preset="glr-tuned", overrides={"verify": {"num_to_rerank": 7}})
    assert tuned.name == "glr-tuned" and tuned.verify.num_to_rerank == 7 and tuned.extract.backend == "delg"
    strings = kaggle.choose_config("", "sift", "kaggle-baseline",
                                   ["extract.delg.score_threshold=20", "predict.top_k=3"])
    assert strings.extract.backend == "sift" and strings.predict.top_k == 3
    assert strings.extract.delg.score_threshold == 20.0
    assert kaggle.choose_config("", overrides=[]).name == "demo"
    with pytest.raises(ValueError, match="needs a model"):
        kaggle.choose_config("", backend="delg")
    with pytest.raises(ValueError, match="backend"):
        kaggle.choose_config(None, backend="surf")


def test_choose_config_guesses_the_backend_of_each_model(tmp_path):
    delg = tmp_path / "delg"
    delg.mkdir()
    (delg / "saved_model.pb").write_bytes(b"\n\x0cinput_scales\x12")  # DELG's input name in the graph
    keras_file = tmp_path / "effnet.keras"
    keras_file.write_bytes(b"PK")
    onnx_file = tmp_path / "vit.onnx"
    onnx_file.write_bytes(b"onnx")
    one = kaggle.choose_config(keras_file)
    assert (one.name, one.extract.backend, one.extract.model_path) == ("embedding", "embedding", str(keras_file))
    assert one.verify.enabled is False
    assert kaggle.choose_config(str(delg)).extract.backend == "delg"
    both = kaggle.choose_config([keras_file, delg])
    assert both.name == "kaggle-baseline" and both.extract.backend == "ensemble"
    assert both.extract.ensemble.members == ({"backend": "embedding", "model_path": str(keras_file)},
                                             {"backend": "delg", "model_path": str(delg)})
    assert both.extract.ensemble.local == "delg"
    # no DELG member: no local features, so no re-ranking; overrides reach into the ensemble
    two = kaggle.choose_config(f"{keras_file}{os.pathsep}{onnx_file}", overrides=["extract.ensemble.local=sift"])
    assert two.name == "embedding" and two.extract.ensemble.local == "sift"
    assert [m["backend"] for m in two.extract.ensemble.members] == ["embedding", "embedding"]
    # an ensemble described by the overrides alone
    members = '[{"backend": "embedding", "model_path": "m.keras"}]'
    own = kaggle.choose_config("", "ensemble", "demo", [f"extract.ensemble.members={members}"])
    assert own.extract.ensemble.members == ({"backend": "embedding", "model_path": "m.keras"},)
    # two DELG models: local features from the first
    two_delg = kaggle.choose_config([delg, delg])
    assert two_delg.extract.ensemble.local == "delg1"
    with pytest.raises(ValueError, match="needs at least one member"):
        kaggle.choose_config("", backend="ensemble")
    with pytest.raises(ValueError, match="2 models .* make an ensemble"):
        kaggle.choose_config([keras_file, delg], backend="delg")


# ---------------------------------------------------------------------------------------------
# public-run shortcut
# ---------------------------------------------------------------------------------------------
def test_count_rows(tmp_path):
    p = tmp_path / "t.csv"
    for text, rows in (("id,landmark_id\na,1\nb,2\n", 2), ("id,landmark_id\na,1\nb,2", 2),
                       ("id,landmark_id\n", 0), ("id,landmark_id", 0), ("", 0)):
        p.write_text(text)
        assert kaggle.count_rows(p) == rows, text


def test_public_run_shortcut_copies_the_sample(public_kaggle, no_pipeline):
    inp, working = public_kaggle
    paths = kaggle.resolve_paths(kaggle_input=inp, kaggle_working=working)
    assert kaggle.is_public_run(paths.data)
    conf = kaggle.choose_config(paths.model)
    result = kaggle.make_submission(conf, paths)
    assert result.shortcut and result.run is None and result.metrics is None
    assert result.submission == working / "submission.csv"
    assert result.submission.read_text() == SAMPLE
    assert no_pipeline == []
    assert "Public run" in str(result)
    assert kaggle.example_figures(result, paths, conf) == []


def test_public_run_shortcut_can_be_disabled(public_kaggle, no_pipeline):
    inp, working = public_kaggle
    paths = kaggle.resolve_paths(kaggle_input=inp, kaggle_working=working)
    conf = kaggle.choose_config(paths.model)
    result = kaggle.make_submission(conf, paths, public_run_shortcut=False)
    assert not result.shortcut
    assert [c[1:] for c in no_pipeline] == [(paths.data, paths.work, working / "submission.csv")]
    assert no_pipeline[0][0].extract.model_path == str(paths.model)
    assert result.submission.read_text().startswith("id,landmarks\nx,1")
    assert "extract 1.0 s" in str(result)


def test_hidden_rerun_runs_the_pipeline(tmp_path, no_pipeline):
    """Kaggle's re-run has another train.csv: the shortcut must not fire."""
    inp = _fake_kaggle(tmp_path, kaggle.PUBLIC_TRAIN_ROWS - 1)
    paths = kaggle.resolve_paths(kaggle_input=inp, kaggle_working=tmp_path / "working")
    assert not kaggle.is_public_run(paths.data)
    result = kaggle.make_submission(kaggle.choose_config(paths.model), paths)
    assert not result.shortcut and len(no_pipeline) == 1


def test_shortcut_row_count_is_configurable(tmp_path, no_pipeline):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("id,landmark_id\nabc,1\nabd,2\n")
    (data / "sample_submission.csv").write_text(SAMPLE)
    paths = kaggle.resolve_paths(data, tmp_path / "w", None, tmp_path / "out" / "s.csv", kaggle_input=tmp_path)
    result = kaggle.make_submission(kaggle.choose_config(None), paths, public_train_rows=2)
    assert result.shortcut and (tmp_path / "out" / "s.csv").read_text() == SAMPLE and not no_pipeline


def test_shortcut_without_sample_submission(tmp_path):
    with pytest.raises(FileNotFoundError, match="sample_submission.csv"):
        kaggle.copy_sample_submission(tmp_path, tmp_path / "s.csv")


def test_environment_report():
    report = kaggle.environment_report(("numpy", "landmark_retrieval", "no_such_module_xyz"))
    lines = report.splitlines()
    assert lines[0].startswith("numpy") and "missing" not in lines[0]
    assert "0.1" in lines[1] or "installed" in lines[1]
    assert "missing (ModuleNotFoundError)" in lines[2]


def test_glr2021_layout_and_public_run_shortcut(tmp_path, no_pipeline):
    """GLR2021: the competition data is landmark-retrieval-2021 (index/ + test/); the public run
    has 1,129 test images."""
    comp = tmp_path / "input" / "landmark-retrieval-2021"
    (comp / "index" / "0" / "0" / "0").mkdir(parents=True)
    (comp / "sample_submission.csv").write_text("id,images\n")
    for i in range(kaggle.PUBLIC_TEST_IMAGES_2021):
        d = comp / "test" / "0" / "0" / f"{i % 16:x}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"00{i:014d}.jpg").write_bytes(b"")
    m = tmp_path / "input" / "delg-saved-models" / "local_and_global"
    (m / "variables").mkdir(parents=True)
    (m / "saved_model.pb").write_bytes(b"\x08\x01")
    (tmp_path / "working").mkdir()
    inp = tmp_path / "input"
    assert kaggle.on_kaggle(inp, task="retrieval") and not kaggle.on_kaggle(inp)
    paths = kaggle.resolve_paths(kaggle_input=inp, kaggle_working=tmp_path / "working", task="retrieval")
    assert paths.data == comp and paths.task == "retrieval" and paths.model == m
    assert kaggle.is_public_run(paths.data, task="retrieval")
    result = kaggle.make_submission(kaggle.choose_config(paths.model), paths)
    assert result.shortcut and result.submission.read_text() == "id,images\n" and not no_pipeline
    (comp / "test" / "0" / "0" / "0" / "0000000000000000.jpg").unlink()  # the hidden test set: run
    assert not kaggle.is_public_run(paths.data, task="retrieval")
    assert not kaggle.make_submission(kaggle.choose_config(paths.model), paths).shortcut and len(no_pipeline) == 1
