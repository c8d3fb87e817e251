"""Every notebook runs top to bottom (nbclient, kernel python3) on the demo data.

Notebooks read their parameters from ``LR_*`` environment variables in their config cell, so the
tests set those (the kernel inherits the environment) and execute the committed notebooks
unchanged: with the classical backend, and notebooks 02 and 03 also with a DELG export built by
the project (``export_test_model``, TF1 style, like Kaggle's model); notebook 02 also with a
``MODEL`` list (a Keras embedding model and the DELG export: an ensemble).
"""
from __future__ import annotations

import base64
import io
import os
import re
from pathlib import Path
from typing import Optional

import nbformat
import numpy as np
import pytest
from PIL import Image

from landmark_retrieval.demo import build_demo_dataset
from landmark_retrieval.io.layout import feature_dir
from landmark_retrieval.io.store import read_meta
from landmark_retrieval.io.submission import read_submission

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ("01_quickstart.ipynb", "02_glr2020_submission.ipynb", "03_visualise_matches.ipynb",
         "04_glr2021_retrieval.ipynb", "05_compare_methods.ipynb", "06_find_similar.ipynb")
CELL_TIMEOUT = 900  # seconds per cell: a cell runs the whole pipeline


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    """The demo dataset, built once per session (fixed name: other modules reuse it)."""
    return build_demo_dataset(tmp_path_factory.getbasetemp() / "lr_demo_data")


@pytest.fixture(scope="session")
def delg_model(tmp_path_factory) -> Path:
    """A small random-weight DELG SavedModel in the TF1 style of the Kaggle model."""
    pytest.importorskip("tensorflow")
    from landmark_retrieval.testing import export_test_model

    path = tmp_path_factory.getbasetemp() / "lr_delg_tf1"
    return path if (path / "saved_model.pb").is_file() else export_test_model(path, style="tf1")


@pytest.fixture(scope="session")
def embedding_model(tmp_path_factory) -> Path:
    """A small random-weight Keras embedding network (.keras file)."""
    pytest.importorskip("tensorflow")
    from landmark_retrieval.testing import export_embedding_model

    path = tmp_path_factory.getbasetemp() / "lr_embedding" / "model.keras"
    return path if path.is_file() else export_embedding_model(path.parent, formats=("keras",))["keras"]


def _read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / name, as_version=4)


def _execute(nb: nbformat.NotebookNode, cwd: Path) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                   resources={"metadata": {"path": str(cwd)}}).execute()  # raises on a cell error
    return nb


def _pictures(nb: nbformat.NotebookNode) -> list:
    """The PNG images the notebook displayed, decoded to RGB arrays."""
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if o.output_type in ("display_data", "execute_result") and "image/png" in o.get("data", {}):
                with Image.open(io.BytesIO(base64.b64decode(o.data["image/png"]))) as im:
                    out.append(np.asarray(im.convert("RGB")))
    return out


def _stream(nb: nbformat.NotebookNode, name: str) -> str:
    return "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", [])
                   if o.output_type == "stream" and o.name == name)


def _stdout(nb: nbformat.NotebookNode) -> str:
    return _stream(nb, "stdout")


def _assert_quiet(nb: nbformat.NotebookNode, dataset_loads: Optional[int] = 1, widgets: bool = True) -> None:
    """No avoidable noise: widget progress bars (ipywidgets installed), no TensorFlow C++ info
    banners (TF_CPP_MIN_LOG_LEVEL set before TensorFlow is imported), the dataset read once."""
    stderr = _stream(nb, "stderr")
    assert "IProgress not found" not in stderr, "ipywidgets is missing: pip install -e '.[notebooks]'"
    if widgets:
        assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
                   for c in nb.cells for o in c.get("outputs", [])), "tqdm.auto showed no widget progress bar"
    assert "cpu_feature_guard" not in stderr, stderr
    if dataset_loads is not None:
        loads = re.findall(r"Dataset .+: \d+ train images", stderr)
        assert len(loads) == dataset_loads, f"the dataset was read {len(loads)} times:\n" + "\n".join(loads)


def _assert_pictures(nb, expected: int) -> None:
    pictures = _pictures(nb)
    assert len(pictures) >= expected, f"{len(pictures)} pictures displayed, expected {expected}"
    for rgb in pictures:
        assert rgb.shape[0] >= 100 and rgb.shape[1] >= 100
        assert rgb.std() > 20, "a displayed picture is (nearly) uniform"
        assert len(np.unique(rgb.reshape(-1, 3)[::7], axis=0)) > 200


# ---------------------------------------------------------------------------------------------
# The committed notebooks: thin, parameterised, without outputs
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_committed_clean_and_thin(name):
    nb = _read(name)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, "commit notebooks without outputs"
        assert not re.search(r"^\s*(def|class|for|while|lambda)\b", cell.source, re.M), cell.source
    config = code[0]
    assert "parameters" in config.metadata.get("tags", []), "the first code cell is the tagged config cell"
    assert 'os.environ.get("LR_DATA"' in config.source and 'os.environ.get("LR_WORK"' in config.source
    assert sum("os.environ" in c.source for c in code) == 1, "parameters are read in the config cell only"
    assert nb.cells[0].cell_type == "markdown" and "LR_" in nb.cells[0].source


