"""Kaggle submission helpers used by ``notebooks/02_glr2020_submission.ipynb``.

On Kaggle (detected by the competition data mounted at
``/kaggle/input/landmark-recognition-2020``) the notebook takes its inputs from the attached
datasets and writes ``/kaggle/working/submission.csv``; anywhere else every path comes from the
notebook's config cell. The logic lives here so that the notebook stays a list of calls::

    paths = resolve_paths(data="", work="work/nb02", model="", out="submission/submission.csv")  # "" = demo
    conf = choose_config(paths.models)
    result = make_submission(conf, paths, public_run_shortcut=True)

Models: ``MODEL`` is one model path, or several (a list, or paths joined by ``os.pathsep``, ``:`` on
Linux) for an ensemble of their global descriptors; on Kaggle an empty ``MODEL`` means the host
baseline's ``delg-saved-models/local_and_global`` and a relative path is read under
``/kaggle/input``. :func:`choose_config` picks each model's backend from what it looks like
(:func:`landmark_retrieval.backends.registry.backend_for_model`: a DELG SavedModel, or a Keras/SavedModel/ONNX
embedding model).

Public-run shortcut: the competition's notebooks are first run on the public data (1,580,470
train images), where the result is not scored, and then re-run by Kaggle on the hidden test set.
The host baseline saves the hours of the public run by copying ``sample_submission.csv`` when
``train.csv`` has exactly the public number of rows; :func:`make_submission` does the same when
``public_run_shortcut`` is true (turn it off to process the public data for real).
"""
from __future__ import annotations

import importlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

from . import visualize
from .backends.registry import BACKENDS, backend_for_model, default_backend
from .config import Config
from .demo import DemoSpec, build_demo_dataset
from .overrides import parse_overrides
from .pipeline import run
from .presets import get_config

logger = logging.getLogger("landmark_retrieval")

KAGGLE_INPUT = Path("/kaggle/input")
KAGGLE_WORKING = Path("/kaggle/working")
COMPETITION = "landmark-recognition-2020"
#: the competition data of each task
COMPETITIONS = {"recognition": COMPETITION, "retrieval": "landmark-retrieval-2021"}
#: test images of the GLR2021 public run (its notebooks are re-run on the hidden test set)
PUBLIC_TEST_IMAGES_2021 = 1_129
#: the DELG model of the host baseline, dataset ``delg-saved-models``
MODEL_SUBDIR = Path("delg-saved-models") / "local_and_global"
#: rows of the public ``train.csv`` (the host baseline's test for the public run)
PUBLIC_TRAIN_ROWS = 1_580_470
#: where features go on Kaggle: local disk, not saved with the notebook's output
KAGGLE_WORK = Path("/tmp/landmark-retrieval-work")
#: off Kaggle, where the demo dataset is built when no DATA is given (relative to the working
#: directory; the notebooks pass ``../data/demo``)
DEMO_DATA = Path("data/demo")

PathLike = Union[str, Path]
#: one model path, several (a list, or one string joined by os.pathsep), or none (None, "")
Models = Union[PathLike, Sequence[PathLike], None]


def competition_dir(kaggle_input: PathLike = KAGGLE_INPUT, task: str = "recognition") -> Path:
    return Path(kaggle_input) / COMPETITIONS[task]


def on_kaggle(kaggle_input: PathLike = KAGGLE_INPUT, task: str = "recognition") -> bool:
    """True when the task's competition data is mounted (a Kaggle notebook with it attached):
    GLR2020's ``train.csv``, or GLR2021's ``index/``."""
    marker = "index" if task == "retrieval" else "train.csv"
    return (competition_dir(kaggle_input, task) / marker).exists()


@dataclass
class RunPaths:
    """Where a submission run reads and writes."""

    data: Path
    work: Path
    submission: Path
    model: Optional[Path]  # the (first) model; None = classical backend
    on_kaggle: bool
    models: Tuple[Path, ...] = ()  # every model: several = an ensemble (``model`` is the first)
    task: str = "recognition"  # or "retrieval" (GLR2021)

    def __post_init__(self) -> None:
        if not self.models and self.model is not None:
            self.models = (self.model,)

    def __str__(self) -> str:
        where = "Kaggle" if self.on_kaggle else "local"
        model = (f"[{', '.join(map(str, self.models))}]" if len(self.models) > 1
                 else self.model or "(none: classical backend)")
        return f"[{where}] data={self.data} model={model} work={self.work} submission={self.submission}"


