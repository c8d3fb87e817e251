"""Kaggle submission helpers used by ``notebooks/02_glr2020_submission.ipynb``.

On Kaggle (detected by the competition data mounted at
``/kaggle/input/landmark-recognition-2020``) the notebook takes its inputs from the attached
datasets and writes ``/kaggle/working/submission.csv``; anywhere else every path comes from the
notebook's config cell. The logic lives here so that the notebook stays a list of calls::

    paths = resolve_paths(data="", work="work/nb02", model="", out="submission/submission.csv")  # "" = demo
    conf = choose_config(paths.model)
    result = make_submission(conf, paths, public_run_shortcut=True)

Public-run shortcut: the competition's notebooks are first run on the public data (1,580,470
train images), where the result is not scored, and then re-run by Kaggle on the hidden test set.
The host baseline saves the hours of the public run by copying ``sample_submission.csv`` when
``train.csv`` has exactly the public number of rows; :func:`make_submission` does the same when
``public_run_shortcut`` is true (turn it off to process the public data for real).
"""
from __future__ import annotations

import importlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Union

from .config import Config, get_config

logger = logging.getLogger("landmark_retrieval")

KAGGLE_INPUT = Path("/kaggle/input")
KAGGLE_WORKING = Path("/kaggle/working")
COMPETITION = "landmark-recognition-2020"
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


def competition_dir(kaggle_input: PathLike = KAGGLE_INPUT) -> Path:
    return Path(kaggle_input) / COMPETITION


def on_kaggle(kaggle_input: PathLike = KAGGLE_INPUT) -> bool:
    """True when the GLR2020 competition data is mounted (a Kaggle notebook with it attached)."""
    return (competition_dir(kaggle_input) / "train.csv").is_file()


@dataclass
class RunPaths:
    """Where a submission run reads and writes."""

    data: Path
    work: Path
    submission: Path
    model: Optional[Path]  # DELG SavedModel directory; None = classical backend
    on_kaggle: bool

    def __str__(self) -> str:
        where = "Kaggle" if self.on_kaggle else "local"
        return (f"[{where}] data={self.data} model={self.model or '(none: classical backend)'} "
                f"work={self.work} submission={self.submission}")


def resolve_data(data: Optional[PathLike], demo_dir: PathLike = DEMO_DATA, build_demo: bool = True) -> Path:
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
    from .demo import build_demo_dataset

    logger.info("DATA is not set: using the embedded demo dataset in %s", demo)
    build_demo_dataset(demo)
    return demo


def resolve_paths(data: Optional[PathLike] = None, work: Optional[PathLike] = None,
                  model: Optional[PathLike] = None, out: Optional[PathLike] = None,
                  build_demo: bool = True, kaggle_input: PathLike = KAGGLE_INPUT,
                  kaggle_working: PathLike = KAGGLE_WORKING, demo_dir: PathLike = DEMO_DATA) -> RunPaths:
    """Input and output paths: Kaggle's when on Kaggle, else the given ones.

    Args:
        data, work, model, out: dataset root, work directory, DELG model directory ("" or None
            = no model) and submission path used off Kaggle. On Kaggle they are replaced by the
            competition data, ``/tmp/landmark-retrieval-work``, the attached
            ``delg-saved-models/local_and_global`` and ``/kaggle/working/submission.csv``.
        build_demo: off Kaggle and without ``data`` (None or ""), build and use the embedded
            demo dataset at ``demo_dir``; a given ``data`` must exist (see :func:`resolve_data`).
        kaggle_input, kaggle_working: Kaggle's mount points (tests pass a fake layout).
        demo_dir: where the demo dataset is built when ``data`` is not given.

    Raises:
        FileNotFoundError: a dataset or model directory that does not exist (with the fix).
        ValueError: off Kaggle, no ``data`` and ``build_demo`` false.
    """
    if on_kaggle(kaggle_input):
        model_dir = Path(kaggle_input) / MODEL_SUBDIR
        if not (model_dir / "saved_model.pb").is_file():
            raise FileNotFoundError(
                f"No DELG model at {model_dir}: attach the dataset 'delg-saved-models' to the notebook "
                "(Add data -> search 'delg-saved-models')")
        return RunPaths(data=competition_dir(kaggle_input), work=KAGGLE_WORK,
                        submission=Path(kaggle_working) / "submission.csv", model=model_dir, on_kaggle=True)
    data_dir = resolve_data(data, demo_dir, build_demo)
    model_dir = Path(model) if model else None
    if model_dir is not None and not model_dir.is_dir():
        raise FileNotFoundError(
            f"DELG model folder {model_dir} does not exist. Set MODEL to a DELG SavedModel folder, "
            "e.g. one made offline with `landmark-retrieval make-test-model DIR`, or to '' for the "
            "classical backend")
    return RunPaths(data=data_dir, work=Path(work or "work"), model=model_dir,
                    submission=Path(out or "submission/submission.csv"), on_kaggle=False)