@pytest.mark.parametrize("name", ["02_glr2020_submission.ipynb", "04_glr2021_retrieval.ipynb"])
def test_submission_notebook_installs_offline_without_tensorflow(name):
    source = "\n".join(c.source for c in _read(name).cells if c.cell_type == "code")
    install = [line for line in source.splitlines() if "pip install" in line]
    assert len(install) == 1
    assert all(flag in install[0] for flag in ("--no-index", "--no-deps", "--find-links"))
    assert "tensorflow" not in install[0].lower()
    assert "/kaggle/input/landmark-retrieval-wheels" in source
    assert "PUBLIC_RUN_SHORTCUT" in source and "LR_PUBLIC_SHORTCUT" in source


# ---------------------------------------------------------------------------------------------
# Execution
# ---------------------------------------------------------------------------------------------
def _env(monkeypatch, tmp_path, data, work, model=None, **extra):
    monkeypatch.setenv("LR_DATA", str(data))
    monkeypatch.setenv("LR_WORK", str(work))
    monkeypatch.setenv("LR_OUT", str(tmp_path / "submission.csv"))
    monkeypatch.setenv("LR_WHEELS", str(tmp_path / "no-wheels-here"))  # never pip install in tests
    monkeypatch.setenv("LR_MODEL", str(model) if model else "")
    monkeypatch.setenv("LR_BACKEND", "delg" if model else "sift")
    for key, value in extra.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("LR_PRESET", raising=False)


# the DELG test model has random weights: a lower attention threshold than Kaggle's 175 keeps a
# few more features per image (see landmark_retrieval.testing.delg_export)
DELG_SET = "extract.delg.score_threshold=150 verify.num_to_rerank=8"

pytestmark = pytest.mark.slow


def test_01_quickstart(demo_data, tmp_path, tmp_path_factory, monkeypatch):
    _env(monkeypatch, tmp_path, demo_data, tmp_path / "work")
    nb = _execute(_read("01_quickstart.ipynb"), tmp_path)
    out = _stdout(nb)
    assert re.search(r"verified_gap: (0\.9\d|1\.0)", out), out
    assert len(read_submission(tmp_path / "submission.csv")) == 40
    _assert_pictures(nb, 2)
    _assert_quiet(nb)


@pytest.mark.parametrize("backend", ["sift", "delg", "ensemble"])
def test_02_submission(backend, demo_data, tmp_path, tmp_path_factory, monkeypatch, request):
    model = request.getfixturevalue("delg_model") if backend != "sift" else None
    work = tmp_path_factory.getbasetemp() / f"lr_nb_work_{backend}"  # notebook 03 reuses it
    if backend == "ensemble":  # MODEL lists two models: an embedding model and DELG (auto: an ensemble)
        embedding = request.getfixturevalue("embedding_model")
        _env(monkeypatch, tmp_path, demo_data, work, f"{embedding}{os.pathsep}{model}", LR_BACKEND="auto",
             LR_SET=DELG_SET + " extract.embedding.input_size=64")
        model = None
    else:
        _env(monkeypatch, tmp_path, demo_data, work, model, LR_SET=DELG_SET if model else "")
    nb = _execute(_read("02_glr2020_submission.ipynb"), tmp_path)
    out = _stdout(nb)
    assert "No wheel folder" in out and "[local]" in out
    assert f"Wrote {tmp_path / 'submission.csv'}" in out
    submission = read_submission(tmp_path / "submission.csv")
    assert len(submission) == 40 and sum(v is not None for v in submission.values()) >= 30
    meta = read_meta(feature_dir(work, "test"))
    assert meta["name"] == backend
    if backend == "ensemble":
        assert [m["backend"]["name"] for m in meta["members"]] == ["embedding", "delg"]
        assert meta["local_member"] == "delg"
        assert "preset kaggle-baseline + extract.backend=ensemble" in out and "extract.ensemble.local=delg" in out
    if model:
        # the config cell prints the preset and what differs from it, as --set arguments
        assert f"preset kaggle-baseline + extract.model_path={model}" in out
        assert "extract.delg.score_threshold=150.0" in out and "verify.num_to_rerank=8" in out
    assert "verified_gap" in out
    _assert_pictures(nb, 2)
    _assert_quiet(nb, dataset_loads=None)