def model_list(model: Models) -> List[Path]:
    """``MODEL`` as a list of paths: None or "" -> [], a list as it is (empty items dropped), a
    string split at ``os.pathsep`` (``a.keras:b`` -> two models)."""
    if model is None:
        return []
    if isinstance(model, (str, os.PathLike)):
        items: Sequence[PathLike] = str(model).split(os.pathsep) if isinstance(model, str) else [model]
    else:
        items = list(model)
    return [Path(m) for m in items if str(m).strip()]


def resolve_data(data: Optional[PathLike], demo_dir: PathLike = DEMO_DATA, build_demo: bool = True,
                 task: str = "recognition") -> Path:
    """The dataset folder of a run off Kaggle: ``data``, or the embedded demo when none is given.

    A given path is used as it is and must exist: a mistyped ``DATA`` never silently becomes
    the demo dataset (nor is the demo written over it).

    Args:
        data: GLR-layout dataset folder; None or "" = the embedded demo dataset.
        demo_dir: where the demo dataset is built (skipped when already there).
        build_demo: False = ``data`` is required.

    Raises:
        FileNotFoundError: ``data`` was given and is not an existing folder.
        ValueError: no ``data`` and ``build_demo`` is false.
        FileExistsError: ``demo_dir`` holds something other than the demo dataset.
    """
    if data:
        data_dir = Path(data)
        if not data_dir.is_dir():
            what = "is not a folder" if data_dir.exists() else "does not exist"
            raise FileNotFoundError(
                f"Dataset folder {data_dir} {what} (absolute: {data_dir.absolute()}): fix DATA in the config "
                "cell (or LR_DATA), or set it to '' to use the embedded demo dataset")
        return data_dir
    if not build_demo:
        raise ValueError("Not on Kaggle: set DATA in the config cell to a GLR-layout dataset folder")
    demo = Path(demo_dir)
    if demo.exists() and not (demo / "demo.json").is_file() and (not demo.is_dir() or any(demo.iterdir())):
        raise FileExistsError(
            f"{demo} exists and is not the demo dataset (no demo.json): building the demo there would delete it. "
            "Set DATA to it to use it as the dataset, or choose another demo folder")
    logger.info("DATA is not set: using the embedded demo dataset in %s", demo)
    build_demo_dataset(demo, DemoSpec(task=task))
    return demo


def resolve_paths(data: Optional[PathLike] = None, work: Optional[PathLike] = None,
                  model: Optional[PathLike] = None, out: Optional[PathLike] = None,
                  build_demo: bool = True, kaggle_input: PathLike = KAGGLE_INPUT,
                  kaggle_working: PathLike = KAGGLE_WORKING, demo_dir: PathLike = DEMO_DATA,
                  task: str = "recognition") -> RunPaths:
    """Input and output paths: Kaggle's when on Kaggle, else the given ones.

    Args:
        data, work, out: dataset root, work directory and submission path used off Kaggle. On
            Kaggle they are replaced by the competition data, ``/tmp/landmark-retrieval-work`` and
            ``/kaggle/working/submission.csv``.
        model: model path(s), see :func:`model_list` (several = an ensemble). Off Kaggle ""/None
            = no model (classical backend). On Kaggle ""/None = the attached
            ``delg-saved-models/local_and_global``; a relative path is read under ``kaggle_input``
            (``my-effnet/model.keras`` = ``/kaggle/input/my-effnet/model.keras``).
        build_demo: off Kaggle and without ``data`` (None or ""), build and use the embedded
            demo dataset at ``demo_dir``; a given ``data`` must exist (see :func:`resolve_data`).
        kaggle_input, kaggle_working: Kaggle's mount points (tests pass a fake layout).
        demo_dir: where the demo dataset is built when ``data`` is not given.
        task: ``recognition`` (GLR2020 data) or ``retrieval`` (GLR2021 data, and an index/
            variant of the demo).

    Raises:
        FileNotFoundError: a dataset or model directory that does not exist (with the fix).
        ValueError: off Kaggle, no ``data`` and ``build_demo`` false.
    """
    models = model_list(model)
    if on_kaggle(kaggle_input, task):
        if not models:
            default = Path(kaggle_input) / MODEL_SUBDIR
            if not (default / "saved_model.pb").is_file():
                raise FileNotFoundError(
                    f"No DELG model at {default}: attach the dataset 'delg-saved-models' to the notebook "
                    "(Add data -> search 'delg-saved-models'), or set MODEL to the model of an attached dataset")
            models = [default]
        models = [m if m.is_absolute() else Path(kaggle_input) / m for m in models]
        for m in models:
            if not m.exists():
                raise FileNotFoundError(
                    f"Model {m} does not exist: attach the dataset that holds it (Add data), and set MODEL to its "
                    f"path under {kaggle_input} (or to '' for delg-saved-models/local_and_global)")
        return RunPaths(data=competition_dir(kaggle_input, task), work=KAGGLE_WORK, model=models[0],
                        submission=Path(kaggle_working) / "submission.csv", on_kaggle=True, models=tuple(models),
                        task=task)
    data_dir = resolve_data(data, demo_dir, build_demo, task)
    for m in models:
        if not m.exists():
            raise FileNotFoundError(
                f"Model {m} does not exist. Set MODEL to a DELG SavedModel folder (e.g. one made offline with "
                "`landmark-retrieval make-test-model DIR`), a Keras/SavedModel/ONNX embedding model, several of "
                f"them separated by {os.pathsep!r} for an ensemble, or '' for the classical backend")
    return RunPaths(data=data_dir, work=Path(work or "work"), model=models[0] if models else None,
                    submission=Path(out or "submission/submission.csv"), on_kaggle=False, models=tuple(models),
                    task=task)


