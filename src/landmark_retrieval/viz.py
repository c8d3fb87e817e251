"""Figures of images, keypoints and matches.

Every function takes arrays (RGB uint8 images (H, W, 3), (x, y) keypoints (N, 2), match index
pairs (K, 2), inlier masks (K,)) and returns a new :class:`matplotlib.figure.Figure`; nothing
draws on pyplot's current figure, so figures can be composed, shown in notebooks or saved::

    fig = plot_matches(image0, image1, kpts0, kpts1, matches, inlier_mask)
    save_figure(fig, "match.png")
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import ConnectionPatch

INLIER_COLOR = (0.1, 0.85, 0.2)
OUTLIER_COLOR = (0.95, 0.2, 0.15)


def _image_axes(fig: Figure, images: Sequence[np.ndarray], titles: Optional[Sequence[str]] = None):
    axes = fig.subplots(1, len(images), squeeze=False)[0]
    for i, (ax, img) in enumerate(zip(axes, images)):
        ax.imshow(img)
        ax.set_axis_off()
        if titles and i < len(titles) and titles[i]:
            ax.set_title(titles[i], fontsize=9)
    return axes


def plot_matches(image0: np.ndarray, image1: np.ndarray, kpts0: np.ndarray, kpts1: np.ndarray,
                 matches: np.ndarray, inlier_mask: Optional[np.ndarray] = None,
                 titles: Optional[Sequence[str]] = None, show_outliers: bool = True,
                 max_lines: int = 150, dpi: int = 100) -> Figure:
    """Two images side by side with lines between matched keypoints.

    Args:
        image0, image1: RGB uint8 (H, W, 3).
        kpts0, kpts1: (N0, 2), (N1, 2) float (x, y).
        matches: (K, 2) int indices into kpts0 / kpts1.
        inlier_mask: (K,) bool; inliers are drawn green and outliers red. None = all green.
        show_outliers: draw putative matches that are not inliers.
        max_lines: draw at most this many lines of each kind (evenly subsampled).

    Returns:
        The figure.
    """
    matches = np.asarray(matches, np.int64).reshape(-1, 2)
    mask = np.ones(len(matches), bool) if inlier_mask is None else np.asarray(inlier_mask, bool)
    h = max(image0.shape[0], image1.shape[0])
    w = image0.shape[1] + image1.shape[1]
    fig = Figure(figsize=(min(16, 10 * w / max(h, 1) / 2 + 1), 5), dpi=dpi)
    ax0, ax1 = _image_axes(fig, [image0, image1], titles)
    groups = [(~mask, OUTLIER_COLOR, 0.5)] if show_outliers and inlier_mask is not None else []
    groups.append((mask, INLIER_COLOR, 0.9))
    for sel, color, alpha in groups:
        idx = np.nonzero(sel)[0]
        if len(idx) > max_lines:
            idx = idx[np.linspace(0, len(idx) - 1, max_lines).astype(int)]
        for i0, i1 in matches[idx]:
            p0, p1 = kpts0[i0], kpts1[i1]
            fig.add_artist(ConnectionPatch(xyA=p0, xyB=p1, coordsA="data", coordsB="data", axesA=ax0, axesB=ax1,
                                           color=color, alpha=alpha, linewidth=0.8))
        if len(idx):
            ax0.scatter(kpts0[matches[idx, 0], 0], kpts0[matches[idx, 0], 1], s=4, c=[color])
            ax1.scatter(kpts1[matches[idx, 1], 0], kpts1[matches[idx, 1], 1], s=4, c=[color])
    fig.suptitle(f"{int(mask.sum())} inliers / {len(matches)} putative matches", fontsize=10)
    fig.tight_layout()
    return fig


def plot_keypoints(image: np.ndarray, keypoints: np.ndarray, scores: Optional[np.ndarray] = None,
                   title: Optional[str] = None, dpi: int = 100, score_label: str = "score") -> Figure:
    """An image with its keypoints, coloured by score (e.g. DELG attention) when given.

    ``score_label`` names the colour bar (e.g. ``"DELG attention"``).
    """
    fig = Figure(figsize=(6, 6 * image.shape[0] / max(image.shape[1], 1)), dpi=dpi)
    (ax,) = _image_axes(fig, [image], [title] if title else None)
    kp = np.asarray(keypoints, np.float32).reshape(-1, 2)
    if len(kp):
        sc = ax.scatter(kp[:, 0], kp[:, 1], s=6, c=scores if scores is not None else "yellow",
                        cmap="viridis" if scores is not None else None)
        if scores is not None:
            fig.colorbar(sc, ax=ax, fraction=0.04, pad=0.02, label=score_label)
    fig.tight_layout()
    return fig


def plot_retrieval(query: np.ndarray, neighbours: Sequence[np.ndarray], titles: Sequence[str],
                   query_title: str = "query", correct: Optional[Sequence[Optional[bool]]] = None,
                   dpi: int = 100) -> Figure:
    """A query image followed by its neighbours, each titled (e.g. label and scores).

    ``correct`` frames each neighbour green (True) or red (False); None leaves it unframed.
    """
    n = len(neighbours) + 1
    fig = Figure(figsize=(2.6 * n, 3.0), dpi=dpi)
    axes = _image_axes(fig, [query, *neighbours], [query_title, *titles])
    for i, ax in enumerate(axes[1:]):
        ok = None if correct is None or i >= len(correct) else correct[i]
        if ok is not None:
            ax.set_axis_on()
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_edgecolor(INLIER_COLOR if ok else OUTLIER_COLOR)
                spine.set_linewidth(4)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: Union[str, Path], dpi: Optional[float] = None,
                colors: Optional[int] = None) -> Path:
    """Save a figure (format from the suffix) and return the path.

    Args:
        dpi: overrides the figure's own resolution (lower it for smaller files).
        colors: PNG only: store with an adaptive palette of this many colours (<= 256), which
            makes pictures of photographs several times smaller (e.g. for documentation).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs = {"dpi": dpi} if dpi else {}
    if colors and path.suffix.lower() == ".png":
        import io

        from PIL import Image

        buf = io.BytesIO()
        fig.savefig(buf, format="png", bbox_inches="tight", **kwargs)
        buf.seek(0)
        with Image.open(buf) as im:
            rgb = im.convert("RGB")
        rgb.quantize(colors=max(2, min(256, int(colors))), method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
        return path
    fig.savefig(path, bbox_inches="tight", **kwargs)
    return path


def figure_to_array(fig: Figure, dpi: Optional[int] = None) -> np.ndarray:
    """Render a figure (Agg, off screen) to an RGBA uint8 array (H, W, 4).

    Useful to check a picture is not blank, or to embed it in another image.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    if dpi is not None:
        fig.set_dpi(dpi)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()
