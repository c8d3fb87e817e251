"""Pipeline configuration: one dataclass per step, named presets, overrides, a run's saved copy.

A configuration is a :class:`Config` holding one section per pipeline step; ``extract`` has one
sub-section per group of backend settings (``extract.sift``, ``extract.orb``, ``extract.vlad``, ``extract.delg``,
``extract.embedding``, ``extract.ensemble``; which backend reads which is registered in
:data:`landmark_retrieval.backends.BACKENDS`).
Presets are named partial configurations (:data:`PRESETS`); :func:`get_config` starts from the
defaults, applies a preset, then applies overrides given either as a nested dict (notebooks) or
as ``"section.option=value"`` strings (CLI ``--set``)::

    conf = get_config("kaggle-baseline", {"verify": {"num_to_rerank": 20}})
    conf = get_config("kaggle-baseline", ["verify.num_to_rerank=20", "extract.delg.score_threshold=150"])

A run keeps its configuration in ``WORK/config.json``: :func:`resolve_run_config` continues a run
with it (every CLI step does), :func:`save_run_config` saves it (``pipeline.run`` does), and
:func:`config_diff` names the settings that differ between two configurations.

Presets
-------
``kaggle-baseline``
    The GLR2020 host baseline, exactly: DELG scales (0.7071, 1.0, 1.4142), attention threshold
    175, 1000 local features; re-rank the 10 nearest train images with DEGENSAC (4 px, 0.99
    confidence, 1000 iterations) on nearest-neighbour matches closer than 0.9; total score
    ``min(inliers, 70) / 70 + cosine``; the label with the largest summed score over the top 5
    re-ranked neighbours wins, with that sum as confidence.
``glr-tuned``
    The host baseline with the DEGENSAC settings a GLR2020 silver-medal single-DELG solution
    reported as better: a 12 px reprojection threshold, 5000 iterations, descriptor distance 0.85,
    inlier cap 40 (the range they found good was 20-70).
``fast``
    The host baseline's extraction and DEGENSAC settings, with the putative matches filtered
    before DEGENSAC: mutual nearest neighbours that pass a ratio test of 0.85, at most the 200
    closest. DEGENSAC then sees ~50 mostly-right matches instead of ~1000 mostly-wrong ones
    (0.9 alone lets nearly every descriptor match): it costs a fraction of the time, and the
    real-photo GLR evaluation of ``benchmarks/bench_verify.py`` scores higher, not lower.
    Matching itself (one 1000 x 1000 x 128 float32 product per pair) is then most of the time.
``demo``
    The classical backend (RootSIFT + VLAD) with ratio-test matching, sized for the embedded demo.
``classical-best``
    ``demo`` with the recognition settings that scored best on local validation splits
    (``benchmarks/bench_quality.py``): confidence from the verified inliers of the winning
    label's best candidate, the 30 nearest re-ranked, mutual nearest-neighbour matches.
``default``
    The classical backend with the host baseline's verification settings.
``embedding``
    A global-descriptor model of your own (``extract.backend=embedding``, ``--model PATH``),
    without re-ranking (it has no local features): retrieval and the per-label vote only.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import json
import logging
import math
import numbers
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from .layout import config_path

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
    SavedModel or an ONNX file, with the preprocessing it was trained with. No local features."""

    model_path: Optional[str] = None  # .keras/.h5 file, SavedModel folder or .onnx file; None = extract.model_path
    format: str = "auto"  # auto (from the path), keras, savedmodel or onnx
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
class ExtractConfig:
    """Feature extraction (step 1): settings shared by every backend, then one section per group."""

    backend: str = "sift"  # a name in landmark_retrieval.backends.BACKENDS: sift, orb, delg, embedding, ensemble
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
    """A learned projection of global descriptors (see :mod:`landmark_retrieval.projection`):
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
    # Post-processing of global descriptors (see landmark_retrieval.descriptors), all learned on
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
    normalised to seconds by :func:`landmark_retrieval.budget.parse_duration`."""


