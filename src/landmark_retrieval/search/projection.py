"""A learned projection of global descriptors (``retrieve.projection``): a linear map or a 2-layer
MLP trained with TensorFlow on the stored global descriptors of train images, saved with the train
features and applied to database and query descriptors in the retrieve step.

Methods (registered in :data:`PROJECTION_METHODS`):

* ``siamese``: contrastive loss (Hadsell, Chopra & LeCun 2006) on pairs of train images,
  ``y d^2 + (1 - y) max(0, margin - d)^2`` with ``d`` the distance between the unit outputs and
  ``y = 1`` for the same landmark (``train.csv``). Landmarks are sampled at random (those with
  several images first), up to ``positives + 1`` images each; every image is paired with up to
  ``positives`` images of its landmark and with its ``negatives`` nearest images of other
  landmarks (hard negatives, by cosine of the stored descriptors, mined once before training).
* ``simclr``: NT-Xent (Chen et al. 2020), no labels: every sampled image of the database split
  gives its stored descriptor plus ``views`` augmented views (random resized crop, flip, colour
  jitter, rotation within +-10 degrees; drawn from ``(seed, view, image id)``), described by the
  run's backend exactly as at extraction (decoded with ``extract.max_pixels``, the backend's own
  resizing; VLAD encoded with the stored codebook). The descriptors of one image attract each
  other and repel those of the other images of the batch (temperature ``temperature``).

Outputs are L2-normalised (retrieval stays cosine similarity). The projection is applied *before*
PCA/whitening, DBA and QE: it is trained on the backend's raw descriptors (the only space the
augmented views exist in), and whitening is then learned on the projected database.

The weights are trained once and reused: ``WORK/features/<split>/projection.h5`` with its stamp
``projection.json`` (the settings, the backend's feature settings and a hash of the training
descriptors and labels); a change of any of them retrains. Training is deterministic: seeded
sample, pairs, augmentations, initial weights (numpy) and batch order, and TensorFlow's op
determinism; the same settings give byte-identical weights. Applying the projection is numpy
(TensorFlow is imported only to train).

Pure computation first (numpy: :class:`Projector`, losses, sampling, pair mining, augmentation),
then training (TensorFlow), then the I/O the retrieve step calls (:func:`fit_projection`).
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np

from ..features import l2_normalize

if TYPE_CHECKING:  # config imports this module lazily (validation); no cycle at run time
    from ..config import ProjectionConfig

logger = logging.getLogger("landmark_retrieval")

INSTALL = "pip install 'landmark-retrieval[delg]' (or pip install tensorflow-cpu)"

Layers = List[Tuple[np.ndarray, np.ndarray]]


# --------------------------------------------------------------------------------------------
# The projector (numpy)
# --------------------------------------------------------------------------------------------
@dataclass
class Projector:
    """A trained projection: dense layers with ReLU between them, unit output rows."""

    layers: Layers  # [(W (D_in, D_out) float32, b (D_out,) float32), ...]
    method: str = ""

    @property
    def input_dim(self) -> int:
        return int(self.layers[0][0].shape[0])

    @property
    def dim(self) -> int:
        return int(self.layers[-1][0].shape[1])

    def apply(self, x: np.ndarray, block: int = 65536, dtype: type = np.float32) -> np.ndarray:
        """Project rows (N, D_in) -> unit rows (N, dim) of ``dtype``, in blocks of ``block`` rows."""
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"The projection (retrieve.projection) takes descriptors of shape (N, {self.input_dim}), "
                             f"got {x.shape}: were the features re-extracted with another backend?")
        out = np.empty((len(x), self.dim), dtype)
        for s in range(0, len(x), block):
            out[s:s + block] = l2_normalize(forward(self.layers, np.asarray(x[s:s + block], np.float32)))
        return out


def forward(layers: Layers, x: np.ndarray) -> np.ndarray:
    """The network's output before normalisation: (N, D_in) float32 -> (N, D_out) float32."""
    h = np.asarray(x, np.float32)
    for n, (w, b) in enumerate(layers):
        if n:
            h = np.maximum(h, 0.0)
        h = h @ w + b
    return h.astype(np.float32, copy=False)


