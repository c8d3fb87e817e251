"""Your own photos: match two images, index a folder, search it.

* :func:`match_images`: local features of two image files, putative matches, a robust fit
  (DEGENSAC by default) and a picture of the matches (inliers green, rejected red);
* :func:`index_folder`: every image under a folder becomes the ``index`` split of a work
  directory (ids: paths relative to the folder, :mod:`landmark_retrieval.io.collection`); run again
  it extracts only the files added since, and files removed from the folder leave the index;
* :func:`search_collection`: query images against an indexed folder: global retrieval, geometric
  verification of the first candidates, results ranked best first with their score and inliers,
  and a contact sheet per query; it only reads the index, so searches run side by side.

All three use a preset (:data:`PHOTOS_PRESET` unless told otherwise; ``index`` saves it in the work
directory and ``search`` continues with it) and the steps of the Kaggle pipeline (extract,
retrieve, verify), so every option of a run applies and every artifact resumes.
"""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

import numpy as np

from .backends.base import store_meta
from .backends.extraction import to_original
from .backends.registry import make_backend
from .config import Config
from .dependencies import check_dependencies
from .extract import check_features, extract
from .io.candidates import load_candidates
from .io.collection import (
    collection_dataset,
    photo_path,
    query_images,
    read_collection,
    read_listing,
    scan_folder,
    write_collection,
)
from .io.images import decode_image, read_image, resize_max_side
from .io.layout import (
    database_lock_dir,
    feature_dir,
    fingerprint,
    search_scratch_dir,
    searches_dir,
    stamp_changes,
)
from .io.lock import work_lock
from .io.store import FeatureStore
from .matching.lightglue import LightGlueMatcher
from .matching.pairs import verify_pair
from .presets import get_config, local_backend, resolve_run_config, save_run_config
from .retrieve import retrieve
from .search.rerank import total_scores
from .verify import verify
from .viz import plot_matches, plot_retrieval, save_figure

logger = logging.getLogger("landmark_retrieval")

PathLike = Union[str, Path]
#: the preset of the own-photo commands when none is given (and none is saved in the work directory)
PHOTOS_PRESET = "classical-best"


# ---------------------------------------------------------------------------------------------
# match A B


def match_images(path0: PathLike, path1: PathLike, conf: Optional[Config] = None,
                 picture: Optional[PathLike] = None) -> Dict[str, Any]:
    """Match two image files (any size, any supported format, EXIF orientation honoured).

    Args:
        conf: the settings (``extract`` for the local features, ``verify`` for matching and the
            fit); default: the :data:`PHOTOS_PRESET` preset.
        picture: where to save the picture of the matches (none: no picture).

    Returns:
        ``{"image0", "image1", "matches", "inliers", "homography" (3x3 list or None),
        "fundamental" (3x3 list or None), "picture" (path or None), "keypoints": [n0, n1]}``;
        keypoints and the models are in each image's own pixels.

    Raises:
        FileNotFoundError / ValueError: an unreadable image (named).
    """
    conf = conf or get_config(PHOTOS_PRESET)
    check_dependencies(conf)
    backend = make_backend(conf.extract)
    images, feats = [], []
    for path in (path0, path1):
        if not Path(path).is_file():
            raise FileNotFoundError(f"No such image file: {path}")
        try:
            decoded = decode_image(path, conf.extract.max_pixels)
        except OSError as exc:
            raise ValueError(f"{exc} (JPEG, PNG, WebP, TIFF, BMP, PPM/PGM and GIF files can be read)") from None
        feats.append(to_original(backend.extract(decoded.array, local=True, global_=False), decoded))
        images.append(decoded)
    vc = conf.verify
    matcher = LightGlueMatcher(local_backend(conf.extract), vc.lightglue) if vc.matcher == "lightglue" else None
    res = verify_pair(feats[0], feats[1], vc, matcher)
    out: Dict[str, Any] = {
        "image0": str(path0), "image1": str(path1), "matches": int(len(res.matches)), "inliers": res.num_inliers,
        "homography": None if res.homography is None else np.asarray(res.homography, float).tolist(),
        "fundamental": None if res.fundamental is None else np.asarray(res.fundamental, float).tolist(),
        "keypoints": [len(feats[0]), len(feats[1])], "picture": None}
    if picture is not None:
        shown = [d.array for d in images]
        kpts = [_to_shown(f.keypoints, d) for f, d in zip(feats, images)]
        fig = plot_matches(shown[0], shown[1], kpts[0], kpts[1], res.matches, res.inlier_mask,
                           titles=[Path(path0).name, Path(path1).name])
        out["picture"] = str(save_figure(fig, picture))
    return out


def _to_shown(keypoints: np.ndarray, decoded: Any) -> np.ndarray:
    """Original-pixel keypoints (N, 2) on the decoded (possibly smaller) image."""
    sx, sy = decoded.factors
    return (keypoints + 0.5) * np.array([sx, sy], np.float32) - 0.5


