"""Figures composed from the stored artifacts of a small demo run (landmark_retrieval.visualize)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from landmark_retrieval import visualize
from landmark_retrieval.cli import main
from landmark_retrieval.demo import _image_id, build_demo_dataset
from landmark_retrieval.io.dataset import load_dataset
from landmark_retrieval.io.layout import feature_dir, load_verification, verification_path
from landmark_retrieval.io.store import FeatureStore
from landmark_retrieval.matching.pairs import verify_pair
from landmark_retrieval.presets import get_config
from landmark_retrieval.viz import figure_to_array, plot_keypoints, save_figure


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """(data, work, conf) of a classical-backend run on the demo dataset, made once per session.

    The folders live in the session's base temp dir under fixed names, so other test modules
    that use the same names reuse them (the dataset build and every step skip finished work).
    """
    from landmark_retrieval.pipeline import run

    base = tmp_path_factory.getbasetemp()
    data = build_demo_dataset(base / "lr_demo_data")
    work = base / "lr_demo_work_sift"
    conf = get_config("demo")
    run(conf, data, work, base / "lr_demo_submission.csv")
    return data, work, conf


def assert_picture(image: np.ndarray, min_size: int = 100, min_colours: int = 200) -> None:
    """A rendered figure that is a real picture: big enough, not blank, not uniform."""
    rgb = np.asarray(image)[..., :3]
    assert rgb.shape[0] >= min_size and rgb.shape[1] >= min_size, rgb.shape
    assert rgb.std() > 20, "the picture is (nearly) uniform"
    colours = np.unique(rgb.reshape(-1, 3)[::7], axis=0)
    assert len(colours) > min_colours, f"only {len(colours)} colours: not a picture of photographs"


def _frame_colours(fig) -> list:
    """Edge colours of the framed (axis-on) neighbour axes of a retrieval figure."""
    out = []
    for ax in fig.axes[1:]:
        spine = ax.spines["left"]
        if spine.get_visible() and ax.axison:
            out.append(tuple(np.round(spine.get_edgecolor()[:3], 2)))
    return out


pytestmark = pytest.mark.slow


def test_run_config_is_the_saved_one(demo_run):
    data, work, conf = demo_run
    assert visualize.load_run_config(work).to_dict() == conf.to_dict()
    assert visualize.load_run_config(work, preset="glr-tuned").name == "glr-tuned"
    over = visualize.load_run_config(work, overrides=["verify.num_to_rerank=3"])
    assert over.verify.num_to_rerank == 3 and over.extract.vlad.num_words == conf.extract.vlad.num_words


def test_neighbour_table_is_the_reranking(demo_run):
    data, work, conf = demo_run
    query = visualize.pick_query(data, work, conf)
    table = visualize.neighbour_table(data, work, query, conf)
    n = conf.verify.num_to_rerank
    assert list(table["rank"]) == list(range(len(table)))
    totals = table["total"].to_numpy()[:n]
    assert np.all(np.diff(totals) <= 1e-12), "verified candidates must be sorted by total score"
    assert table["total"].iloc[n:].isna().all()
    # the picked query's best neighbour is a verified, correct match with many inliers
    assert bool(table["correct"].iloc[0]) and table["inliers"].iloc[0] >= 20
    assert visualize.best_neighbour(data, work, query, conf) == table["db_id"].iloc[0]
    stored = load_verification(verification_path(work))[query]
    for row in table.head(n).itertuples():
        assert stored[row.db_id] == (row.num_matches, row.inliers)


def test_show_query(demo_run):
    data, work, _ = demo_run
    query = _image_id("test", "motorcycle_right")  # the real second viewpoint of landmark 1005
    fig = visualize.show_query(data, work, query, num_neighbours=4)  # conf from WORK/config.json
    assert len(fig.axes) == 5
    titles = [ax.get_title() for ax in fig.axes]
    assert "true: 1005" in titles[0] and "predicted 1005" in titles[0]
    assert all("landmark" in t and "global" in t and "inliers" in t and "total" in t for t in titles[1:])
    assert _frame_colours(fig)[0] == (0.1, 0.85, 0.2)  # first neighbour framed green (right landmark)
    assert_picture(figure_to_array(fig))


def test_show_query_frames_non_landmarks_red(demo_run):
    data, work, conf = demo_run
    query = _image_id("distractor", "moon", 0)
    fig = visualize.show_query(data, work, query, conf, num_neighbours=3)
    assert "non-landmark" in fig.axes[0].get_title()
    assert set(_frame_colours(fig)) == {(0.95, 0.2, 0.15)}
    assert_picture(figure_to_array(fig))


def test_show_pair_matches_the_stored_inliers(demo_run):
    data, work, conf = demo_run
    query = visualize.pick_query(data, work, conf)
    db_id = visualize.best_neighbour(data, work, query, conf)
    fig = visualize.show_pair(data, work, query, db_id, conf)
    matches, inliers = load_verification(verification_path(work))[query][db_id]
    assert fig._suptitle.get_text().startswith(f"{inliers} DEGENSAC inliers (green) / {matches} putative")
    arr = figure_to_array(fig)
    assert_picture(arr)
    rgb = arr[..., :3].astype(int)
    green = (rgb[..., 1] > 180) & (rgb[..., 0] < 80) & (rgb[..., 2] < 100)
    assert green.sum() > 500, "inlier lines (green) are missing"


def test_show_pair_is_deterministic(demo_run):
    data, work, conf = demo_run
    query = _image_id("test", "motorcycle_right")
    db_id = visualize.best_neighbour(data, work, query, conf)
    with FeatureStore(feature_dir(work, "test")) as te, FeatureStore(feature_dir(work, "train")) as tr:
        a = verify_pair(te.local(query), tr.local(db_id), conf.verify)
        b = verify_pair(te.local(query), tr.local(db_id), conf.verify)
    assert np.array_equal(a.inlier_mask, b.inlier_mask) and a.num_inliers > 0
    fig = visualize.show_pair(data, work, query, db_id, conf)
    assert fig._suptitle.get_text().startswith(f"{a.num_inliers} DEGENSAC inliers")


@pytest.mark.parametrize("split", ["test", "train"])
def test_show_keypoints(demo_run, split):
    data, work, _ = demo_run
    image_id = load_dataset(data).ids(split)[0]
    fig = visualize.show_keypoints(data, work, split, image_id)
    assert "SIFT response" in fig.axes[0].get_title()
    assert fig.axes[-1].get_ylabel() == "SIFT response"  # the colour bar
    assert_picture(figure_to_array(fig))


def test_unknown_query_says_what_is_known(demo_run):
    data, work, conf = demo_run
    with pytest.raises(KeyError, match="no retrieval result"):
        visualize.show_query(data, work, "0123456789abcdef", conf)


def test_plot_keypoints_stays_backward_compatible():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    fig = plot_keypoints(image, rng.uniform(0, 100, (30, 2)), rng.uniform(0, 1, 30), "t")
    assert fig.axes[-1].get_ylabel() == "score"
    assert figure_to_array(fig).shape[2] == 4


def test_save_figure_palette_is_smaller(demo_run, tmp_path):
    data, work, conf = demo_run
    query = visualize.pick_query(data, work, conf)
    fig = visualize.show_query(data, work, query, conf)
    full = save_figure(fig, tmp_path / "full.png")
    small = save_figure(fig, tmp_path / "small.png", colors=128)
    assert small.stat().st_size < full.stat().st_size
    with Image.open(small) as im:
        assert im.mode == "P"
        assert_picture(np.asarray(im.convert("RGB")), min_colours=64)


def test_cli_show(demo_run, tmp_path, capsys):
    data, work, _ = demo_run
    out = tmp_path / "pics" / "q.png"
    assert main(["-q", "show", "--data", str(data), "--work", str(work), "--out", str(out), "--keypoints"]) == 0
    printed = capsys.readouterr().out
    for path in (out, out.with_name("q_matches.png"), out.with_name("q_keypoints.png")):
        assert str(path) in printed
        with Image.open(path) as im:
            assert_picture(np.asarray(im.convert("RGB")))


def test_cli_show_with_db(demo_run, tmp_path):
    data, work, _ = demo_run
    query = _image_id("test", "motorcycle_right")
    db_id = visualize.neighbour_table(data, work, query)["db_id"].iloc[2]
    assert main(["-q", "show", "--data", str(data), "--work", str(work), "--query", query, "--db", db_id,
                 "--preset", "demo", "--out", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p_matches.png").is_file()
    # default output folder: WORK/show/<query>.png
    assert main(["-q", "show", "--data", str(data), "--work", str(work), "--query", query]) == 0
    assert (work / "show" / f"{query}.png").is_file() and (work / "show" / f"{query}_matches.png").is_file()


def test_train_image_without_local_features_explains_why(tmp_path):
    from landmark_retrieval.visualize import _local_features

    with pytest.raises(KeyError, match="train_local=candidates"):
        _local_features(FeatureStore(tmp_path), "train", "abcdef0123456789")