@dataclass
class RunConfig:
    """How a whole run is carried out; never changes a result (see :mod:`landmark_retrieval.budget`
    and :mod:`landmark_retrieval.cluster`)."""

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

    def to_dict(self, relevant_only: bool = False) -> Dict[str, Any]:
        """Nested dict of every setting.

        Args:
            relevant_only: leave out the ``extract`` sections (and ``model_path``) that the
                configured backend does not read.
        """
        out = dataclasses.asdict(self)
        if relevant_only:
            from .backends import BACKENDS

            infos = [BACKENDS[b] for b in backends_used(self.extract) if b in BACKENDS]
            used = {section for info in infos for section in info.sections}
            for name in extract_sections():
                if name not in used:
                    del out["extract"][name]
            if infos and not any(info.needs_model for info in infos):
                del out["extract"]["model_path"]
        return out

    def to_json(self, relevant_only: bool = False) -> str:
        """:meth:`to_dict` as indented JSON (what ``WORK/config.json`` holds)."""
        return json.dumps(self.to_dict(relevant_only), indent=2, sort_keys=True)

    def summary(self) -> str:
        """One line: the preset and the settings that differ from it, as ``--set`` arguments."""
        return config_summary(self)


@dataclass(frozen=True)
class Preset:
    """A named partial configuration."""

    description: str  # one line, shown by `landmark-retrieval presets`
    settings: Mapping[str, Any]  # nested dict applied over the defaults


PRESETS: Dict[str, Preset] = {
    "default": Preset("the classical backend (RootSIFT + VLAD) with the host baseline's verification settings", {}),
    "kaggle-baseline": Preset(
        "the GLR2020 host baseline exactly: DELG (3 scales, attention 175, 1000 features), DEGENSAC "
        "re-ranking of the 10 nearest, per-label sum over the top 5",
        {
            "extract": {
                "backend": "delg",
                "train_local": "candidates",
                "delg": {"scales": BASELINE_SCALES, "score_threshold": 175.0, "max_keypoints": 1000},
            },
            "verify": {
                "num_to_rerank": 10,
                "max_descriptor_distance": 0.9,
                "ratio_test": None,
                "mutual": False,
                "max_reprojection_error": 4.0,
                "confidence": 0.99,
                "max_iterations": 1000,
                "min_matches": 5,
            },
            "predict": {"top_k": 5, "max_inlier_score": 70, "global_weight": 1.0},
        },
    ),
    "glr-tuned": Preset(
        "kaggle-baseline with the DEGENSAC settings of a GLR2020 silver solution (12 px, 5000 "
        "iterations, distance 0.85, inlier cap 40)",
        {
            "extract": {"backend": "delg", "train_local": "candidates"},
            "verify": {
                "max_reprojection_error": 12.0,
                "max_iterations": 5000,
                "max_descriptor_distance": 0.85,
            },
            "predict": {"max_inlier_score": 40},
        },
    ),
    # Measured with benchmarks/bench_verify.py (real photos, RootSIFT): the filtered putatives
    # cost no accuracy; matching the 800 strongest features instead of 1000 makes the similarity
    # product (most of verification's time) 0.64x for a verified GAP 0.9094 -> 0.9080.
    "fast": Preset(
        "kaggle-baseline with the putative matches filtered before DEGENSAC (mutual nearest "
        "neighbours, ratio test 0.85, at most 200) among each image's 800 strongest local features: "
        "verification ~2x faster",
        {
            "extract": {"backend": "delg", "train_local": "candidates"},
            "verify": {"mutual": True, "ratio_test": 0.85, "max_matches": 200, "max_keypoints": 800},
        },
    ),
    "demo": Preset(
        "the classical backend (RootSIFT + VLAD) with ratio-test matching, sized for the embedded demo",
        {
            "extract": {"backend": "sift", "sift": {"max_keypoints": 1000}, "vlad": {"num_words": 32}},
            "verify": {
                "num_to_rerank": 10,
                "ratio_test": 0.9,
                "max_descriptor_distance": 1.0,
                "max_reprojection_error": 6.0,
                "max_iterations": 2000,
            },
            "predict": {"top_k": 5, "max_inlier_score": 40},
        },
    ),
    # Measured with benchmarks/bench_quality.py (GAP / mAP@100, verified), chosen on 10 validation
    # splits of the groups set's train part (landmark_retrieval.split; never the test labels):
    # validation 0.8624 / 0.8174 (demo) -> 0.9079 / 0.8493; groups.csv set 0.8877 / 0.9266 -> 0.9497 / 0.9393.
    # Non-landmark rules (a)-(c) are off: (a) adds nothing over the inlier confidence, (b) lowered
    # the validation GAP (VLAD descriptors), (c) moved the groups set's GAP by < 0.01.
    "classical-best": Preset(
        "the classical backend (demo settings) with the best measured recognition: inlier-calibrated "
        "confidence, re-ranking of the 30 nearest, mutual ratio-test matches",
        {
            "extract": {"backend": "sift", "sift": {"max_keypoints": 1000}, "vlad": {"num_words": 32}},
            "verify": {
                "num_to_rerank": 30,
                "ratio_test": 0.9,
                "mutual": True,
                "max_descriptor_distance": 1.0,
                "max_reprojection_error": 6.0,
                "max_iterations": 2000,
            },
            "predict": {"top_k": 5, "max_inlier_score": 40, "confidence": "inliers", "inlier_global_weight": 0.3},
        },
    ),
    "embedding": Preset(
        "a global-descriptor model of your own (extract.backend=embedding, --model PATH) without "
        "re-ranking: retrieval and the per-label vote over the top 5",
        {
            "extract": {"backend": "embedding"},
            "verify": {"enabled": False},
            "predict": {"top_k": 5},
        },
    ),
}

