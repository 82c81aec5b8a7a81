"""Figures of the inspection commands (matplotlib, drawn off-screen, never through pyplot), the
figures of a study report, and sample images to try the inspection commands on.

All heat maps of one figure share one colour map (``jet`` by default, the convention of
Grad-CAM figures including the NL-SAM paper's Figure 5) and one colour bar. Inputs are shown
as the network saw them (after resizing), upsampled with nearest-neighbour so that a 32 x 32
CIFAR image stays sharp; heat maps are overlaid at 50 % opacity. Figures are saved with a tight
bounding box, so no title or label is clipped.

Study reports (:func:`nlsam.analysis.report.write_report`): :func:`save_accuracy_vs_gflops`,
:func:`save_accuracy_by_stage_k` and :func:`save_accuracy_curves` write the PNG figures of the
paper's Figures 1 and 3 and of the accuracy per epoch, drawn with pyplot on matplotlib's
off-screen Agg backend.

Sample images: :func:`save_test_images` writes the first test image of every class of a dataset
(``builtin``, ``cifar10``, ``cifar100``, or an ImageFolder directory or ``.zip`` such as a JPEG
copy of CIFAR-10); ``python -m nlsam.cli.sample_images DATA OUT_DIR`` runs it.
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from .._io import atomic_write_bytes
from .._optional import require
from ..data import sample_images

__all__ = [
    "check_cmap",
    "png_bytes",
    "save_accuracy_by_stage_k",
    "save_accuracy_curves",
    "save_accuracy_vs_gflops",
    "save_test_images",
    "write_files",
]

_DEFAULT_CMAP = "jet"
_PANEL_INCHES = 2.2
_OVERLAY_ALPHA = 0.5
_DPI = 110
_FONT_SIZE = 8.5
_MAX_COLUMNS = 9  # attention maps: blocks per row before wrapping


def check_cmap(name: str) -> str:
    """Raise a one-line ValueError for a colour map matplotlib does not know."""
    matplotlib = require("matplotlib", "drawing figures")
    if name not in matplotlib.colormaps:
        raise ValueError(f"unknown colour map {name!r}; e.g. jet, turbo, viridis, inferno, magma")
    return name


def _display_image(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """A normalized 1 x 3 x H x W (or 3 x H x W) input -> H x W x 3 floats in [0, 1]."""
    x = x.detach().float().cpu().reshape(-1, *x.shape[-3:])[0]
    m = torch.tensor(list(mean), dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(list(std), dtype=torch.float32).view(3, 1, 1)
    return (x * s + m).clamp(0, 1).permute(1, 2, 0).numpy()


def _figure(width: float, height: float):
    require("matplotlib", "drawing figures")
    from matplotlib.figure import Figure
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    layout = ConstrainedLayoutEngine(w_pad=0.04, h_pad=0.04, wspace=0.06, hspace=0.03)
    return Figure(figsize=(width, height), dpi=_DPI, layout=layout)


def png_bytes(fig) -> bytes:
    """The figure as PNG bytes (tight box: nothing clipped)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight", pad_inches=0.08, facecolor="white")
    return buffer.getvalue()