def choose_config(model: Optional[PathLike] = None, backend: str = "auto", preset: str = "auto",
                  overrides: Union[Mapping, Sequence[str], None] = None) -> Config:
    """The configuration for a run with or without a model.

    Args:
        model: model directory, e.g. a DELG SavedModel (None or "" = no model).
        backend: ``"auto"`` (with a model the first registered backend that needs one, ``delg``;
            else the first that does not, ``sift``) or a name in
            :data:`landmark_retrieval.backends.BACKENDS`.
        preset: ``"auto"`` (the backend's preset in the registry: ``kaggle-baseline`` for DELG,
            ``demo`` for the classical backend) or a preset name.
        overrides: applied last (nested dict or ``"section.option=value"`` strings).
    """
    from .backends import BACKENDS, default_backend

    if backend == "auto":
        backend = default_backend(model=bool(model))
    if backend not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    info = BACKENDS[backend]
    if info.needs_model and not model:
        raise ValueError(f"The {backend} backend needs a model: set MODEL to its model folder (for delg a DELG "
                         "SavedModel; make one offline with `landmark-retrieval make-test-model DIR`)")
    if preset == "auto":
        preset = info.preset
    base: Dict[str, Dict[str, object]] = {"extract": {"backend": backend}}
    if info.needs_model:
        base["extract"]["model_path"] = str(model)
    conf = get_config(preset, base)
    return get_config(conf, overrides) if overrides else conf


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


def is_public_run(data: PathLike, public_train_rows: int = PUBLIC_TRAIN_ROWS) -> bool:
    """True when ``data/train.csv`` has the public competition's number of rows."""
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
                    public_train_rows: int = PUBLIC_TRAIN_ROWS, overwrite: bool = False) -> SubmissionResult:
    """Write the submission: the whole pipeline, or the public-run shortcut.

    Args:
        conf: pipeline configuration (see :func:`choose_config`).
        paths: from :func:`resolve_paths`.
        public_run_shortcut: when ``train.csv`` has ``public_train_rows`` rows, copy
            ``sample_submission.csv`` instead of running (the host baseline's behaviour).
        overwrite: recompute artifacts of ``paths.work`` made with other settings.
    """
    if public_run_shortcut and is_public_run(paths.data, public_train_rows):
        logger.info("train.csv has %d rows (the public data): taking the public-run shortcut", public_train_rows)
        return SubmissionResult(copy_sample_submission(paths.data, paths.submission), shortcut=True)
    from .pipeline import run

    result = run(conf, paths.data, paths.work, paths.submission, overwrite=overwrite)
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
    from . import visualize

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


__all__ = [
    "KAGGLE_INPUT", "KAGGLE_WORKING", "PUBLIC_TRAIN_ROWS", "DEMO_DATA", "on_kaggle", "competition_dir",
    "RunPaths", "resolve_data", "resolve_paths", "choose_config", "count_rows", "is_public_run",
    "copy_sample_submission", "SubmissionResult", "make_submission", "example_figures",
    "environment_report",
]