#: extract options of earlier versions (flat names) -> their place now, read from old config.json files
RENAMED: Dict[str, str] = {
    "extract.sift_max_keypoints": "extract.sift.max_keypoints",
    "extract.sift_contrast_threshold": "extract.sift.contrast_threshold",
    "extract.vlad_num_words": "extract.vlad.num_words",
    "extract.vlad_max_training_descriptors": "extract.vlad.max_training_descriptors",
    "extract.vlad_power": "extract.vlad.power",
    "extract.vlad_intra_normalization": "extract.vlad.intra_normalization",
    "extract.seed": "extract.vlad.seed",
    "extract.delg_scales": "extract.delg.scales",
    "extract.delg_score_threshold": "extract.delg.score_threshold",
    "extract.delg_max_feature_num": "extract.delg.max_keypoints",
    "extract.delg_global_scales_ind": "extract.delg.global_scales_ind",
    "extract.delg_local": "extract.delg.local",
    "extract.delg_global": "extract.delg.global_",
}

#: one change between two configurations: (dotted key, old value, new value)
Change = Tuple[str, Any, Any]


def list_presets() -> Tuple[str, ...]:
    """Names of the available presets."""
    return tuple(PRESETS)


def extract_sections() -> Tuple[str, ...]:
    """Names of the per-backend sections of :class:`ExtractConfig` (``sift``, ``vlad``, ``delg``,
    ``embedding``, ``ensemble``)."""
    hints = _hints(ExtractConfig)
    return tuple(f.name for f in dataclasses.fields(ExtractConfig) if dataclasses.is_dataclass(hints[f.name]))


# --------------------------------------------------------------------------------------------
# Typed overrides
# --------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> Dict[str, Any]:
    return typing.get_type_hints(cls)


def _kind(tp: Any) -> Tuple[bool, Any, Any]:
    """``(optional, base type, element type)`` of a field type (element type for tuples)."""
    optional = False
    if typing.get_origin(tp) is Union:
        args = typing.get_args(tp)
        rest = [a for a in args if a is not type(None)]
        optional = len(rest) < len(args)
        tp = rest[0]
    if typing.get_origin(tp) is tuple:
        return optional, tuple, typing.get_args(tp)[0]
    return optional, tp, None


_EXPECTED = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
_NOUNS = {int: "integer", float: "number"}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _scalar(value: Any, base: type, where: str) -> Any:
    """``value`` (a CLI string or a notebook value) as ``base``, or a ValueError naming ``where``."""
    text = value.strip() if isinstance(value, str) else None
    if base is bool:
        if isinstance(value, bool):
            return value
        if text is not None and text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
    elif base is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if text is not None:
            try:
                return int(text)
            except ValueError:
                pass
    elif base is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
        if text is not None:
            try:
                return float(text)
            except ValueError:
                pass
    elif base is str:
        if isinstance(value, (str, os.PathLike)):
            return str(text if text is not None else Path(value))
    else:  # pragma: no cover - every field type is listed above
        return value
    raise ValueError(f"{where}: expected {_EXPECTED[base]}, got {value!r}")


def _is_records(elem: Any) -> bool:
    return typing.get_origin(elem) is dict or elem is dict


RECORDS_EXAMPLE = '[{"backend": "embedding", "model_path": "model.keras", "weight": 1.0}]'