def choose_config(model: Models = None, backend: str = "auto", preset: str = "auto",
                  overrides: Union[Mapping, Sequence[str], None] = None) -> Config:
    """The configuration for a run with no model, one model or several (an ensemble).

    Args:
        model: model path(s) (see :func:`model_list`): None or "" = no model.
        backend: ``"auto"`` or a name in :data:`landmark_retrieval.backends.registry.BACKENDS`. Auto: no
            model = the first backend that needs none (``sift``); one model = the backend it looks
            like (:func:`~landmark_retrieval.backends.registry.backend_for_model`: ``delg`` for a DELG
            SavedModel, ``embedding`` for a Keras/ONNX file or another SavedModel); several =
            ``ensemble``.
        preset: ``"auto"`` (the backend's preset in the registry: ``kaggle-baseline`` for DELG,
            ``embedding`` for an embedding model, ``demo`` for the classical backend; for an
            ensemble ``kaggle-baseline`` when a DELG member gives local features, else
            ``embedding``) or a preset name.
        overrides: applied last (nested dict or ``"section.option=value"`` strings).

    An ensemble made from models has one member per model (weight 1, its backend guessed as
    above) and takes its local features from the first DELG member (none without one); set
    ``extract.ensemble.members`` / ``extract.ensemble.local`` in ``overrides`` to change that.
    """
    models = model_list(model)
    if backend == "auto":
        backend = ("ensemble" if len(models) > 1 else backend_for_model(models[0]) if models
                   else default_backend(model=False))
    if backend not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    info = BACKENDS[backend]
    if info.needs_model and not models and backend != "ensemble":
        raise ValueError(f"The {backend} backend needs a model: set MODEL to its model (for delg a DELG "
                         "SavedModel folder; make one offline with `landmark-retrieval make-test-model DIR`)")
    if len(models) > 1 and backend != "ensemble":
        raise ValueError(f"{len(models)} models ({', '.join(map(str, models))}) make an ensemble: set BACKEND to "
                         f"'auto' or 'ensemble', not {backend!r}, or give one model")
    base: Dict[str, Dict[str, object]] = {"extract": {"backend": backend}}
    if backend == "ensemble" and models:
        members = [{"backend": backend_for_model(m), "model_path": str(m)} for m in models]
        delg = sum(r["backend"] == "delg" for r in members)  # the first one's name (config.ensemble_members)
        local = None if not delg else "delg" if delg == 1 else "delg1"
        base["extract"]["ensemble"] = {"members": members, "local": local}
        if preset == "auto":
            preset = info.preset if local else "embedding"
    elif info.needs_model and models:
        base["extract"]["model_path"] = str(models[0])
    if preset == "auto":
        preset = info.preset
    if overrides and not isinstance(overrides, Mapping):
        overrides = parse_overrides(overrides)
    return get_config(preset, _merge(base, overrides or {}))