@pytest.mark.parametrize("backend", ["sift", "delg"])
def test_03_visualise(backend, demo_data, tmp_path, tmp_path_factory, monkeypatch, request):
    model = request.getfixturevalue("delg_model") if backend == "delg" else None
    work = tmp_path_factory.getbasetemp() / f"lr_nb_work_{backend}"  # made by test_02 when it ran first
    _env(monkeypatch, tmp_path, demo_data, work, model, LR_SET=DELG_SET if model else "", LR_NEIGHBOURS="4")
    nb = _execute(_read("03_visualise_matches.ipynb"), tmp_path)
    assert re.search(r"test image \w{16}, matched with train image \w{16}", _stdout(nb))
    html = [o.data["text/html"] for c in nb.cells for o in c.get("outputs", [])
            if o.output_type == "execute_result" and "text/html" in o.get("data", {})]
    assert html and "global_score" in html[0] and "inliers" in html[0]
    _assert_pictures(nb, 4)  # neighbours, matches, keypoints of the test and of the train image
    _assert_quiet(nb, widgets=False)  # the run of notebook 02 may have left nothing to do
    assert read_meta(feature_dir(work, "test"))["name"] == backend


@pytest.mark.parametrize("backend", ["sift", "delg"])
def test_04_retrieval(backend, tmp_path, tmp_path_factory, monkeypatch, request):
    from landmark_retrieval.demo import DemoSpec
    from landmark_retrieval.io.submission import read_retrieval_submission

    data = build_demo_dataset(tmp_path_factory.getbasetemp() / "lr_demo_retrieval", DemoSpec(task="retrieval"))
    model = request.getfixturevalue("delg_model") if backend == "delg" else None
    _env(monkeypatch, tmp_path, data, tmp_path / "work", model, LR_SET=DELG_SET if model else "")
    nb = _execute(_read("04_glr2021_retrieval.ipynb"), tmp_path)
    out = _stdout(nb)
    assert f"Wrote {tmp_path / 'submission.csv'}" in out and "verified_map100" in out
    index_ids = {p.stem for p in (data / "index").rglob("*.jpg")}
    submission = read_retrieval_submission(tmp_path / "submission.csv", index_ids=index_ids)
    assert len(submission) == 40 and all(len(v) <= 100 for v in submission.values())
    assert sum(bool(v) for v in submission.values()) >= 35
    assert read_meta(feature_dir(tmp_path / "work", "index"))["name"] == backend
    _assert_pictures(nb, 2)
    _assert_quiet(nb, dataset_loads=None)


def test_05_compare_methods(demo_data, tmp_path, monkeypatch):
    """Four methods on the demo (two share their features): the table and the plot."""
    _env(monkeypatch, tmp_path, demo_data, tmp_path / "work", LR_METHODS="vlad+sift,vlad+sift magsac,vlad+orb,colour")
    nb = _execute(_read("05_compare_methods.ipynb"), tmp_path)
    tables = [o.data["text/markdown"] for c in nb.cells for o in c.get("outputs", [])
              if o.output_type == "execute_result" and "text/markdown" in o.get("data", {})]
    assert len(tables) == 1 and tables[0].startswith("| method | global descriptor | local features |")
    table = tables[0]
    assert "| `vlad+sift` | VLAD | RootSIFT | 0.931 → 0.996 |" in table, table  # the demo's scores (README)
    for name in ("vlad+sift magsac", "vlad+orb", "colour"):  # run, or listed with the reason it was not
        assert f"| `{name}`" in table or f"* `{name}`: skipped" in table, table
    assert len(list((tmp_path / "work").glob("data-*"))) == 3  # magsac reused vlad+sift's features
    pictures = _pictures(nb)
    assert len(pictures) == 1 and pictures[0].shape[0] >= 200 and pictures[0].std() > 5
    _assert_quiet(nb)



def test_06_find_similar(shared_data, tmp_path, monkeypatch):
    """Index a folder of real photographs, search it with another view of one of them."""
    from PIL import Image as PILImage

    folder = tmp_path / "photos"
    oxford = shared_data / "oxford_affine"
    for scene in ("boat", "bikes", "leuven", "graf"):
        (folder / scene).mkdir(parents=True)
        with PILImage.open(oxford / scene / "img1.png") as im:
            im.convert("RGB").resize((im.width // 2, im.height // 2)).save(folder / scene / "view1.jpg")
    with PILImage.open(oxford / "leuven" / "img3.png") as im:
        im.convert("RGB").resize((im.width // 2, im.height // 2)).save(tmp_path / "query.jpg")
    monkeypatch.setenv("LR_DATA", str(folder))
    monkeypatch.setenv("LR_WORK", str(tmp_path / "work"))
    monkeypatch.setenv("LR_QUERY", str(tmp_path / "query.jpg"))
    monkeypatch.setenv("LR_SET", "extract.vlad.num_words=16")
    nb = _execute(_read("06_find_similar.ipynb"), tmp_path)
    out = _stdout(nb)
    assert "4 images indexed (4 new, 0 removed, 0 unreadable)" in out, out
    assert "leuven/view1.jpg:" in out, out  # the best result is the other view of the same scene
    tables = [o.data["text/html"] for c in nb.cells for o in c.get("outputs", [])
              if o.output_type == "execute_result" and "text/html" in o.get("data", {})]
    assert tables and "leuven/view1.jpg" in tables[0]
    pictures = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})
                or "image/jpeg" in o.get("data", {})]
    assert len(pictures) == 2