def _records(value: Any, where: str) -> Tuple[Dict[str, Any], ...]:
    """A list of JSON objects (a JSON string from ``--set``, or lists/dicts from Python) as a tuple
    of plain JSON dicts (tuples become lists, so a saved and re-read value compares equal)."""
    what = f"expected a JSON list of objects, e.g. {RECORDS_EXAMPLE}"
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
        return ()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ValueError(f"{where}: {what}; not valid JSON ({exc}): {value!r}") from None
    if isinstance(value, Mapping):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{where}: {what}, got {value!r}")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise ValueError(f"{where}[{i}]: expected an object ({{\"backend\": ...}}), got {item!r}")
        try:
            out.append(json.loads(json.dumps(dict(item), default=os.fspath)))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}[{i}]: not representable as JSON ({exc}): {item!r}") from None
    return tuple(out)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a CLI string or a notebook value to the type of a config field."""
    optional, base, elem = _kind(tp)
    if base is tuple and _is_records(elem):
        return _records(value, where)
    text = value.strip().lower() if isinstance(value, str) else None
    if value is None or text in ("none", "null", ""):
        if optional:
            return None
        what = _EXPECTED.get(base, "a value") if base is not tuple else f"comma-separated {_NOUNS[elem]}s"
        raise ValueError(f"{where}: expected {what}, got {value!r} (this option cannot be none)")
    if base is tuple:
        what = f"comma-separated {_NOUNS[elem]}s, e.g. {'0.5,1.0' if elem is float else '0,2'}"
        if isinstance(value, str):
            items: Iterable[Any] = [v for v in value.replace(" ", "").strip("()[]").split(",") if v]
        elif isinstance(value, (list, tuple)):
            items = value
        else:
            raise ValueError(f"{where}: expected {what}, got {value!r}")
        try:
            return tuple(_scalar(v, elem, where) for v in items)
        except ValueError:
            raise ValueError(f"{where}: expected {what}, got {value!r}") from None
    return _scalar(value, base, where)


def _unknown(target: Any, where: str, source: str) -> KeyError:
    names = [f.name for f in dataclasses.fields(target)]
    section = where.rsplit(".", 1)[0] if "." in where else ""
    if not section:
        return KeyError(f"Unknown config section {where!r} in {source}; expected one of: {', '.join(names)}")
    hint = f" ({where} is now {RENAMED[where]})" if where in RENAMED else ""
    return KeyError(f"Unknown option {where} in {source}{hint}; valid options of {section}: {', '.join(names)}")


def _apply(target: Any, values: Mapping[str, Any], source: str, prefix: str = "") -> None:
    """Set the options in ``values`` (nested dicts for sections) on the dataclass ``target``."""
    hints = _hints(type(target))
    for key, value in values.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        name = key if key in hints else f"{key}_" if f"{key}_" in hints else None  # global -> global_
        if name is None:
            raise _unknown(target, where, source)
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            if isinstance(value, tp):
                setattr(target, name, copy.deepcopy(value))
                continue
            if not isinstance(value, Mapping):
                options = ", ".join(f.name for f in dataclasses.fields(tp))
                raise ValueError(f"{where} is a section, not an option: set one of its options "
                                 f"({where}.OPTION=value; options: {options}), got {value!r}")
            _apply(getattr(target, name), value, source, where)
        else:
            setattr(target, name, _coerce(value, tp, where))


def parse_overrides(items: Iterable[str]) -> Dict[str, Any]:
    """Parse ``["verify.num_to_rerank=20", "extract.sift.max_keypoints=500"]`` into nested dicts:
    ``{"verify": {"num_to_rerank": "20"}, "extract": {"sift": {"max_keypoints": "500"}}}``."""
    out: Dict[str, Any] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) < 2 or not all(parts):
            raise ValueError(f"Override {item!r} must look like section.option=value "
                             "(e.g. verify.num_to_rerank=20 or extract.sift.max_keypoints=500)")
        node = out
        for i, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"Override {item!r} conflicts with {'.'.join(parts[:i + 1])}={node}")
        if isinstance(node.get(parts[-1]), dict):
            raise ValueError(f"Override {item!r}: {key} is a section; set one of its options")
        node[parts[-1]] = value
    return out


#: the values of the choice options of ``extract.embedding`` (matched case-insensitively)
EMBEDDING_CHOICES: Dict[str, Tuple[str, ...]] = {
    "format": ("auto", "keras", "savedmodel", "onnx"),
    "resize": ("resize", "keep_aspect", "fit", "none"),
    "scaling": ("0-255", "0-1", "-1-1", "imagenet", "caffe"),
    "channel_order": ("RGB", "BGR"),
    "layout": ("auto", "NHWC", "NCHW"),
    "pooling": ("gem", "avg", "max", "none"),
}


def _validate_embedding(e: EmbeddingConfig, where: str) -> None:
    """Check the ``extract.embedding`` options (``where`` names the section); choices are stored
    in their canonical spelling (``nchw`` -> ``NCHW``)."""
    for name, choices in EMBEDDING_CHOICES.items():
        value = getattr(e, name)
        canonical = {c.lower(): c for c in choices}.get(str(value).strip().lower())
        if canonical is None:
            raise ValueError(f"{where}.{name}: expected one of {', '.join(choices)}, got {value!r}")
        setattr(e, name, canonical)
    if e.input_size is not None and e.input_size < 1:
        raise ValueError(f"{where}.input_size: expected a positive number of pixels or none (the model's "
                         f"input size), got {e.input_size}")
    if not e.scales or not all(math.isfinite(v) and v > 0 for v in e.scales):
        raise ValueError(f"{where}.scales: expected positive numbers, e.g. 1.0 or 0.7071,1.0,1.4142, "
                         f"got {format_value(e.scales) or 'nothing'}")
    if not (math.isfinite(e.gem_p) and e.gem_p > 0):
        raise ValueError(f"{where}.gem_p: expected a positive number (3 is usual), got {e.gem_p}")


@dataclass
class EnsembleMember:
    """One member of an ensemble (see :func:`ensemble_members`)."""

    name: str  # its label: the record's "name", else the backend (numbered when several unnamed share it)
    weight: float  # its global descriptor is multiplied by this before concatenation
    extract: "ExtractConfig"  # its complete settings (backend, model_path, sections)


#: what a member record may set besides "backend", "weight", "name" and the backend sections; the
#: other extract settings (max_pixels, shard_size, train_local, ...) belong to the whole step
MEMBER_OPTIONS = ("model_path", "max_image_size")


def ensemble_members(extract: ExtractConfig) -> List[EnsembleMember]:
    """The members of ``extract.ensemble``, validated, each with its complete extract settings.

    A member's settings are ``extract``'s (its sections, ``model_path``, ``max_image_size``) with
    the member record's own applied over them, so ``--set extract.embedding.input_size=512``
    reaches every embedding member that does not set its own.

    Raises:
        ValueError / KeyError: naming the member (``extract.ensemble.members[1].weight: ...``).
    """
    from .backends import BACKENDS

    where0 = "extract.ensemble.members"
    records = extract.ensemble.members
    if not records:
        raise ValueError(f"{where0}: the ensemble backend needs at least one member, e.g. "
                         f"--set 'extract.ensemble.members={RECORDS_EXAMPLE}'")
    sections = tuple(s for s in extract_sections() if s != "ensemble")
    allowed = ("backend", "weight", "name") + MEMBER_OPTIONS + sections
    choices = ", ".join(b for b in BACKENDS if b != "ensemble")
    base = copy.deepcopy(extract)
    base.ensemble = EnsembleConfig()
    unnamed = [r.get("backend") if "name" not in r else None for r in records]
    members: List[EnsembleMember] = []
    for i, record in enumerate(records):
        where = f"{where0}[{i}]"
        unknown = [k for k in record if k not in allowed]
        if unknown:
            raise KeyError(f"Unknown option {where}.{unknown[0]}; a member takes: {', '.join(allowed)} (the other "
                           "extract settings apply to the whole step: set them as extract.OPTION)")
        backend = record.get("backend")
        if backend not in BACKENDS or backend == "ensemble":
            why = ("an ensemble cannot be a member of an ensemble (list its members here instead)"
                   if backend == "ensemble" else f"unknown backend {backend!r}" if backend else "missing")
            raise ValueError(f"{where}.backend: {why}; choose one of: {choices}")
        weight = _scalar(record.get("weight", 1.0), float, f"{where}.weight")
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"{where}.weight: expected a positive number, got {weight}")
        conf = copy.deepcopy(base)
        _apply(conf, {k: v for k, v in record.items() if k not in ("weight", "name")}, where0, where)
        _validate_embedding(conf.embedding, f"{where}.embedding")
        if "name" in record:
            name = _scalar(record["name"], str, f"{where}.name")
        elif unnamed.count(backend) > 1:
            name = f"{backend}{unnamed[:i + 1].count(backend)}"
        else:
            name = backend
        if not name or name in [m.name for m in members]:
            raise ValueError(f"{where}.name: {name!r} is {'empty' if not name else 'the name of another member'}; "
                             "give every member its own name")
        members.append(EnsembleMember(name, weight, conf))
    return members


def ensemble_local(extract: ExtractConfig,
                   members: List[EnsembleMember]) -> Tuple[Optional[int], Optional[ExtractConfig]]:
    """Where an ensemble's local features come from (``extract.ensemble.local``).

    Returns:
        ``(member index, None)`` when ``local`` names a member (its name, or the backend of
        exactly one member), ``(None, settings)`` for a separate backend configured by ``extract``'s
        own settings (e.g. ``sift`` with ``extract.sift``), ``(None, None)`` for no local features.

    Raises:
        ValueError: an unknown name, or a backend shared by several members (name one).
    """
    from .backends import BACKENDS

    local = extract.ensemble.local
    if local is None:
        return None, None
    names = [m.name for m in members]
    if local in names:
        return names.index(local), None
    same = [m.name for m in members if m.extract.backend == local]
    if len(same) > 1:
        raise ValueError(f"extract.ensemble.local: {len(same)} members use the {local} backend ({', '.join(same)}): "
                         "set local to the name of one of them")
    if same:
        return names.index(same[0]), None
    if local not in BACKENDS or local == "ensemble":
        raise ValueError(f"extract.ensemble.local: {local!r} is neither a member ({', '.join(names)}) nor a backend "
                         f"({', '.join(b for b in BACKENDS if b != 'ensemble')}); none = no local features")
    conf = copy.deepcopy(extract)
    conf.backend = local
    conf.ensemble = EnsembleConfig()
    return None, conf


def backends_used(extract: ExtractConfig) -> List[str]:
    """The backend and, for an ensemble, its members' and local backend's names (unvalidated)."""
    names = [extract.backend]
    if extract.backend == "ensemble":
        names += [r.get("backend") for r in extract.ensemble.members if isinstance(r.get("backend"), str)]
        if extract.ensemble.local:
            names.append(extract.ensemble.local)
    return names


def _validate(conf: Config) -> None:
    from .backends import BACKENDS

    if conf.extract.backend not in BACKENDS:
        raise ValueError(f"extract.backend: unknown backend {conf.extract.backend!r}; "
                         f"choose one of: {', '.join(BACKENDS)}")
    if conf.extract.train_local not in ("all", "candidates"):
        raise ValueError(f"extract.train_local: expected 'all' or 'candidates', got {conf.extract.train_local!r}")
    _validate_embedding(conf.extract.embedding, "extract.embedding")
    from .backends.aggregators import validate_global

    validate_global(conf.extract)
    from .geometry import validate_geometry_options

    validate_geometry_options(conf.verify.estimator, conf.verify.geometry)
    for key in ("max_keypoints", "max_matches"):
        value = getattr(conf.verify, key)
        if value is not None and value < 1:
            raise ValueError(f"verify.{key}: expected a positive integer or none, got {value}")
    if conf.extract.backend == "ensemble":
        ensemble_local(conf.extract, ensemble_members(conf.extract))
    if conf.retrieve.k < conf.verify.num_to_rerank:
        conf.retrieve.k = conf.verify.num_to_rerank
    from .budget import parse_duration

    conf.run.time_budget = parse_duration(conf.run.time_budget, "run.time_budget")
    conf.run.checkpoint_every = parse_duration(conf.run.checkpoint_every, "run.checkpoint_every")
    _validate_predict(conf.predict)
    _validate_search(conf.retrieve)
    from .projection import validate_projection

    validate_projection(conf.retrieve.projection)


def _validate_search(r: RetrieveConfig) -> None:
    """Check ``retrieve.index`` (a name of landmark_retrieval.search.SEARCHERS) and its settings."""
    from .search import SEARCHERS

    r.index = str(r.index).strip().lower()
    if r.index not in SEARCHERS:
        raise ValueError(f"retrieve.index: unknown searcher {r.index!r}; choose one of: {', '.join(SEARCHERS)}")
    for where, value in (("retrieve.stream_block", r.stream_block), ("retrieve.ivfpq.nlist", r.ivfpq.nlist),
                         ("retrieve.ivfpq.nprobe", r.ivfpq.nprobe), ("retrieve.ivfpq.m", r.ivfpq.m),
                         ("retrieve.ivfpq.refine_factor", r.ivfpq.refine_factor),
                         ("retrieve.ivfpq.train_size", r.ivfpq.train_size), ("retrieve.hnsw.m", r.hnsw.m),
                         ("retrieve.hnsw.ef_construction", r.hnsw.ef_construction),
                         ("retrieve.hnsw.ef_search", r.hnsw.ef_search)):
        if value < 1:
            raise ValueError(f"{where}: expected a positive integer, got {value}")
    if not 1 <= r.ivfpq.bits <= 16:
        raise ValueError(f"retrieve.ivfpq.bits: expected 1 to 16 bits per code (8 is usual), got {r.ivfpq.bits}")
    if not (math.isfinite(r.stream_above_gb) and r.stream_above_gb >= 0):
        raise ValueError(f"retrieve.stream_above_gb: expected a size in GB >= 0, got {r.stream_above_gb}")


def _validate_predict(p: PredictConfig) -> None:
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


def get_config(
    preset: Union[str, Config, None] = "default",
    overrides: Union[Mapping[str, Any], Iterable[str], None] = None,
) -> Config:
    """Build a configuration from a preset name and overrides.

    Args:
        preset: a name from :data:`PRESETS`, an existing :class:`Config` (copied), or None
            (``"default"``).
        overrides: nested dict ``{"verify": {"num_to_rerank": 20}, "extract": {"sift":
            {"max_keypoints": 500}}}`` or strings ``["verify.num_to_rerank=20",
            "extract.sift.max_keypoints=500"]``.

    Returns:
        A new :class:`Config`.

    Raises:
        KeyError: an unknown preset, section or option (the message lists the valid ones).
        ValueError: a value of the wrong type (the message names the option).
    """
    if isinstance(preset, Config):
        conf = copy.deepcopy(preset)
    else:
        name = preset or "default"
        if name not in PRESETS:
            raise KeyError(f"Unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
        conf = Config(name=name)
        _apply(conf, PRESETS[name].settings, f"preset {name!r}")
    if overrides:
        if not isinstance(overrides, Mapping):
            overrides = parse_overrides(overrides)
        _apply(conf, overrides, "overrides")
    _validate(conf)
    return conf


# --------------------------------------------------------------------------------------------
# Differences
# --------------------------------------------------------------------------------------------
def flatten(values: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """``{"verify": {"num_to_rerank": 10}}`` -> ``{"verify.num_to_rerank": 10}`` (in order)."""
    out: Dict[str, Any] = {}
    for key, value in values.items():
        where = f"{prefix}.{key}" if prefix else key
        if isinstance(value, Mapping):
            out.update(flatten(value, where))
        else:
            out[where] = value
    return out


def config_diff(a: Config, b: Config) -> List[Change]:
    """Settings that differ from ``a`` to ``b``: ``[("verify.num_to_rerank", 10, 20), ...]``.

    Keys are dotted (``extract.sift.max_keypoints``), in the order of the dataclasses; ``name``
    (the preset) counts as a setting.
    """
    fa, fb = flatten(a.to_dict()), flatten(b.to_dict())
    return [(key, fa.get(key), fb.get(key)) for key in {**fa, **fb} if fa.get(key) != fb.get(key)]


def format_value(value: Any) -> str:
    """A setting as it is written after ``--set option=`` (``true``, ``none``, ``1.0,2.0``)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (tuple, list)) and any(isinstance(v, Mapping) for v in value):
        return json.dumps(list(value))  # ensemble members: the JSON that --set takes
    if isinstance(value, (tuple, list)):
        return ",".join(format_value(v) for v in value)
    return str(value)


