"""Figures of a finished run, composed from the artifacts in its work directory.

The drawing primitives in :mod:`landmark_retrieval.viz` take arrays and never read files; the
functions here read what a run stored (``features/``, ``retrieval.h5``, ``verification.csv``,
``config.json``) and the dataset's images, and hand them to those primitives::

    from landmark_retrieval import visualize
    q = visualize.pick_query("data/demo", "work/demo")           # a test image worth looking at
    visualize.show_query("data/demo", "work/demo", q)             # neighbours and their scores
    visualize.show_pair("data/demo", "work/demo", q, visualize.best_neighbour("data/demo", "work/demo", q))
    visualize.show_keypoints("data/demo", "work/demo", "test", q) # keypoints coloured by score

Every ``show_*`` function returns a new :class:`matplotlib.figure.Figure` (shown inline by
Jupyter, saved with :func:`landmark_retrieval.viz.save_figure`). ``conf`` defaults to the
configuration the run saved in ``WORK/config.json``, so the re-ranking and the recomputed
matches are those of the run (DEGENSAC is seeded: the inliers drawn are the ones counted).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .backends.registry import BACKENDS, score_label
from .config import Config
from .io.candidates import Candidates, load_candidates
from .io.dataset import Dataset, load_dataset
from .io.images import read_image
from .io.layout import feature_dir
from .io.store import FeatureStore, read_meta
from .matching.geometry import ESTIMATORS
from .matching.lightglue import LightGlueMatcher, features_backend
from .matching.pairs import verify_pair
from .presets import resolve_run_config
from .search.rerank import predict_one, total_scores
from .viz import plot_keypoints, plot_matches, plot_retrieval, save_figure

logger = logging.getLogger("landmark_retrieval")

DataArg = Union[str, Path, Dataset]

#: what the stored ``scores`` of each backend are (from the backend registry)
SCORE_NAMES = {name: info.score_label for name, info in BACKENDS.items()}


# --------------------------------------------------------------------------------------------
# Loading what a run stored
# --------------------------------------------------------------------------------------------
def _dataset(data: DataArg) -> Dataset:
    return data if isinstance(data, Dataset) else load_dataset(data)


def load_run_config(work: Union[str, Path], preset: Optional[str] = None,
                    overrides: Union[Mapping, Sequence[str], None] = None) -> Config:
    """The configuration of a run: the one saved in ``WORK/config.json`` (else ``default``).

    Never changes the saved file (see :func:`landmark_retrieval.presets.resolve_run_config`,
    with ``save=False``); settings that differ from it are named in a warning.

    Args:
        work: the run's work directory (``pipeline.run`` and every CLI step save ``config.json``).
        preset: a preset name that replaces the saved configuration.
        overrides: applied last (nested dict or ``"section.option=value"`` strings).
    """
    return resolve_run_config(work, preset, overrides, save=False)


def _conf(work: Union[str, Path], conf: Optional[Config]) -> Config:
    return conf if conf is not None else load_run_config(work)


def query_candidates(dataset: Dataset, work: Union[str, Path], query_id: str,
                     num_to_rerank: int) -> Candidates:
    """Retrieved neighbours of one test image with their verification results."""
    return load_candidates(work, _db_labels(dataset), num_to_rerank, [query_id])[query_id]


def _db_labels(dataset: Dataset) -> Optional[Dict[str, int]]:
    """Landmarks of the database images: train labels, or None for the retrieval task's index."""
    return None if dataset.task == "retrieval" else dataset.labels()


def _local_features(store: FeatureStore, split: str, image_id: str):
    """Stored local features, or a KeyError that says why a database (train or index) image may
    have none."""
    if split != "test" and not store.has_local(image_id):
        raise KeyError(
            f"{split.capitalize()} image {image_id!r} has no stored local features in {store.directory}. With "
            "extract.train_local=candidates (the Kaggle presets) only the re-ranking candidates of "
            "the test images have them: pick one of a test image's first verify.num_to_rerank "
            "neighbours (see neighbour_table)."
        )
    return store.local(image_id)