def init_layers(input_dim: int, dim: int, hidden_dim: int, seed: int, x: Optional[np.ndarray] = None) -> Layers:
    """Initial layers: one (``hidden_dim`` 0) or two (input -> hidden -> dim).

    Glorot-uniform weights and zero biases drawn from ``seed``; with training descriptors ``x``
    (N, input_dim) the first layer starts as their PCA instead (``W`` = the principal directions,
    ``b = -mean @ W``; directions beyond the N - 1 the sample has stay random, scaled to unit
    norm), so that training starts from a projection that keeps the descriptors' main variance.
    """
    rng = np.random.default_rng([int(seed), 1])
    sizes = [input_dim, hidden_dim, dim] if hidden_dim > 0 else [input_dim, dim]
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        layers.append((rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32),
                       np.zeros(fan_out, np.float32)))
    if x is not None and len(x) >= 2:
        w = layers[0][0]
        w /= np.maximum(np.linalg.norm(w, axis=0, keepdims=True), 1e-12)
        mean, directions = principal_directions(x, w.shape[1])
        w[:, :directions.shape[1]] = directions
        layers[0] = (w, (-mean @ w).astype(np.float32))
    return layers


def principal_directions(x: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and the first ``min(k, N - 1, D)`` principal directions (D, k') of rows ``x``
    (N, D), float32, from an SVD of the centred rows (N is a training sample: bounded); each
    direction's largest component is positive."""
    x = np.asarray(x, np.float64)
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    keep = int(min(k, len(x) - 1, x.shape[1], int((s > s[0] * 1e-6).sum()) if len(s) and s[0] > 0 else 0))
    v = vt[:keep].T
    signs = np.sign(v[np.argmax(np.abs(v), axis=0), np.arange(keep)])
    return mean.astype(np.float32), (v * np.where(signs == 0, 1.0, signs)).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Losses (numpy references; the TensorFlow versions below compute the same)
# --------------------------------------------------------------------------------------------
def contrastive_loss(a: np.ndarray, b: np.ndarray, same: np.ndarray, margin: float) -> float:
    """Mean contrastive loss of pairs of unit rows ``a``, ``b`` (P, d); ``same`` (P,) 1/0."""
    d2 = ((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2).sum(axis=1)
    d = np.sqrt(d2)
    y = np.asarray(same, np.float64)
    return float(np.mean(y * d2 + (1.0 - y) * np.maximum(margin - d, 0.0) ** 2)) if len(d) else 0.0


def nt_xent_loss(z: np.ndarray, groups: np.ndarray, temperature: float) -> float:
    """NT-Xent of unit rows ``z`` (M, d) whose ``groups`` (M,) say which image each row shows:
    the mean over (row, other row of its group) of ``-log softmax`` of their similarity among
    the row's similarities to every other row."""
    z = np.asarray(z, np.float64)
    sim = z @ z.T / float(temperature)
    np.fill_diagonal(sim, -np.inf)
    log_prob = sim - np.logaddexp.reduce(sim, axis=1, keepdims=True)
    pos = (np.asarray(groups)[:, None] == np.asarray(groups)[None, :]) & ~np.eye(len(z), dtype=bool)
    return float(-log_prob[pos].mean()) if pos.any() else 0.0


# --------------------------------------------------------------------------------------------
# Training data (numpy)
# --------------------------------------------------------------------------------------------
def sample_images(n: int, max_images: int, rng: np.random.Generator) -> np.ndarray:
    """Indices (sorted) of at most ``max_images`` of ``n`` images, drawn at random."""
    if n <= max_images:
        return np.arange(n)
    return np.sort(rng.choice(n, max_images, replace=False))


def sample_by_landmark(labels: np.ndarray, max_images: int, per_landmark: int,
                       rng: np.random.Generator) -> np.ndarray:
    """Indices (sorted) of at most ``max_images`` images: landmarks in random order (those with
    several images first), up to ``per_landmark`` random images of each."""
    labels = np.asarray(labels)
    order = np.argsort(labels, kind="stable")
    uniq, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    perm = rng.permutation(len(uniq))
    perm = perm[np.argsort(counts[perm] < 2, kind="stable")]  # several images first, random within
    chosen: List[np.ndarray] = []
    total = 0
    for u in perm:
        members = order[starts[u]:starts[u] + counts[u]]
        take = min(per_landmark, len(members), max_images - total)
        if take <= 0:
            break
        chosen.append(np.sort(rng.choice(members, take, replace=False)) if take < len(members) else members)
        total += take
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def mine_pairs(x: np.ndarray, labels: np.ndarray, positives: int, negatives: int, max_pairs: int,
               rng: np.random.Generator, block: int = 1024) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training pairs for the contrastive loss.

    Args:
        x: (N, D) unit descriptors; labels: (N,) landmark ids.
        positives: random partners of the same landmark per image (fewer when it has fewer).
        negatives: nearest images (cosine of ``x``) of other landmarks per image.
        max_pairs: at most this many pairs (a random subset, kept in order).

    Returns:
        ``(first, second, same)``: (P,) int64 rows of ``x`` and (P,) float32 1 (same landmark) / 0.
    """
    labels = np.asarray(labels)
    n = len(labels)
    first: List[np.ndarray] = []
    second: List[np.ndarray] = []
    same: List[np.ndarray] = []
    if positives > 0:
        for i in range(n):
            mates = np.flatnonzero(labels == labels[i])
            mates = mates[mates != i]
            if len(mates):
                pick = np.sort(rng.choice(mates, min(positives, len(mates)), replace=False))
                first.append(np.full(len(pick), i))
                second.append(pick)
                same.append(np.ones(len(pick), np.float32))
    if negatives > 0 and n > 1:
        xf = np.asarray(x, np.float32)
        for s in range(0, n, block):
            sim = xf[s:s + block] @ xf.T
            sim[labels[s:s + block, None] == labels[None, :]] = -np.inf
            k = min(negatives, n - 1)
            top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
            for r in range(len(top)):
                cols = top[r][np.isfinite(sim[r, top[r]])]
                cols = cols[np.lexsort((cols, -sim[r, cols]))]
                first.append(np.full(len(cols), s + r))
                second.append(cols)
                same.append(np.zeros(len(cols), np.float32))
    if not first:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    a, b, y = (np.concatenate(first).astype(np.int64), np.concatenate(second).astype(np.int64),
               np.concatenate(same).astype(np.float32))
    if len(a) > max_pairs:
        keep = np.sort(rng.choice(len(a), max_pairs, replace=False))
        a, b, y = a[keep], b[keep], y[keep]
    return a, b, y


def augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random view of an RGB uint8 image (H, W, 3) -> (H', W', 3) uint8: a crop of 35-100 % of
    the area (aspect 3/4-4/3) resized so that its longer side is the image's, a horizontal flip
    (p = 0.5), a rotation within +-10 degrees (reflected border), brightness, contrast and
    saturation factors within 0.7-1.3. Every random number is drawn in a fixed order."""
    h, w = image.shape[:2]
    draws = rng.random(10 * 2 + 7)
    cw, ch = w, h
    for t in range(10):
        area = (0.35 + 0.65 * draws[2 * t]) * h * w
        ratio = math.exp(math.log(3 / 4) + draws[2 * t + 1] * math.log(16 / 9))
        tw, th = int(round(math.sqrt(area * ratio))), int(round(math.sqrt(area / ratio)))
        if 1 <= tw <= w and 1 <= th <= h:
            cw, ch = tw, th
            break
    x0 = int(draws[20] * (w - cw + 1))
    y0 = int(draws[21] * (h - ch + 1))
    out = image[min(y0, h - ch):min(y0, h - ch) + ch, min(x0, w - cw):min(x0, w - cw) + cw]
    scale = max(h, w) / max(ch, cw)
    size = (max(1, int(round(cw * scale))), max(1, int(round(ch * scale))))
    out = cv2.resize(np.ascontiguousarray(out), size, interpolation=cv2.INTER_LINEAR)
    if draws[22] < 0.5:
        out = out[:, ::-1]
    angle = -10.0 + 20.0 * draws[23]
    oh, ow = out.shape[:2]
    m = cv2.getRotationMatrix2D(((ow - 1) / 2.0, (oh - 1) / 2.0), angle, 1.0)
    out = cv2.warpAffine(np.ascontiguousarray(out), m, (ow, oh), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REFLECT_101)
    f = out.astype(np.float32) * np.float32(0.7 + 0.6 * draws[24])  # brightness
    mean = float(f.mean())
    f = (f - mean) * np.float32(0.7 + 0.6 * draws[25]) + mean  # contrast
    gray = (f @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    f = gray + (f - gray) * np.float32(0.7 + 0.6 * draws[26])  # saturation
    return np.clip(np.rint(f), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Training (TensorFlow, imported here only)
# --------------------------------------------------------------------------------------------
def import_tensorflow(method: str):
    """TensorFlow, or an ImportError naming the option and the fix."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError:
        raise ImportError(f"retrieve.projection.method={method} trains the projection with TensorFlow, which is not "
                          f"installed: {INSTALL}; or set retrieve.projection.method=none") from None
    return tf


@dataclass
class TrainResult:
    """Trained layers and the mean training loss of every epoch."""

    layers: Layers
    losses: List[float]


def _train(layers: Layers, epochs: int, learning_rate: float, seed: int, method: str,
           batches: Callable[[np.random.Generator], Iterator[Tuple[np.ndarray, ...]]],
           loss_fn: Callable) -> TrainResult:
    """Adam on ``loss_fn(tf, model, *batch)`` over ``epochs`` passes of ``batches(rng)``; the
    model is a Keras stack of Dense layers starting from ``layers``. Enables TensorFlow's op
    determinism for the rest of the process (deterministic kernels; on a CPU it costs little)."""
    tf = import_tensorflow(method)
    tf.keras.utils.set_random_seed(int(seed))
    tf.config.experimental.enable_op_determinism()
    keras = tf.keras
    inputs = keras.Input(shape=(layers[0][0].shape[0],), dtype="float32")
    h = inputs
    for n, (w, _) in enumerate(layers):
        last = n == len(layers) - 1
        h = keras.layers.Dense(w.shape[1], activation=None if last else "relu")(h)
    model = keras.Model(inputs, h)
    model.set_weights([a for layer in layers for a in layer])
    optimizer = keras.optimizers.Adam(learning_rate=float(learning_rate))

    @tf.function(reduce_retracing=True)
    def step(*batch):
        with tf.GradientTape() as tape:
            loss = loss_fn(tf, model, *batch)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    rng = np.random.default_rng([int(seed), 2])
    losses: List[float] = []
    for epoch in range(epochs):
        total, count = 0.0, 0
        for batch in batches(rng):
            total += float(step(*batch)) * len(batch[0])
            count += len(batch[0])
        losses.append(total / max(count, 1))
        if epoch in (0, epochs - 1) or (epoch + 1) % 10 == 0:
            logger.info("Projection (%s): epoch %d/%d, loss %.4f", method, epoch + 1, epochs, losses[-1])
    weights = [np.asarray(v, np.float32) for v in model.get_weights()]
    return TrainResult([(weights[i], weights[i + 1]) for i in range(0, len(weights), 2)], losses)


def _unit(tf, model, x):
    return tf.math.l2_normalize(model(x, training=True), axis=1, epsilon=1e-12)


def train_siamese(x: np.ndarray, first: np.ndarray, second: np.ndarray, same: np.ndarray,
                  p: "ProjectionConfig") -> TrainResult:
    """Train on pairs ``(x[first], x[second])`` (``same`` 1/0) with the contrastive loss.

    Args:
        x: (N, D) float32 descriptors; first, second: (P,) int64 rows; same: (P,) float32.
        p: ``retrieve.projection`` (dim, hidden_dim, epochs, batch_size, learning_rate, margin, seed).
    """
    if not len(first):
        raise ValueError("retrieve.projection.method=siamese: no training pairs (the train images need at least "
                         "two landmarks or two images of one); use more train images or method=simclr")
    x = np.ascontiguousarray(x, np.float32)
    margin = float(p.margin)

    def batches(rng):
        order = rng.permutation(len(first))
        for s in range(0, len(order), p.batch_size):
            b = order[s:s + p.batch_size]
            yield x[first[b]], x[second[b]], same[b]

    def loss(tf, model, a, b, y):
        d2 = tf.reduce_sum(tf.square(_unit(tf, model, a) - _unit(tf, model, b)), axis=1)
        d = tf.sqrt(d2 + 1e-12)
        return tf.reduce_mean(y * d2 + (1.0 - y) * tf.square(tf.nn.relu(margin - d)))

    layers = init_layers(x.shape[1], p.dim, p.hidden_dim, p.seed, x if p.init == "pca" else None)
    return _train(layers, p.epochs, p.learning_rate, p.seed, "siamese", batches, loss)


def train_simclr(views: np.ndarray, p: "ProjectionConfig") -> TrainResult:
    """Train on ``views`` (N, V, D) float32 (V descriptors of each of N images) with NT-Xent over
    batches of ``batch_size`` images."""
    if len(views) < 2:
        raise ValueError("retrieve.projection.method=simclr needs at least 2 images with descriptors to contrast")
    views = np.ascontiguousarray(views, np.float32)
    n, v, d = views.shape
    temperature = float(p.temperature)

    def batches(rng):
        order = rng.permutation(n)
        for s in range(0, n, p.batch_size):
            b = np.sort(order[s:s + p.batch_size])
            if len(b) < 2:
                continue
            yield views[b].reshape(-1, d), np.repeat(np.arange(len(b)), v)

    def loss(tf, model, z, groups):
        z = _unit(tf, model, z)
        m = tf.shape(z)[0]
        eye = tf.eye(m, dtype=tf.bool)
        sim = tf.matmul(z, z, transpose_b=True) / temperature
        sim = tf.where(eye, tf.constant(-1e9, sim.dtype), sim)
        log_prob = sim - tf.reduce_logsumexp(sim, axis=1, keepdims=True)
        pos = tf.logical_and(tf.equal(groups[:, None], groups[None, :]), tf.logical_not(eye))
        return -tf.reduce_mean(tf.boolean_mask(log_prob, pos))

    layers = init_layers(d, p.dim, p.hidden_dim, p.seed, views[:, 0] if p.init == "pca" else None)
    return _train(layers, p.epochs, p.learning_rate, p.seed, "simclr", batches, loss)


# --------------------------------------------------------------------------------------------
# Methods, settings, validation
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProjectionMethod:
    """What the package knows about a training method."""

    name: str  # the value of retrieve.projection.method
    needs_labels: bool  # trains on train.csv labels (then on the train split; else the database split)
    options: Tuple[str, ...]  # the retrieve.projection options it reads besides the common ones
    description: str


COMMON_OPTIONS = ("dim", "hidden_dim", "init", "epochs", "batch_size", "learning_rate", "seed", "max_images")

PROJECTION_METHODS: Dict[str, ProjectionMethod] = {
    "siamese": ProjectionMethod("siamese", True, ("margin", "max_pairs", "positives", "negatives"),
                                "contrastive loss on pairs of train images (same / other landmark in train.csv)"),
    "simclr": ProjectionMethod("simclr", False, ("temperature", "views"),
                               "NT-Xent on augmented views of an image described by the run's backend, no labels"),
}


def validate_projection(p: "ProjectionConfig") -> None:
    """Check ``retrieve.projection`` (the method is stored in lower case)."""
    where = "retrieve.projection"
    if p.method is not None:
        method = str(p.method).strip().lower()
        if method not in PROJECTION_METHODS:
            raise ValueError(f"{where}.method: expected none or one of {', '.join(PROJECTION_METHODS)}, "
                             f"got {p.method!r}")
        p.method = method
    minimum = {"dim": 1, "hidden_dim": 0, "epochs": 1, "batch_size": 2, "max_images": 2, "max_pairs": 1,
               "positives": 0, "negatives": 0, "views": 1}
    for name, low in minimum.items():
        if getattr(p, name) < low:
            raise ValueError(f"{where}.{name}: expected an integer >= {low}, got {getattr(p, name)}")
    if p.init not in ("pca", "random"):
        raise ValueError(f"{where}.init: expected pca or random, got {p.init!r}")
    for name in ("learning_rate", "margin", "temperature"):
        value = getattr(p, name)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{where}.{name}: expected a positive number, got {value}")


# --------------------------------------------------------------------------------------------
# I/O: train once, save with the train features, reuse (the retrieve step calls this)
# --------------------------------------------------------------------------------------------