def format_changes(changes: Iterable[Change]) -> str:
    """``verify.num_to_rerank: 10 -> 20; predict.top_k: 5 -> 3``."""
    return "; ".join(f"{key}: {format_value(old)} -> {format_value(new)}" for key, old, new in changes)


def config_summary(conf: Config) -> str:
    """One line: ``preset demo + verify.num_to_rerank=20 predict.top_k=3`` (the settings that
    differ from the preset ``conf.name``, or from the defaults when it names no preset)."""
    if conf.name in PRESETS:
        base, what = get_config(conf.name), f"preset {conf.name}"
    else:
        base, what = Config(), f"configuration {conf.name!r}: defaults"
    changes = [c for c in config_diff(base, conf) if c[0] != "name"]
    if not changes:
        return f"{what} (unchanged)"
    return f"{what} + " + " ".join(f"{key}={format_value(new)}" for key, _, new in changes)


# --------------------------------------------------------------------------------------------
# A run's saved configuration (WORK/config.json)
# --------------------------------------------------------------------------------------------
def _upgrade(values: Mapping[str, Any]) -> Dict[str, Any]:
    """A saved configuration with the option names of earlier versions moved to their place now."""
    values = copy.deepcopy(dict(values))
    extract = values.get("extract")
    if isinstance(extract, dict):
        for old, new in RENAMED.items():
            key = old.split(".", 1)[1]
            if key in extract:
                section, option = new.split(".")[1:]
                extract.setdefault(section, {})[option] = extract.pop(key)
    return values


