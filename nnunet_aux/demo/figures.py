"""Pictures for the demo report: scale-coloured slices and projections, per-scale recall bars.

Figures are drawn with :class:`matplotlib.figure.Figure` directly (no pyplot), so no
display or global backend is involved.
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from ..errors import InputError

#: RGB colours of scales 1..3 (small, medium, large), then of false positives and misses.
SCALE_COLOURS = np.array([[1.0, 0.85, 0.1], [0.2, 0.8, 0.3], [0.2, 0.5, 1.0]])
FALSE_POSITIVE_COLOUR = np.array([1.0, 0.2, 0.8])
MISSED_COLOUR = np.array([0.45, 0.45, 0.45])


def _scale_colours(n_scales: int) -> np.ndarray:
    if n_scales <= len(SCALE_COLOURS):
        return SCALE_COLOURS[:n_scales]
    from matplotlib import colormaps

    return colormaps["viridis"](np.linspace(0.9, 0.1, n_scales))[:, :3]


def outcome_map(reference_scale: np.ndarray, prediction: np.ndarray, n_scales: int) -> np.ndarray:
    """Code each vessel voxel by the outcome of a prediction and its reference scale.

    Parameters
    ----------
    reference_scale : ndarray of int
        Reference vessel scale per voxel, ``1..S``, 0 outside vessels.
    prediction : ndarray of bool
        Predicted vessel mask of the same shape.
    n_scales : int
        Number of scales ``S``.

    Returns
    -------
    codes : ndarray of int
        ``1..S`` found vessel voxels (by reference scale), ``S + 1`` false positives,
        ``S + 2`` missed vessel voxels, 0 elsewhere.

    Examples
    --------
    >>> outcome_map(np.array([0, 1, 2, 3, 1]), np.array([1, 1, 0, 1, 0], bool), 3)
    array([4, 1, 5, 3, 5])
    """
    reference_scale = np.asarray(reference_scale)
    prediction = np.asarray(prediction, dtype=bool)
    if prediction.shape != reference_scale.shape:
        raise InputError(f"prediction shape {prediction.shape} differs from reference shape {reference_scale.shape}")
    if reference_scale.max(initial=0) > n_scales or reference_scale.min(initial=0) < 0:
        raise InputError(f"reference scales must lie in 0..{n_scales}")
    codes = np.where(prediction, reference_scale, 0).astype(int)
    codes[prediction & (reference_scale == 0)] = n_scales + 1
    codes[~prediction & (reference_scale > 0)] = n_scales + 2
    return codes


def project_codes(codes: np.ndarray, n_scales: int, axis: int = 0) -> np.ndarray:
    """Maximum-intensity-style projection of :func:`outcome_map` codes (or of scales alone).

    Along each ray, found vessels win over false positives, which win over misses; among
    found vessels the largest scale wins (it hides what lies behind it, as in a MIP).

    Parameters
    ----------
    codes : ndarray of int
        Output of :func:`outcome_map`.
    n_scales : int
        Number of scales ``S``.
    axis : int, optional
        Axis to project along.

    Returns
    -------
    projection : ndarray of int

    Examples
    --------
    >>> project_codes(np.array([[0, 5, 1], [4, 5, 0]]), 3, axis=1)
    array([1, 4])
    """
    codes = np.asarray(codes)
    found = np.where(codes <= n_scales, codes, 0).max(axis=axis)
    false_positive = (codes == n_scales + 1).any(axis=axis)
    missed = (codes == n_scales + 2).any(axis=axis)
    return np.where(found > 0, found, np.where(false_positive, n_scales + 1, np.where(missed, n_scales + 2, 0)))


def colour_codes(codes: np.ndarray, n_scales: int) -> np.ndarray:
    """RGBA image of :func:`outcome_map` codes; code 0 is transparent.

    Examples
    --------
    >>> colour_codes(np.array([[0, 1]]), 3).shape
    (1, 2, 4)
    """
    palette = np.zeros((n_scales + 3, 4))
    palette[1:n_scales + 1, :3] = _scale_colours(n_scales)
    palette[n_scales + 1, :3] = FALSE_POSITIVE_COLOUR
    palette[n_scales + 2, :3] = MISSED_COLOUR
    palette[1:, 3] = 1.0
    return palette[np.asarray(codes)]


def _grey(image: np.ndarray, low: float, high: float) -> np.ndarray:
    scaled = np.clip((image - low) / max(high - low, 1e-6), 0, 1)
    return np.repeat(scaled[..., None], 3, axis=-1)


def overview_figure(
    image: np.ndarray,
    reference_scale: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    scale_names: Sequence[str] = ("small", "medium", "large"),
    dpi: int = 80,
) -> None:
    """Save a grid: rows are an axial slice and a projection along z; columns are the image,
    the reference scale decomposition and each prediction.

    The slice is the one with most vessel voxels. Predictions are coloured by outcome
    (:func:`outcome_map`): found vessel voxels in the colour of their reference scale,
    false positives and misses in their own colours.

    Parameters
    ----------
    image : ndarray, shape (nz, ny, nx)
        Intensities.
    reference_scale : ndarray of int, shape (nz, ny, nx)
        Reference vessel scale per voxel (0 outside vessels).
    predictions : mapping of str to ndarray of bool
        Method title to predicted vessel mask.
    path : path-like
        PNG to write.
    spacing : sequence of 3 float, optional
        Voxel size ``(sz, sy, sx)``, for the aspect ratio.
    scale_names : sequence of str, optional
        Legend names of scales ``1..S``.
    dpi : int, optional
        Resolution of the PNG.
    """
    image = np.asarray(image, dtype=float)
    reference_scale = np.asarray(reference_scale).astype(int)
    if image.ndim != 3 or image.shape != reference_scale.shape:
        raise InputError(f"image and reference must be 3D of one shape, got {image.shape} and {reference_scale.shape}")
    n_scales = len(scale_names)
    z = int(np.argmax((reference_scale > 0).sum(axis=(1, 2))))
    low, high = np.percentile(image, [1, 99.8])
    aspect = float(spacing[1]) / float(spacing[2])
    columns = [("image", None), ("reference scales", reference_scale)]
    columns += [(title, outcome_map(reference_scale, mask, n_scales)) for title, mask in predictions.items()]

    figure = Figure(figsize=(2.6 * len(columns), 5.6))
    axes = figure.subplots(2, len(columns), squeeze=False)
    for col, (title, codes) in enumerate(columns):
        for row, (grey, overlay) in enumerate((
            (image[z], None if codes is None else codes[z]),
            (image.max(axis=0), None if codes is None else project_codes(codes, n_scales, axis=0)),
        )):
            ax = axes[row, col]
            ax.imshow(_grey(grey, low, high), aspect=aspect, interpolation="nearest")
            if overlay is not None:
                ax.imshow(colour_codes(overlay, n_scales), aspect=aspect, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=9)
        axes[0, 0].set_ylabel(f"slice z={z}", fontsize=9)
        axes[1, 0].set_ylabel("projection along z", fontsize=9)
    from matplotlib.patches import Patch

    legend = [Patch(color=c, label=n) for c, n in zip(_scale_colours(n_scales), scale_names)]
    legend += [Patch(color=FALSE_POSITIVE_COLOUR, label="false positive"), Patch(color=MISSED_COLOUR, label="missed")]
    figure.legend(handles=legend, loc="lower center", ncol=len(legend), fontsize=8, frameon=False)
    figure.subplots_adjust(left=0.04, right=0.99, top=0.94, bottom=0.07, wspace=0.04, hspace=0.04)
    figure.savefig(os.fspath(path), dpi=dpi)


def scale_recall_figure(
    recall: Mapping[str, Mapping[str, tuple[float | None, float | None]]],
    path: str | os.PathLike,
    *,
    dpi: int = 80,
) -> None:
    """Save grouped bars of per-scale recall, one group per scale and one bar per method.

    Parameters
    ----------
    recall : mapping
        Method title to ``{scale name: (mean, std)}``; None values draw no bar.
    path : path-like
        PNG to write.
    dpi : int, optional
        Resolution of the PNG.
    """
    methods = list(recall)
    if not methods:
        raise InputError("recall holds no method")
    scales = list(recall[methods[0]])
    width = 0.8 / len(methods)
    figure = Figure(figsize=(1.6 + 1.4 * len(scales), 3.2))
    ax = figure.subplots()
    x = np.arange(len(scales))
    for i, method in enumerate(methods):
        means = [recall[method][s][0] for s in scales]
        stds = [recall[method][s][1] for s in scales]
        heights = [np.nan if m is None else m for m in means]
        errors = [0.0 if s is None else s for s in stds]
        bars = ax.bar(x + (i - (len(methods) - 1) / 2) * width, heights, width, yerr=errors, capsize=3, label=method)
        ax.bar_label(bars, labels=["" if m is None else f"{m:.2f}" for m in means], fontsize=7, padding=2)
    ax.set_xticks(x, scales)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("recall (mean ± std over cases)")
    figure.legend(fontsize=7, loc="upper center", ncol=len(methods), frameon=False)
    figure.tight_layout(rect=(0, 0, 1, 0.9))
    figure.savefig(os.fspath(path), dpi=dpi)