def _truth(dataset: Dataset, query_id: str) -> Optional[List[int]]:
    """Ground-truth landmarks of a test image ([] = non-landmark), None without solution.csv
    (or for the retrieval task, whose truth is a list of index images: see :func:`_relevant`)."""
    if dataset.solution is None or not hasattr(dataset.solution, "landmarks") or \
            query_id not in dataset.solution.landmarks:
        return None
    return dataset.solution.landmarks[query_id]


def _relevant(dataset: Dataset, query_id: str) -> Optional[List[str]]:
    """Relevant index ids of a test image in the retrieval task ([] = none), None without
    ``solution.csv`` (or for the recognition task, see :func:`_truth`)."""
    images = getattr(dataset.solution, "images", None)
    if dataset.task != "retrieval" or images is None or query_id not in images:
        return None
    return list(images[query_id])


def neighbour_table(data: DataArg, work: Union[str, Path], query_id: str,
                    conf: Optional[Config] = None) -> pd.DataFrame:
    """The candidates of one test image in re-ranked order, one row each.

    Columns: ``rank`` (after re-ranking), ``retrieval_rank``, ``db_id`` (a train image, or an
    index image in the retrieval task), ``landmark_id`` (left out in the retrieval task unless
    the run inferred the index images' landmarks: ``retrieve.label_aware``), ``global_score``
    (cosine), ``num_matches`` (putative), ``inliers`` (DEGENSAC), ``total`` (the re-ranking score)
    and, with ``solution.csv``, ``correct`` (the right landmark, or a relevant index image).
    """
    dataset = _dataset(data)
    conf = _conf(work, conf)
    c = query_candidates(dataset, work, query_id, conf.verify.num_to_rerank)
    n = min(conf.verify.num_to_rerank, len(c.db_ids))
    _, ranking = predict_one(c, conf, verified=True)
    position = {db_id: i for i, db_id in enumerate(c.db_ids)}
    totals = total_scores(c.global_scores, c.inliers, conf.predict.max_inlier_score, conf.predict.global_weight)
    truth, relevant = _truth(dataset, query_id), _relevant(dataset, query_id)
    labelled = dataset.task != "retrieval" or bool((c.labels >= 0).any())  # index images: inferred labels only
    rows = []
    for rank, db_id in enumerate(ranking):
        i = position[db_id]
        row = {"rank": rank, "retrieval_rank": i, "db_id": db_id}
        if labelled:
            row["landmark_id"] = int(c.labels[i])
        row.update({
            "global_score": float(c.global_scores[i]), "num_matches": int(c.num_matches[i]),
            "inliers": int(c.inliers[i]), "total": float(totals[i]) if i < n else float("nan"),
        })
        if truth is not None:
            row["correct"] = int(c.labels[i]) in truth
        elif relevant is not None:
            row["correct"] = db_id in relevant
        rows.append(row)
    return pd.DataFrame(rows)


def pick_pair(data: DataArg, work: Union[str, Path], conf: Optional[Config] = None) -> Tuple[str, str]:
    """A (test id, database id) pair worth looking at: the verified pair with the most inliers.

    With ``solution.csv`` only correctly labelled neighbours count (when there are any).
    """
    dataset = _dataset(data)
    conf = _conf(work, conf)
    candidates = load_candidates(work, _db_labels(dataset), conf.verify.num_to_rerank)
    if not candidates:
        raise RuntimeError(f"No test image has retrieval results in {work}: run the pipeline first")
    relevant = getattr(dataset.solution, "images", None)  # retrieval task: relevant index ids
    first = next(iter(candidates))
    best: Tuple[int, int, str, str] = (-1, -1, first, candidates[first].db_ids[0] if candidates[first].db_ids else "")
    for q, c in candidates.items():
        truth = _truth(dataset, q) or []
        for db_id, label, inl in zip(c.db_ids, c.labels, c.inliers):
            correct = db_id in relevant.get(q, ()) if relevant is not None else int(label) in truth
            key = (int(correct), int(inl), q, db_id)
            if key[:2] > best[:2]:
                best = key
    return best[2], best[3]