def read_run_config(work: Union[str, Path]) -> Optional[Config]:
    """The configuration saved in ``WORK/config.json``, or None when there is none.

    Raises:
        ValueError: the file cannot be read or holds unknown settings (the message names it).
    """
    path = config_path(work)
    if not path.is_file():
        return None
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(values, dict):
            raise ValueError("not a JSON object")
        conf = Config()
        _apply(conf, _upgrade(values), str(path))
        _validate(conf)
        return conf
    except (OSError, ValueError, KeyError) as exc:
        reason = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise ValueError(f"Cannot use the saved configuration {path}: {reason}. Delete the file, or "
                         "pass --preset NAME to start from a preset (it is then replaced)") from None


def _read_or_ignore(work: Union[str, Path]) -> Optional[Config]:
    try:
        return read_run_config(work)
    except ValueError as exc:
        logger.warning("%s", exc)
        return None


def save_run_config(work: Union[str, Path], conf: Config) -> List[Change]:
    """Save ``conf`` as ``WORK/config.json`` (the steps that follow continue with it).

    When it changes the saved configuration, one warning names the settings that changed (an
    unreadable saved file is replaced, with a warning).

    Returns:
        The changes from the saved configuration ([] for a new work directory).
    """
    return _save(work, conf, _read_or_ignore(work))


