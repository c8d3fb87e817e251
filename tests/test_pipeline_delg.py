"""The whole pipeline with the DELG backend, on project-built SavedModels of both export styles."""
import pytest

from landmark_retrieval.cli import main
from landmark_retrieval.io.dataset import load_dataset
from landmark_retrieval.io.submission import read_submission
from landmark_retrieval.testing.groups import build_glr_from_groups

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    from landmark_retrieval.testing.delg_export import export_test_model

    root = tmp_path_factory.mktemp("delg")
    return {style: export_test_model(root / style, style=style) for style in ("tf1", "tf2")}


@pytest.mark.parametrize("style", ["tf1", "tf2"])
def test_run_with_delg_on_a_small_dataset(small_dataset, exports, tmp_path, style, capsys):
    out = tmp_path / "submission.csv"
    args = ["run", "--data", str(small_dataset), "--work", str(tmp_path / "work"), "--out", str(out),
            "--preset", "kaggle-baseline", "--model", str(exports[style]), "--workers", "2"]
    assert main(args) == 0
    sub = read_submission(out)
    assert list(sub) == load_dataset(small_dataset).test_ids
    assert all(v is not None for v in sub.values())
    assert "verified_gap" in capsys.readouterr().out
    # a second run reuses everything
    assert main(args) == 0
    assert read_submission(out) == sub


def test_tf1_and_tf2_runs_give_the_same_submission(small_dataset, exports, tmp_path):
    subs = []
    for style in ("tf1", "tf2"):
        out = tmp_path / f"{style}.csv"
        assert main(["run", "--data", str(small_dataset), "--work", str(tmp_path / style), "--out", str(out),
                     "--preset", "kaggle-baseline", "--model", str(exports[style]), "--workers", "1"]) == 0
        subs.append(read_submission(out))
    a, b = subs
    assert a.keys() == b.keys()
    for k in a:
        assert a[k][0] == b[k][0] and a[k][1] == pytest.approx(b[k][1], abs=1e-4)


def test_run_with_delg_on_real_photos(shared_data, exports, tmp_path):
    data = build_glr_from_groups(shared_data, tmp_path / "data")
    out = tmp_path / "submission.csv"
    assert main(["run", "--data", str(data), "--work", str(tmp_path / "work"), "--out", str(out),
                 "--preset", "kaggle-baseline", "--model", str(exports["tf1"]),
                 "--set", "extract.max_image_size=512"]) == 0
    assert list(read_submission(out)) == load_dataset(data).test_ids


def test_train_local_features_only_for_candidates(small_dataset, exports, tmp_path):
    from landmark_retrieval.io.layout import feature_dir, load_retrieval
    from landmark_retrieval.io.store import FeatureStore

    work = tmp_path / "work"
    base = ["--data", str(small_dataset), "--work", str(work), "--preset", "kaggle-baseline",
            "--model", str(exports["tf1"]), "--set", "verify.num_to_rerank=3"]
    assert main(["extract", *base]) == 0
    with FeatureStore(feature_dir(work, "train")) as train:
        assert train.local_ids == [] and len(train.global_ids) == len(load_dataset(small_dataset).train_ids)
    # later steps continue with the settings extract saved in WORK/config.json
    assert main(["retrieve", "--data", str(small_dataset), "--work", str(work)]) == 0
    assert main(["extract", "--candidates", "--data", str(small_dataset), "--work", str(work)]) == 0
    r = load_retrieval(work / "retrieval.h5")
    expected = {r.db_ids[j] for j in r.indices[:, :3].ravel()}
    with FeatureStore(feature_dir(work, "train")) as train:
        assert set(train.local_ids) == expected
    # the same run in one command gives the same features and a full submission
    out = tmp_path / "s.csv"
    assert main(["run", *base, "--out", str(out)]) == 0
    assert len(read_submission(out)) == len(load_dataset(small_dataset).test_ids)