def pick_query(data: DataArg, work: Union[str, Path], conf: Optional[Config] = None) -> str:
    """A test image worth looking at: the one whose best verified neighbour has the most inliers
    (see :func:`pick_pair`)."""
    return pick_pair(data, work, conf)[0]


def best_neighbour(data: DataArg, work: Union[str, Path], query_id: str,
                   conf: Optional[Config] = None) -> str:
    """The database (train or index) image ranked first after re-ranking (most inliers + cosine)."""
    dataset = _dataset(data)
    conf = _conf(work, conf)
    c = query_candidates(dataset, work, query_id, conf.verify.num_to_rerank)
    if not c.db_ids:
        raise RuntimeError(f"Test image {query_id!r} has no retrieved neighbours in {work}")
    return predict_one(c, conf, verified=True)[1][0]


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------
def show_query(data: DataArg, work: Union[str, Path], query_id: str, conf: Optional[Config] = None,
               num_neighbours: int = 5, dpi: int = 100) -> Figure:
    """A test image and its first ``num_neighbours`` neighbours after re-ranking.

    Each neighbour is titled with its landmark id (the retrieval task: its index id, and its
    inferred landmark when the run is label-aware), cosine (global) score, DEGENSAC inliers and
    total re-ranking score; with ``solution.csv`` it is framed green (right landmark, or a
    relevant index image) or red. The query's title gives the prediction (and the true landmark,
    or the number of relevant index images, when known).
    """
    dataset = _dataset(data)
    conf = _conf(work, conf)
    table = neighbour_table(dataset, work, query_id, conf).head(max(1, int(num_neighbours)))
    c = query_candidates(dataset, work, query_id, conf.verify.num_to_rerank)
    retrieval = dataset.task == "retrieval"
    truth = _relevant(dataset, query_id) if retrieval else _truth(dataset, query_id)
    query_title = f"test {query_id}"
    if retrieval:  # the prediction is a ranking of index images, shown by the neighbours
        if c.query_label >= 0:
            query_title += f"\ninferred landmark {c.query_label}"
        if truth is not None:
            query_title += f"\n{len(truth)} relevant index images" if truth else "\nno relevant index image"
    else:
        pred, _ = predict_one(c, conf, verified=True)
        if pred is not None:
            query_title += f"\npredicted {pred[0]} ({pred[1]:.2f})"
        if truth is not None:
            query_title += "\ntrue: " + (" ".join(map(str, truth)) if truth else "non-landmark")
    titles, images, correct = [], [], []
    for row in table.itertuples():
        total = "not verified" if np.isnan(row.total) else f"total {row.total:.2f}"
        label = getattr(row, "landmark_id", -1)
        if retrieval:
            total += f", landmark {label}" if label >= 0 else ""
            titles.append(f"#{row.rank + 1} {dataset.db_split} {row.db_id}\n"
                          f"global {row.global_score:.3f}  inliers {row.inliers}\n{total}")
        else:
            titles.append(f"#{row.rank + 1} landmark {label}\n"
                          f"global {row.global_score:.3f}  inliers {row.inliers}\n{total}")
        images.append(read_image(dataset.path(dataset.db_split, row.db_id)))
        correct.append(bool(row.correct) if truth is not None else None)
    return plot_retrieval(read_image(dataset.path("test", query_id)), images, titles,
                          query_title=query_title, correct=correct if truth is not None else None, dpi=dpi)