# ---------------------------------------------------------------------------------------------
# index FOLDER, search WORK QUERY...


@dataclass
class IndexSummary:
    """What an ``index`` call did."""

    folder: str
    work: str
    images: int  # images now in the index
    added: int  # extracted by this call
    removed: int  # indexed before, gone from the folder now
    failed: List[Dict[str, str]] = field(default_factory=list)  # {"path", "error"} of unreadable files

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _photos_config(work: Path, preset: Optional[str], overrides: Union[Iterable[str], Dict[str, Any], None],
                   save: bool) -> Config:
    """The work directory's saved configuration, else ``preset`` (else :data:`PHOTOS_PRESET`)."""
    if preset is None and not (work / "config.json").is_file():
        preset = PHOTOS_PRESET
    return resolve_run_config(work, preset, overrides, save=save)


def index_folder(folder: PathLike, work: PathLike, preset: Optional[str] = None,
                 overrides: Union[Iterable[str], Dict[str, Any], None] = None, wait: bool = False) -> IndexSummary:
    """Index every image under ``folder`` into ``work`` (see the module docstring).

    Raises:
        FileNotFoundError: ``folder`` is not a folder.
        ValueError: ``work`` indexes another folder, or the folder has no images.
        WorkDirectoryBusy: another run holds ``work`` (and ``wait`` is false).
    """
    folder, work = Path(folder).expanduser(), Path(work)
    if not folder.is_dir():
        raise FileNotFoundError(f"No such folder: {folder}")
    with work_lock(work, wait=wait):
        shutil.rmtree(searches_dir(work), ignore_errors=True)  # killed searches' scratch: none runs now
        known = read_collection(work)
        if known is not None and known.resolve() != folder.resolve():
            raise ValueError(f"{work} indexes {known}, not {folder}: use another --work for this folder")
        if known is None and (work / "config.json").is_file():
            raise ValueError(f"{work} holds a run that is not an index of a folder: use another --work")
        conf = _photos_config(work, preset, overrides, save=False)
        check_dependencies(conf)
        backend = check_features(conf, collection_dataset(folder, index={}), work)
        save_run_config(work, conf)
        listed = read_listing(work) if known is not None else []
        write_collection(work, folder, listed)
        index = scan_folder(folder)
        if not index:
            raise ValueError(f"{folder} holds no image files (.jpg, .png, .webp, .tif, ...)")
        dataset = collection_dataset(folder, index=index)
        before, local, _ = _stored(work, "index")
        extracted = before | local  # an interrupted run's images too (local features, no global yet)
        extract(conf, dataset, work, backend=backend)
        after, _, failures = _stored(work, "index")
        write_collection(work, folder, index)
        failed = [{"path": str(index[i].relative_to(folder).as_posix()), "error": failures[i]}
                  for i in index if i in failures]
        return IndexSummary(str(folder), str(work), len([i for i in index if i in after]),
                            len([i for i in index if i in after and i not in extracted]),
                            len([i for i in listed if i not in index]), failed)


def _indexed(work: Path, folder: Path) -> Dict[str, Path]:
    """``{id: path}`` of the images the last ``index`` stored features of and that are still in
    the folder.

    Raises:
        ValueError: the last ``index`` was interrupted before every listed image was described.
    """
    stored, _, failures = _stored(work, "index")
    listed = read_listing(work)
    missing = [i for i in listed if i not in stored and i not in failures]
    if missing:
        raise ValueError(f"The index in {work} is incomplete ({len(missing)} images of {folder} not described yet, "
                         f"e.g. {photo_path(missing[0])}): run `landmark-retrieval index {folder} --work {work}` "
                         "again")
    found = {i: folder / photo_path(i) for i in listed if i in stored}
    return {i: path for i, path in found.items() if path.is_file()}


def _stored(work: Path, split: str) -> Tuple[Set[str], Set[str], Dict[str, str]]:
    """What the store of ``split`` holds, read once: ids with a global descriptor, ids with local
    features, and ``{id: error}`` of the images that gave no features."""
    directory = feature_dir(work, split)
    if not directory.exists():
        return set(), set(), {}
    with FeatureStore(directory) as store:
        return set(store.global_ids), set(store.local_ids), dict(store.failures)