def _save(work: Union[str, Path], conf: Config, saved: Optional[Config]) -> List[Change]:
    from .store import write_text_atomic

    path = config_path(work)
    changes = config_diff(saved, conf) if saved is not None else []
    if changes:
        logger.warning("Settings of the run in %s changed (saved in %s): %s", work, path.name,
                       format_changes(changes))
    text = conf.to_json() + "\n"
    try:
        same = path.read_text(encoding="utf-8") == text
    except (OSError, ValueError):
        same = False
    if not same:
        write_text_atomic(path, text)
    return changes


def resolve_run_config(work: Union[str, Path], preset: Optional[str] = None,
                       overrides: Union[Mapping[str, Any], Iterable[str], None] = None,
                       save: bool = True) -> Config:
    """The configuration a step runs with in ``work``: the run's, unless told otherwise.

    The base is ``preset`` when given, else the configuration saved in ``WORK/config.json``,
    else the ``default`` preset; ``overrides`` apply last. The settings that differ from the
    saved configuration are named in one warning.

    Args:
        work: the run's work directory.
        preset: a preset name; replaces the saved configuration.
        overrides: nested dict or ``"section.option=value"`` strings.
        save: save the result as the run's configuration (steps that write artifacts); False for
            commands that only read a run (``evaluate``, ``show``): the changes then apply to that
            command only.

    Raises:
        ValueError: ``WORK/config.json`` is unreadable and no ``preset`` was given.
    """
    saved = _read_or_ignore(work) if preset else read_run_config(work)
    conf = get_config(preset or saved or "default", overrides)
    if save:
        _save(work, conf, saved)
    elif saved is not None:
        changes = config_diff(saved, conf)
        if changes:
            logger.warning("Using settings that differ from the run's (%s, not changed): %s",
                           config_path(work), format_changes(changes))
    return conf