def show_pair(data: DataArg, work: Union[str, Path], query_id: str, db_id: str,
              conf: Optional[Config] = None, max_lines: int = 150, dpi: int = 100) -> Figure:
    """Keypoint matches between a test image and a database (train or index) image.

    The matches are recomputed from the stored local features with
    :func:`landmark_retrieval.matching.pairs.verify_pair` and ``conf.verify`` (seeded DEGENSAC, and
    the same learned matcher with ``verify.matcher = lightglue``, so they are the ones the run
    counted): DEGENSAC inliers in green, the other putative matches in red.
    """
    dataset = _dataset(data)
    conf = _conf(work, conf)
    db_split = dataset.db_split
    with FeatureStore(feature_dir(work, "test")) as te, FeatureStore(feature_dir(work, db_split)) as tr:
        fq, ft = _local_features(te, "test", query_id), _local_features(tr, db_split, db_id)
    matcher = None
    if conf.verify.matcher == "lightglue":
        matcher = LightGlueMatcher(features_backend(read_meta(feature_dir(work, "test"))), conf.verify.lightglue)
    res = verify_pair(fq, ft, conf.verify, matcher)
    label = dataset.labels().get(db_id) if db_split == "train" else None  # index images have no labels
    landmark = "" if label is None else f", landmark {label}"
    fig = plot_matches(read_image(dataset.path("test", query_id)), read_image(dataset.path(db_split, db_id)),
                       fq.keypoints, ft.keypoints, res.matches, res.inlier_mask,
                       titles=[f"test {query_id} ({len(fq)} keypoints)",
                               f"{db_split} {db_id}{landmark} ({len(ft)} keypoints)"],
                       max_lines=max_lines, dpi=dpi)
    fit = ESTIMATORS[conf.verify.estimator].label + ("" if conf.verify.geometry == "homography" else " (F)")
    fig.suptitle(f"{res.num_inliers} {fit} inliers (green) / {len(res.matches)} putative matches "
                 f"(rejected in red)", fontsize=10)
    return fig


def show_keypoints(data: DataArg, work: Union[str, Path], split: str, image_id: str,
                   dpi: int = 100) -> Figure:
    """An image with its stored keypoints coloured by score (DELG attention or SIFT response)."""
    dataset = _dataset(data)
    directory = feature_dir(work, split)
    with FeatureStore(directory) as store:
        feats = _local_features(store, split, image_id)
    meta = read_meta(directory) or {}
    local = meta.get("local")  # an ensemble's local backend (see backends.ensemble)
    label = score_label(local.get("name") if isinstance(local, dict) else meta.get("name", ""))
    return plot_keypoints(read_image(dataset.path(split, image_id)), feats.keypoints, feats.scores,
                          title=f"{split} {image_id}: {len(feats)} keypoints, coloured by {label}",
                          score_label=label, dpi=dpi)


def save_show_figures(data: DataArg, work: Union[str, Path], out: Union[str, Path],
                      query_id: Optional[str] = None, db_id: Optional[str] = None,
                      conf: Optional[Config] = None, num_neighbours: int = 5,
                      keypoints: bool = False, dpi: int = 100,
                      colors: Optional[int] = None) -> Dict[str, Path]:
    """What ``landmark-retrieval show`` saves: neighbours, matches (and keypoints) as PNGs.

    Args:
        out: path of the neighbours picture; the others go beside it as ``<stem>_matches.png``
            and ``<stem>_keypoints.png``.
        query_id: test image (default: :func:`pick_query`).
        db_id: database (train or index) image to match with (default: :func:`best_neighbour`).
        colors: save PNGs with a palette of this many colours (smaller files), None = full colour.

    Returns:
        ``{"neighbours": path, "matches": path[, "keypoints": path]}``.
    """
    dataset = _dataset(data)
    conf = _conf(work, conf)
    query_id = query_id or pick_query(dataset, work, conf)
    db_id = db_id or best_neighbour(dataset, work, query_id, conf)
    out = Path(out)
    suffix = out.suffix or ".png"
    paths = {
        "neighbours": save_figure(show_query(dataset, work, query_id, conf, num_neighbours, dpi=dpi),
                                  out.with_suffix(suffix), colors=colors),
        "matches": save_figure(show_pair(dataset, work, query_id, db_id, conf, dpi=dpi),
                               out.with_name(f"{out.stem}_matches{suffix}"), colors=colors),
    }
    if keypoints:
        paths["keypoints"] = save_figure(show_keypoints(dataset, work, "test", query_id, dpi=dpi),
                                         out.with_name(f"{out.stem}_keypoints{suffix}"), colors=colors)
    return paths