def _merge(base: Mapping, extra: Mapping) -> Dict:
    """Nested dicts: ``extra``'s values over ``base``'s (sections merged, not replaced)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def count_rows(csv_path: PathLike) -> int:
    """Data rows of a CSV file (lines after the header; a missing final newline is counted)."""
    n, last = 0, b"\n"
    with open(csv_path, "rb") as fh:
        while True:
            block = fh.read(1 << 22)
            if not block:
                break
            n += block.count(b"\n")
            last = block[-1:]
    if last != b"\n":
        n += 1
    return max(0, n - 1)


def is_public_run(data: PathLike, public_train_rows: int = PUBLIC_TRAIN_ROWS, task: str = "recognition",
                  public_test_images: int = PUBLIC_TEST_IMAGES_2021) -> bool:
    """True for the competition's public data: ``data/train.csv`` with the public number of rows
    (GLR2020), or ``data/test/`` with the public number of images (GLR2021)."""
    if task == "retrieval":
        test = Path(data) / "test"
        return test.is_dir() and sum(1 for _ in test.rglob("*.jpg")) == public_test_images
    path = Path(data) / "train.csv"
    return path.is_file() and count_rows(path) == public_train_rows


def copy_sample_submission(data: PathLike, out: PathLike) -> Path:
    """Copy ``data/sample_submission.csv`` to ``out`` (the public-run shortcut)."""
    src = Path(data) / "sample_submission.csv"
    if not src.is_file():
        raise FileNotFoundError(f"No sample_submission.csv in {data}: cannot take the public-run shortcut")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, out)
    return out


@dataclass
class SubmissionResult:
    """What :func:`make_submission` did."""

    submission: Path
    shortcut: bool  # True: sample_submission.csv was copied (public run), nothing computed
    run: Optional[object] = None  # the pipeline's RunResult when the pipeline ran

    @property
    def metrics(self) -> Optional[Dict[str, float]]:
        return getattr(self.run, "metrics", None)

    def __str__(self) -> str:
        if self.shortcut:
            return (f"Public run: copied sample_submission.csv to {self.submission} "
                    "(Kaggle re-runs the notebook on the hidden test set, where the pipeline runs)")
        timings = getattr(self.run, "timings", {}) or {}
        steps = ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
        return f"Wrote {self.submission} ({steps})"


def make_submission(conf: Config, paths: RunPaths, public_run_shortcut: bool = True,
                    public_train_rows: int = PUBLIC_TRAIN_ROWS, overwrite: bool = False,
                    time_budget: Union[None, str, float] = None) -> SubmissionResult:
    """Write the submission: the whole pipeline, or the public-run shortcut.

    Args:
        conf: pipeline configuration (see :func:`choose_config`).
        paths: from :func:`resolve_paths`.
        public_run_shortcut: when ``train.csv`` has ``public_train_rows`` rows, copy
            ``sample_submission.csv`` instead of running (the host baseline's behaviour).
        overwrite: recompute artifacts of ``paths.work`` made with other settings.
        time_budget: the pipeline's time limit (``"8h30m"``, seconds; see
            :mod:`landmark_retrieval.budget`); ``"auto"`` = ``conf.run.time_budget``, else 8h30m on
            Kaggle (which stops a notebook after 9 hours); None = ``conf.run.time_budget``;
            ``""``/``"none"`` = no limit.
    """
    if time_budget == "auto":
        time_budget = conf.run.time_budget or ("8h30m" if paths.on_kaggle else None)
    if public_run_shortcut and is_public_run(paths.data, public_train_rows, paths.task):
        logger.info("The public data (%s): taking the public-run shortcut", paths.task)
        return SubmissionResult(copy_sample_submission(paths.data, paths.submission), shortcut=True)
    # the dataset's task is detected from its layout (GLR2021 data has an index/ folder)
    result = run(conf, paths.data, paths.work, paths.submission, overwrite=overwrite, time_budget=time_budget)
    return SubmissionResult(Path(result.submission), shortcut=False, run=result)


def example_figures(result: SubmissionResult, paths: RunPaths, conf: Config,
                    num_neighbours: int = 5) -> list:
    """A sanity check of a finished run: the neighbours and verified matches of one test image.

    Returns:
        ``[neighbours figure, matches figure]``, or ``[]`` after the public-run shortcut (nothing
        was computed) or when no test image has neighbours.
    """
    if result.shortcut:
        return []
    try:
        query = visualize.pick_query(paths.data, paths.work, conf)
        db_id = visualize.best_neighbour(paths.data, paths.work, query, conf)
    except (RuntimeError, KeyError) as exc:
        logger.warning("No example to show: %s", exc)
        return []
    return [visualize.show_query(paths.data, paths.work, query, conf, num_neighbours),
            visualize.show_pair(paths.data, paths.work, query, db_id, conf)]


def environment_report(modules: Sequence[str] = ("tensorflow", "cv2", "numpy", "pydegensac", "faiss",
                                                  "h5py", "pandas", "landmark_retrieval")) -> str:
    """Versions of the modules a run uses (``missing`` when not importable), one per line."""
    lines = []
    for name in modules:
        try:
            mod = importlib.import_module(name)
            version = getattr(mod, "__version__", "installed")
        except Exception as exc:  # ImportError, or a broken install
            version = f"missing ({type(exc).__name__})"
        lines.append(f"{name:20s} {version}")
    return "\n".join(lines)


