"""Charts drawn with matplotlib: loss curve, score histogram, ROC/PR curves, latent map.

matplotlib is used only through ``matplotlib.figure.Figure`` with the Agg
canvas: no pyplot, so no global figure state leaks between calls or threads.
Each function returns PNG bytes. Normal images are always blue
(:data:`NORMAL_COLOR`), anomalous ones red (:data:`ANOMALY_COLOR`) and
unlabelled ones grey (:data:`OTHER_COLOR`), in every chart and in the report.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = [
    "ANOMALY_COLOR",
    "NORMAL_COLOR",
    "OTHER_COLOR",
    "latent_map_png",
    "loss_curve_png",
    "roc_pr_png",
    "score_histogram_png",
]

_DPI = 100
#: Normal images, in every chart.
NORMAL_COLOR = "#2b7bba"
#: Anomalous images, in every chart.
ANOMALY_COLOR = "#d7301f"
#: Unlabelled images.
OTHER_COLOR = "#7f7f7f"
# Curves that are not one class (ROC, precision-recall): neither blue nor red.
_CURVE_COLOR = "#5e3c99"
#: Label names coloured as normal / anomalous in the latent map.
_NORMAL_NAMES = frozenset({"0", "normal", "good", "ok"})
_ANOMALY_NAMES = frozenset({"1", "anomaly", "anomalous"})
# Class colours for other labels: tab10 without its blue, red and grey.
_CLASS_PALETTE = [colormaps["tab10"](i) for i in (1, 2, 4, 5, 6, 8, 9)]


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _figure_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, facecolor="white")
    return buf.getvalue()


def _finite(values: Any) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    return arr[np.isfinite(arr)]


def loss_curve_png(
    train_loss: Sequence[float],
    val_loss: Sequence[float] | None = None,
    best_epoch: int | None = None,
    loss_name: str = "loss",
) -> bytes:
    """Training and validation loss per epoch as a PNG line plot.

    The y axis turns logarithmic when the loss falls by more than 20x, so the
    late epochs are not a flat line.

    Args:
        train_loss: Mean training loss for epochs 1, 2, ...
        val_loss: Validation loss per epoch (may be empty or None).
        best_epoch: 1-based epoch whose weights were kept; marked with a line.
        loss_name: Name of the loss for the y axis (``mse``, ``ssim``, ...).

    Returns:
        PNG bytes (640x360 pixels).
    """
    fig = _figure(6.4, 3.6)
    ax = fig.add_subplot()
    series = [("train", train_loss, NORMAL_COLOR), ("validation", val_loss or [], "#e6550d")]
    plotted: list[float] = []
    for name, values, color in series:
        y = np.asarray(values, dtype=np.float64)
        if y.size:
            x = np.arange(1, y.size + 1)
            ax.plot(
                x, y, marker="o" if y.size <= 40 else None, ms=3, lw=1.6, color=color, label=name
            )
            plotted.extend(_finite(y).tolist())
    if best_epoch is not None and plotted:
        ax.axvline(best_epoch, color="#555555", ls="--", lw=1, label=f"best epoch ({best_epoch})")
    if not plotted:
        ax.text(
            0.5,
            0.5,
            "no training history recorded",
            ha="center",
            va="center",
            transform=ax.transAxes,
            color="#666666",
        )
    else:
        pos = [v for v in plotted if v > 0]
        if len(pos) == len(plotted) and max(pos) / min(pos) > 20:
            ax.set_yscale("log")
        ax.legend(frameon=False)
        locator = ax.xaxis.get_major_locator()
        if isinstance(locator, MaxNLocator):  # the default AutoLocator is one
            locator.set_params(integer=True)
    ax.set_xlabel("epoch")
    ax.set_ylabel(loss_name)
    ax.set_title("Loss per epoch")
    ax.grid(alpha=0.3)
    return _figure_png(fig)


def _has_labels(labels: Sequence[Any] | None) -> bool:
    return labels is not None and any(v is not None for v in labels)


def score_histogram_png(
    scores: Any,
    labels: Sequence[int | None] | None = None,
    threshold: float | None = None,
    val_scores: Any | None = None,
    score_kind: str = "mse",
) -> bytes:
    """Histogram of anomaly scores with the threshold marked.

    With labels, normal (0) and anomalous (1) images get their own histograms
    (plus ``unlabeled`` for ``None``); without, the scored images are shown
    against the validation scores the threshold was fitted on. Histograms are
    drawn as counts of images (on a log axis when one group is over 20x another).

    Args:
        scores: One score per image (higher = more anomalous).
        labels: Optional 0/1/None per score.
        threshold: Decision threshold, drawn as a vertical line.
        val_scores: Validation scores (normal images) for the unlabeled view.
        score_kind: Name of the score for the x axis.

    Returns:
        PNG bytes (680x380 pixels).
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    groups: list[tuple[str, np.ndarray, str]] = []
    if _has_labels(labels):
        assert labels is not None
        if len(labels) != s.size:
            raise ValueError(f"got {len(labels)} labels for {s.size} scores")
        lab = np.array([-1 if v is None else int(v) for v in labels])
        groups = [
            ("normal", s[lab == 0], NORMAL_COLOR),
            ("anomalous", s[lab == 1], ANOMALY_COLOR),
            ("unlabeled", s[lab == -1], OTHER_COLOR),
        ]
    else:
        groups = [("scored images", s, OTHER_COLOR)]
        if val_scores is not None:
            groups.insert(
                0, ("validation (normal)", np.asarray(val_scores, float).ravel(), NORMAL_COLOR)
            )
    groups = [(n, _finite(v), c) for n, v, c in groups]
    groups = [(n, v, c) for n, v, c in groups if v.size]

    fig = _figure(6.8, 3.8)
    ax = fig.add_subplot()
    everything = np.concatenate([v for _, v, _ in groups]) if groups else np.array([])
    if everything.size:
        lo, hi = float(everything.min()), float(everything.max())
        if threshold is not None and np.isfinite(threshold):
            lo, hi = min(lo, threshold), max(hi, threshold)
        if hi <= lo:
            hi = lo + 1e-6 if lo == 0 else lo + abs(lo) * 1e-3
        bins = np.linspace(lo, hi, 41)
        for name, v, color in groups:
            ax.hist(
                v,
                bins=bins.tolist(),
                alpha=0.55,
                color=color,
                edgecolor=color,
                label=f"{name} (n={v.size})",
            )
        sizes = [v.size for _, v, _ in groups]
        if max(sizes) > 20 * min(sizes):
            # Counts on a log axis, so a group 20x smaller than another still shows.
            ax.set_yscale("log")
            ax.set_ylabel("images (log scale)")
        else:
            ax.set_ylabel("images")
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        ax.text(0.5, 0.5, "no scores", ha="center", va="center", transform=ax.transAxes)
        ax.set_ylabel("images")
    if threshold is not None and np.isfinite(threshold):
        ax.axvline(threshold, color="black", ls="--", lw=1.5, label=f"threshold {threshold:.4g}")
    if everything.size or threshold is not None:
        ax.legend(frameon=False)
    ax.set_xlabel(f"anomaly score ({score_kind})")
    ax.set_title("Score distribution")
    ax.grid(alpha=0.3)
    return _figure_png(fig)