def search_collection(work: PathLike, queries: Sequence[PathLike], top: int = 10,
                      pictures: Optional[PathLike] = None, overrides: Union[Iterable[str], None] = None,
                      wait: bool = False) -> Dict[str, Any]:
    """Search an indexed folder for each query image (files, or folders of images).

    The index is only read: any number of searches run together (they hold the work directory's
    lock shared; ``index`` waits for them). Each works in its own scratch directory
    (:func:`landmark_retrieval.io.layout.search_scratch_dir`), removed when it ends; a killed
    search resumes when run again with the same queries. Files added to the folder since the last
    ``index`` are not searched until ``index`` runs again; files removed since are left out.

    Args:
        top: results per query.
        pictures: folder for one contact sheet per query (``<query file stem>.jpg``); none: no pictures.
        overrides: settings for this search only (``"verify.num_to_rerank=30"``).

    Returns:
        ``{"queries": [{"query": path, "results": [{"path": relative path, "score": float,
        "inliers": int or None}, ...], "picture": path or None}]}``, results best first; a query
        whose features could not be extracted has no results (and an ``"error"``).

    Raises:
        ValueError: ``work`` is not an index, or an incomplete one (``index FOLDER --work WORK``
            first, or again).
    """
    work = Path(work)
    folder = read_collection(work)
    if folder is None:
        raise ValueError(f"{work} is not an index of a folder: run `landmark-retrieval index FOLDER --work {work}` "
                         "first")
    with work_lock(work, wait=wait, shared=True):
        conf = _photos_config(work, None, overrides, save=False)
        check_dependencies(conf)
        conf.retrieve.k = max(conf.retrieve.k, int(top), conf.verify.num_to_rerank)
        backend = make_backend(conf.extract)
        changes = stamp_changes(feature_dir(work, "index"), store_meta(backend, conf.extract.max_pixels))
        if changes:  # queries must be described as the index was
            raise ValueError(f"The index in {work} was extracted with other settings ({'; '.join(changes)}): search "
                             "describes its queries with the index's settings. Drop those --set options, or index "
                             "the folder with them into another --work")
        found = query_images(queries)
        dataset = collection_dataset(folder, found, index=_indexed(work, folder))
        if not dataset.index_ids:
            raise ValueError(f"{folder} holds no indexed image files any more: nothing to search")
        scratch = search_scratch_dir(work, fingerprint({"queries": sorted(found), "settings": conf.to_dict()})[:16])
        with work_lock(scratch, wait=True, waiting_level=logging.INFO):  # the same search elsewhere: in turn
            link = feature_dir(scratch, "index")
            if not link.is_symlink():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(os.path.relpath(feature_dir(work, "index"), link.parent), target_is_directory=True)
            extract(conf, dataset, scratch, splits=("test",), backend=backend)
            with work_lock(database_lock_dir(work), wait=True, waiting_level=logging.DEBUG):  # derived files: once
                retrieve(conf, dataset, scratch)
            if conf.verify.enabled:
                verify(conf, dataset, scratch)
            candidates = load_candidates(scratch, None, conf.verify.num_to_rerank)
            failures = _stored(scratch, "test")[2]
            shutil.rmtree(scratch, ignore_errors=True)
    out = []
    for qid, path in found.items():
        entry: Dict[str, Any] = {"query": str(path), "results": [], "picture": None}
        c = candidates.get(qid)
        if c is None:
            entry["error"] = failures.get(qid, "no global descriptor (unreadable or featureless image)")
            out.append(entry)
            continue
        entry["results"] = ranked_results(c, conf, int(top))
        if pictures is not None and entry["results"]:
            entry["picture"] = str(_contact_sheet(path, folder, entry["results"], Path(pictures), qid))
        out.append(entry)
    return {"queries": out}


def ranked_results(c: Any, conf: Config, top: int) -> List[Dict[str, Any]]:
    """The ``top`` index images of one query, best first: the verified candidates by total score
    (``min(inliers, max_inlier_score) / max_inlier_score + global_weight * cosine``), then the
    others by ``global_weight * cosine``; ``inliers`` is None for images not verified."""
    n = min(conf.verify.num_to_rerank, len(c.db_ids)) if conf.verify.enabled else 0
    score = c.global_scores.astype(np.float64) * conf.predict.global_weight
    if n:
        score[:n] = total_scores(c.global_scores[:n], c.inliers[:n], conf.predict.max_inlier_score,
                                 conf.predict.global_weight)
    order = np.argsort(-score, kind="stable")[:top]
    return [{"path": photo_path(c.db_ids[i]), "score": round(float(score[i]), 6),
             "inliers": int(c.inliers[i]) if i < n else None} for i in order]


def _contact_sheet(query: Path, folder: Path, results: List[Dict[str, Any]], out_dir: Path, qid: str) -> Path:
    thumb = lambda p: resize_max_side(read_image(p), 320)[0]  # noqa: E731
    titles = [f"{Path(r['path']).name}\nscore {r['score']:.3f}" + (f", {r['inliers']} inliers" if r["inliers"]
                                                                   is not None else "") for r in results]
    fig = plot_retrieval(thumb(query), [thumb(folder / r["path"]) for r in results], titles,
                         query_title=f"query: {query.name}")
    return save_figure(fig, out_dir / f"{query.stem}-{qid.split('-')[1][:8]}.jpg", dpi=80)