def _clean(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _wrap(text: str, width: int = 36) -> str:
    """Wrap each line at spaces (never inside a word)."""
    return "\n".join(textwrap.fill(line, width, break_long_words=False) for line in text.split("\n"))


def _short_name(name: str, width: int = 18) -> str:
    """A class or file name cut to ``width`` characters (with an ellipsis)."""
    return name if len(name) <= width else name[: width - 1] + "\u2026"


def _colorbar(fig, axes, cmap: str, vmin: float, vmax: float, label: str, rows: int = 1) -> None:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    bar = fig.colorbar(
        ScalarMappable(norm=Normalize(vmin, vmax), cmap=cmap),
        ax=axes,
        shrink=min(1.0, 3.0 / rows),
        aspect=20 * min(rows, 3) / 2,
        pad=0.02,
    )
    bar.set_label(label, fontsize=_FONT_SIZE)
    bar.ax.tick_params(labelsize=_FONT_SIZE - 1)


def _overlay(ax, image: np.ndarray, heat: np.ndarray, cmap: str, vmin: float, vmax: float, smooth: bool) -> None:
    h, w = image.shape[:2]
    ax.imshow(image, interpolation="nearest")
    ax.imshow(
        heat,
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        alpha=_OVERLAY_ALPHA,
        interpolation="bilinear" if smooth else "nearest",
        interpolation_stage="data",
        extent=(-0.5, w - 0.5, h - 0.5, -0.5),
    )
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    _clean(ax)


def _render_cam_figure(
    rows: List[Dict],
    _column_labels: Sequence[str],
    cmap: str = _DEFAULT_CMAP,
):
    """Grad-CAM figure: one row per image, the input then one overlay per network.

    ``rows``: ``[{"title": str, "image": HxWx3, "panels": [{"image": HxWx3, "cam": HxW in
    [0, 1], "text": str}, ...]}, ...]``, one panel per entry of ``_column_labels``.
    """
    ncols = 1 + len(_column_labels)
    fig = _figure(_PANEL_INCHES * ncols + 0.9, (_PANEL_INCHES + 0.45) * len(rows) + 0.3)
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    for r, row in enumerate(rows):
        ax = axes[r][0]
        ax.imshow(row["image"], interpolation="nearest")
        _clean(ax)
        ax.set_title(("input\n" if r == 0 else "") + _short_name(row["title"], 30), fontsize=_FONT_SIZE)
        for c, (label, panel) in enumerate(zip(_column_labels, row["panels"]), start=1):
            ax = axes[r][c]
            _overlay(ax, panel["image"], panel["cam"], cmap, 0.0, 1.0, smooth=True)
            text = panel["text"] if r else f"{label}\n{panel['text']}"
            ax.set_title(_wrap(text), fontsize=_FONT_SIZE)
    _colorbar(fig, list(axes.ravel()), cmap, 0.0, 1.0, "Grad-CAM (scaled to [0, 1] per image)", len(rows))
    return fig


def _render_attention_figure(
    image: np.ndarray,
    stages: List[Tuple[str, List[Tuple[str, np.ndarray]]]],
    title: str,
    cmap: str = _DEFAULT_CMAP,
    vrange: Optional[Tuple[float, float]] = None,
):
    """NL-SAM maps: one row per stage (wrapped after ``_MAX_COLUMNS`` blocks), the input first.

    ``stages``: ``[("stage 2 (16x16)", [("block 1", HxW map), ...]), ...]``. The colour range is
    ``vrange`` or the smallest and largest gate value in the figure; the colour bar shows it.
    """
    maps = [m for _, blocks in stages for _, m in blocks]
    if vrange is None:
        lo, hi = float(min(m.min() for m in maps)), float(max(m.max() for m in maps))
        if hi - lo < 1e-3:
            lo, hi = lo - 5e-4, hi + 5e-4
    else:
        lo, hi = vrange
    layout = []  # (stage label, first row of the stage?, blocks of this row)
    for label, blocks in stages:
        for start in range(0, len(blocks), _MAX_COLUMNS):
            layout.append((label, start == 0, blocks[start : start + _MAX_COLUMNS]))
    ncols = 1 + max(len(blocks) for _, _, blocks in layout)
    fig = _figure(_PANEL_INCHES * 0.8 * ncols + 1.0, (_PANEL_INCHES * 0.8 + 0.3) * len(layout) + 0.5)
    axes = fig.subplots(len(layout), ncols, squeeze=False)
    for r, (label, first, blocks) in enumerate(layout):
        ax = axes[r][0]
        _clean(ax)
        if first:
            ax.imshow(image, interpolation="nearest")
            if r == 0:
                ax.set_title("input", fontsize=_FONT_SIZE)
            ax.set_ylabel(_wrap(label, 18), fontsize=_FONT_SIZE)
        else:
            ax.set_visible(False)
        for c in range(1, ncols):
            ax = axes[r][c]
            if c > len(blocks):
                ax.set_visible(False)
                continue
            name, heat = blocks[c - 1]
            _overlay(ax, image, heat, cmap, lo, hi, smooth=False)
            ax.set_title(name, fontsize=_FONT_SIZE)
    fig.suptitle(_wrap(title, 90), fontsize=_FONT_SIZE + 1)
    visible = [ax for ax in axes.ravel() if ax.get_visible()]
    _colorbar(fig, visible, cmap, lo, hi, "NL-SAM attention (gate value)", len(layout))
    return fig


def write_files(files: Dict[Path, bytes], quiet: bool = False) -> None:
    """Write every file atomically (:func:`nlsam._io.atomic_write_bytes`), printing each path
    unless ``quiet``."""
    for path, data in files.items():
        atomic_write_bytes(path, data)
        if not quiet:
            print(path)


# ------------------------------------------------------------------------------------------
# study reports
# ------------------------------------------------------------------------------------------


def _save_report_figure(fig, path: Path) -> None:
    """Write one of the study report's figures to ``path`` (tight layout, 120 dpi) and close it."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)


def _pyplot():
    """matplotlib's pyplot, on the off-screen Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_accuracy_vs_gflops(variants: Sequence[Tuple[str, float, float, int, int]], path: Path) -> None:
    """Write the accuracy of study variants against their GFLOPs (the NL-SAM paper's Figure 1)
    as a PNG to ``path``.

    ``variants``: ``(label, mean, std, params, flops)`` of each variant (accuracy in %, over
    seeds; at least one variant). Each is a labelled marker with ``std`` as its error bar, the
    marker's area growing with ``params``.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    largest = max(params for _, _, _, params, _ in variants)
    for label, mean, std, params, flops in variants:
        ax.errorbar(flops / 1e9, mean, yerr=std, fmt="none", ecolor="0.5", capsize=3, zorder=1)
        ax.scatter(flops / 1e9, mean, s=60 + 600 * params / largest, alpha=0.6, zorder=2)
        ax.annotate(label, (flops / 1e9, mean), textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.margins(x=0.25, y=0.15)
    ax.set_xlabel("GFLOPs")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title("Accuracy against cost (marker area ~ parameters)")
    ax.grid(alpha=0.3)
    _save_report_figure(fig, path)


def save_accuracy_by_stage_k(
    accuracies: Mapping[Tuple[str, int], Tuple[float, float]],
    stages: Sequence[str],
    kernels: Sequence[int],
    spread: Tuple[float, float],
    baseline: Optional[float],
    path: Path,
) -> None:
    """Write the accuracy of NL-SAM by insertion stages and pooling kernel k (the NL-SAM
    paper's Figure 3) as a PNG to ``path``.

    One group of bars per entry of ``stages`` (as the report writes them: ``[2,3]``), in it one
    bar per kernel of ``kernels``: ``accuracies[stage, k]`` is its ``(mean, std)`` in %, the
    std an error bar; a pair it lacks has no bar. ``baseline``: the baseline's mean accuracy, a
    dashed line (None: none). The accuracy axis spans ``spread`` (the lowest mean - std and
    the highest mean + std of the variants) and one point more on either side.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    width = 0.8 / max(len(kernels), 1)
    for i, k in enumerate(kernels):
        xs, ys, es = [], [], []
        for j, stage in enumerate(stages):
            if (stage, k) in accuracies:
                mean, std = accuracies[stage, k]
                xs.append(j + i * width)
                ys.append(mean)
                es.append(std)
        ax.bar(xs, ys, width, yerr=es, capsize=3, label=f"k = {k}")
    if baseline is not None:
        ax.axhline(baseline, color="k", linestyle="--", linewidth=1, label="baseline")
    ax.set_xticks([j + width * (len(kernels) - 1) / 2 for j in range(len(stages))])
    ax.set_xticklabels([f"stages {s}" for s in stages])
    ax.set_ylim(spread[0] - 1.0, spread[1] + 1.0)
    ax.set_ylabel("test top-1 (%)")
    ax.set_title("NL-SAM by insertion stage and pooling kernel k")
    ax.legend(fontsize=8)
    _save_report_figure(fig, path)


def save_accuracy_curves(curves: Sequence[Tuple[str, Sequence[float]]], path: Path) -> None:
    """Write the test accuracy per epoch of study variants as a PNG to ``path``.

    ``curves``: ``(label, accuracies)`` of each variant, ``accuracies[i]`` its test top-1 (%)
    after epoch ``i + 1``, the mean over its seeds. Each is a line with a marker at every epoch
    (so that a run of one epoch shows as a point); the epoch axis has whole epochs only.
    """
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, mean in curves:
        length = len(mean)
        ax.plot(range(1, length + 1), mean, marker="o", markersize=4 if length > 1 else 7, label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlabel("epoch")
    ax.set_ylabel("test top-1 (%), mean over seeds")
    ax.set_title("Test accuracy during training")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save_report_figure(fig, path)


# ------------------------------------------------------------------------------------------
# sample images
# ------------------------------------------------------------------------------------------


def save_test_images(data: str, out: Path, per_class: int = 1, data_dir: Optional[str] = None) -> List[Path]:
    """Write the first ``per_class`` test images of every class as ``OUT/NN_CLASS.png`` (or the
    ImageFolder file's own extension); returns the paths.

    ``data``: ``builtin``, ``cifar10`` / ``cifar100`` (the official python files under
    ``data_dir``) or the path of an ImageFolder directory or ``.zip`` (its ``test/`` or ``val/``
    images are copied byte for byte), as :func:`nlsam.data.sample_images` gives them.
    """
    files = {Path(out) / name: content for name, content in sample_images(data, per_class, data_dir).items()}
    write_files(files)
    return list(files)