def roc_pr_png(scores: Any, labels: Sequence[int | None]) -> bytes:
    """ROC and precision-recall curves side by side, AUC and AP in the legends.

    Images whose label is ``None`` are left out.

    Args:
        scores: One score per image (higher = more anomalous).
        labels: 0 (normal), 1 (anomalous) or None per score.

    Returns:
        PNG bytes (1100x440 pixels).

    Raises:
        ValueError: Fewer than one normal and one anomalous labelled image.
    """
    from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

    s = np.asarray(scores, dtype=np.float64).ravel()
    if len(labels) != s.size:
        raise ValueError(f"got {len(labels)} labels for {s.size} scores")
    keep = np.array([v is not None for v in labels], dtype=bool)
    y = np.array([0 if v is None else int(v) for v in labels])[keep]
    s = s[keep]
    if not (np.any(y == 0) and np.any(y == 1)):
        raise ValueError("ROC and precision-recall curves need both normal and anomalous labels")
    fpr, tpr, _ = roc_curve(y, s)
    precision, recall, _ = precision_recall_curve(y, s)
    roc_auc = auc(fpr, tpr)
    ap = average_precision_score(y, s)

    fig = _figure(11.0, 4.4)
    ax_roc, ax_pr = fig.subplots(1, 2)
    ax_roc.plot(fpr, tpr, color=_CURVE_COLOR, lw=2, label=f"ROC AUC = {roc_auc:.3f}")
    ax_roc.plot([0, 1], [0, 1], color="#999999", ls=":", lw=1, label="chance")
    ax_roc.set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        title="ROC curve",
        xlim=(0, 1),
        ylim=(0, 1.02),
    )
    prevalence = float(y.mean())
    ax_pr.step(recall, precision, where="post", color=_CURVE_COLOR, lw=2, label=f"AP = {ap:.3f}")
    ax_pr.axhline(prevalence, color="#999999", ls=":", lw=1, label=f"chance ({prevalence:.2f})")
    ax_pr.set(
        xlabel="recall",
        ylabel="precision",
        title="Precision-recall curve",
        xlim=(0, 1),
        ylim=(0, 1.02),
    )
    for ax in (ax_roc, ax_pr):
        ax.legend(loc="lower right" if ax is ax_roc else "lower left", frameon=False)
        ax.grid(alpha=0.3)
        ax.set_aspect("equal")
    return _figure_png(fig)


def latent_map_png(
    codes: Any,
    labels: Sequence[Any] | None = None,
    title: str = "Latent space",
) -> bytes:
    """Scatter plot of latent codes in 2-D, coloured by label.

    Two-dimensional codes are plotted as they are; wider ones are projected
    onto their first two principal components (explained variance in the axis
    labels); one-dimensional codes are plotted against their index.

    Args:
        codes: ``(N, k)`` latent codes.
        labels: Optional label per code (class name, 0/1, or None for unlabeled);
            up to 20 distinct labels get a legend.
        title: Plot title.

    Returns:
        PNG bytes (740x560 pixels).

    Raises:
        ValueError: Codes that are not 2-D, or a label count that does not match.
    """
    z = np.asarray(codes, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"latent codes must be (N, k), got shape {z.shape}")
    if labels is not None and len(labels) != z.shape[0]:
        raise ValueError(f"got {len(labels)} labels for {z.shape[0]} codes")
    z = np.nan_to_num(z)
    xlabel, ylabel = "z[0]", "z[1]"
    if z.shape[1] == 1:
        xy = np.column_stack([np.arange(z.shape[0]), z[:, 0]])
        xlabel, ylabel = "image index", "z[0]"
    elif z.shape[1] == 2:
        xy = z
    elif z.shape[0] >= 2 and float(np.ptp(z, axis=0).max()) > 0:
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2, svd_solver="full").fit(z)
        xy = pca.transform(z)
        v1, v2 = pca.explained_variance_ratio_ * 100
        xlabel, ylabel = f"PC1 ({v1:.0f}% variance)", f"PC2 ({v2:.0f}% variance)"
    else:
        xy = np.zeros((z.shape[0], 2))
        xlabel, ylabel = "PC1", "PC2"

    fig = _figure(7.4, 5.6)
    ax = fig.add_subplot()
    if labels is None or all(v is None for v in labels):
        ax.scatter(xy[:, 0], xy[:, 1], s=10, alpha=0.7, color=OTHER_COLOR, linewidths=0)
    else:
        names = ["unlabeled" if v is None else str(v) for v in labels]
        order = sorted(set(names), key=_natural_key)
        arr = np.array(names)
        others = iter(_CLASS_PALETTE * (1 + len(order) // len(_CLASS_PALETTE)))
        for name in order:
            m = arr == name
            color = _label_color(name, others)
            ax.scatter(
                xy[m, 0],
                xy[m, 1],
                s=10,
                alpha=0.75,
                color=color,
                linewidths=0,
                label=f"{name} ({int(m.sum())})",
            )
        if len(order) <= 20:
            ax.legend(
                frameon=False,
                markerscale=2,
                fontsize="small",
                loc="upper left",
                bbox_to_anchor=(1.01, 1.0),
                title="label",
            )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _figure_png(fig)


def _label_color(name: str, others: Any) -> Any:
    """Normal blue, anomalous red, unlabelled grey (as in every chart); other classes in turn."""
    key = name.lower()
    if key == "unlabeled":
        return OTHER_COLOR
    if key in _NORMAL_NAMES:
        return NORMAL_COLOR
    if key in _ANOMALY_NAMES:
        return ANOMALY_COLOR
    return next(others)


def _natural_key(name: str) -> tuple[int, float | str]:
    """Sort numeric labels numerically, then text labels, ``unlabeled`` last."""
    if name == "unlabeled":
        return (2, "")
    try:
        return (0, float(name))
    except ValueError:
        return (1, name)
