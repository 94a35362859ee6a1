"""One self-contained HTML report about a model and the images it scored.

:func:`render_html` turns a :class:`ReportData` (plain numpy arrays, lists
and the model file's metadata dict) into a single page: inline CSS, no
JavaScript, every picture a ``data:image/png;base64`` URI, so the file opens
offline in any browser and can be mailed around. :func:`write_report` writes
it atomically and, on request, the same plots as PNG files.

Sections (element ids): ``model``, ``reconstructions``, ``scores``,
``extremes`` and ``latent``. Missing data never fails the report; the section
says what is not available and why.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aetool.errors import OutputError
from aetool.report import plots

__all__ = ["ExtremeItem", "ReportData", "render_html", "render_figures", "write_report"]

#: Pixel size (longer side) that small images are enlarged to in the report.
THUMB_SIZE = 128
#: Skipped files listed in the model section before "... and N more".
MAX_SKIPPED_SHOWN = 10


@dataclass
class ExtremeItem:
    """One image among the most anomalous or most normal-looking.

    Attributes:
        path: Where the image came from (shown, HTML-escaped).
        score: Its anomaly score.
        image: ``(C, H, W)`` floats in ``[0, 1]``, as the model saw it.
        error_map: ``(H, W)`` per-pixel error for the heatmap.
        label: 0 normal, 1 anomalous, None unknown.
    """

    path: str
    score: float
    image: np.ndarray
    error_map: np.ndarray
    label: int | None = None


@dataclass
class ReportData:
    """Everything a report shows; every field is optional.

    Attributes:
        metadata: The model file's metadata dict (``format``, ``arch``,
            ``arch_args``, ``preprocessing``, ``training``, ``validation``);
            missing keys are tolerated.
        model_path: The model file, for the summary.
        inputs: ``(N, C, H, W)`` sample inputs for the reconstruction grid.
        recons: ``(N, C, H, W)`` their reconstructions.
        noisy: ``(N, C, H, W)`` noisy inputs of a denoising model, else None.
        scores: One anomaly score per scored image.
        labels: 0/1/None per score (None: unknown), or None when unlabeled.
        paths: Path per score.
        threshold: Decision threshold; images scoring above it are flagged.
        threshold_rule: How the threshold was chosen (e.g. ``"p99 of validation"``).
        score_kind: ``mse``, ``ssim`` or ``max-local``.
        val_scores: Validation scores; default ``metadata["validation"]["scores"][score_kind]``.
        top_anomalous: Highest-scoring images, most anomalous first.
        top_normal: Lowest-scoring images, most normal first.
        latent_codes: ``(N, k)`` latent codes, or None when the model has no vector latent.
        latent_labels: Label per latent code (class name or 0/1/None).
        metrics: Optional ``roc_auc``, ``average_precision``, ``f1``, ``precision``,
            ``recall`` and ``confusion`` (``{"tn", "fp", "fn", "tp"}``).
        title: Page title.
        created: Timestamp text shown under the title, if any.
    """

    metadata: dict[str, Any] = field(default_factory=dict)
    model_path: str | None = None
    inputs: np.ndarray | None = None
    recons: np.ndarray | None = None
    noisy: np.ndarray | None = None
    scores: np.ndarray | None = None
    labels: list[int | None] | None = None
    paths: list[str] = field(default_factory=list)
    threshold: float | None = None
    threshold_rule: str = ""
    score_kind: str = "mse"
    val_scores: np.ndarray | None = None
    top_anomalous: list[ExtremeItem] = field(default_factory=list)
    top_normal: list[ExtremeItem] = field(default_factory=list)
    latent_codes: np.ndarray | None = None
    latent_labels: list[Any] | None = None
    metrics: dict[str, Any] | None = None
    title: str = "aetool report"
    created: str | None = None

    def validation_scores(self) -> np.ndarray | None:
        """The validation scores given, else those recorded in the model metadata."""
        if self.val_scores is not None:
            return np.asarray(self.val_scores, dtype=np.float64)
        recorded = _get(self.metadata, "validation", "scores", self.score_kind)
        if isinstance(recorded, list) and recorded:
            return np.asarray(recorded, dtype=np.float64)
        return None

    def has_labels(self) -> bool:
        """Whether at least one scored image has a known label."""
        return self.labels is not None and any(v is not None for v in self.labels)

    def has_both_classes(self) -> bool:
        """Whether the labels include a normal and an anomalous image (ROC needs both)."""
        known = {int(v) for v in self.labels or [] if v is not None}
        return known >= {0, 1}


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, Mapping) or k not in d:
            return None
        d = d[k]
    return d


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    """Human text for a metadata value (HTML-escaped)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return _esc(f"{value:.4g}") if math.isfinite(value) else _esc(value)
    if isinstance(value, Mapping):
        return ", ".join(f"{_esc(k)}={_fmt(v)}" for k, v in value.items()) or "—"
    if isinstance(value, (list, tuple)):
        return _esc(", ".join(str(v) for v in value)) or "—"
    return _esc(value)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _img(png: bytes, alt: str, css: str = "") -> str:
    cls = f' class="{css}"' if css else ""
    return f'<img{cls} src="{_data_uri(png)}" alt="{_esc(alt)}">'


def _table(rows: Sequence[tuple[str, str]], css: str = "kv") -> str:
    """Two-column table; values must already be HTML-safe."""
    body = "".join(f"<tr><th>{_esc(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="{css}">{body}</table>'


def _na(reason: str) -> str:
    return f'<p class="na">Not available: {_esc(reason)}</p>'


def _extreme_images(item: ExtremeItem, vmax: float | None) -> tuple[bytes, bytes]:
    image = plots.upscale(plots.to_image(item.image), THUMB_SIZE)
    heat = plots.upscale(plots.heatmap_overlay(item.image, item.error_map, vmax), THUMB_SIZE)
    return plots.png_bytes(image), plots.png_bytes(heat)


def _shared_vmax(items: Sequence[ExtremeItem]) -> float | None:
    """One colour scale for all heatmaps so colours compare across images."""
    tops = [float(np.nanmax(np.asarray(it.error_map))) for it in items if np.size(it.error_map)]
    tops = [t for t in tops if math.isfinite(t) and t > 0]
    return max(tops) if tops else None


def render_figures(data: ReportData) -> dict[str, bytes]:
    """Render every plot the data allows, as PNG bytes keyed by file name.

    Keys (present only when the data allows): ``loss_curve.png``,
    ``reconstructions.png``, ``score_histogram.png``, ``roc_pr.png``,
    ``latent_map.png``, ``top_anomalous.png``, ``top_normal.png``.

    Raises:
        ValueError: ``labels`` and ``scores`` differ in length.
    """
    if data.scores is not None and data.labels is not None:
        if len(data.labels) != np.size(data.scores):
            raise ValueError(f"got {len(data.labels)} labels for {np.size(data.scores)} scores")
    figs: dict[str, bytes] = {}
    history = _get(data.metadata, "training", "history") or {}
    train_loss = history.get("train_loss") or [] if isinstance(history, Mapping) else []
    val_loss = history.get("val_loss") or [] if isinstance(history, Mapping) else []
    if train_loss or val_loss:
        best = _get(data.metadata, "training", "best_epoch")
        loss_name = _get(data.metadata, "training", "loss") or "loss"
        figs["loss_curve.png"] = plots.loss_curve_png(
            train_loss, val_loss, best if isinstance(best, int) else None, str(loss_name)
        )
    if data.inputs is not None and data.recons is not None and len(data.inputs):
        grid = plots.reconstruction_grid(data.inputs, data.recons, data.noisy)
        figs["reconstructions.png"] = plots.png_bytes(grid)
    if data.scores is not None and np.size(data.scores):
        figs["score_histogram.png"] = plots.score_histogram_png(
            data.scores,
            data.labels if data.has_labels() else None,
            data.threshold,
            data.validation_scores(),
            data.score_kind,
        )
        if data.has_both_classes():
            assert data.labels is not None
            figs["roc_pr.png"] = plots.roc_pr_png(data.scores, data.labels)
    if data.latent_codes is not None and np.size(data.latent_codes):
        figs["latent_map.png"] = plots.latent_map_png(data.latent_codes, data.latent_labels)
    vmax = _shared_vmax([*data.top_anomalous, *data.top_normal])
    for name, items in (("top_anomalous", data.top_anomalous), ("top_normal", data.top_normal)):
        if items:
            images = np.stack([np.asarray(it.image, dtype=np.float32) for it in items])
            heat = [
                np.asarray(plots.heatmap_overlay(it.image, it.error_map, vmax), np.float32) / 255
                for it in items
            ]
            grid = plots.image_grid(
                [images, np.stack(heat).transpose(0, 3, 1, 2)], ["image", "error"]
            )
            figs[f"{name}.png"] = plots.png_bytes(grid)
    return figs


_CSS = """
:root { --fg:#1d2125; --muted:#5f6b76; --line:#dfe3e8; --bg:#f5f7f9; --card:#fff;
        --accent:#2b6cb0; --bad:#c0392b; --ok:#2f855a; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
       font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif; }
header { background:#1f2d3d; color:#fff; padding:20px 32px 14px; }
header h1 { margin:0 0 4px; font-size:24px; font-weight:600; }
header .sub { color:#c4cfdb; font-size:13px; word-break:break-all; }
nav { margin-top:12px; }
nav a { color:#e2ebf5; text-decoration:none; margin-right:18px; font-size:14px; }
nav a:hover { text-decoration:underline; }
main { max-width:1180px; margin:0 auto; padding:16px 24px 48px; }
section { background:var(--card); border:1px solid var(--line); border-radius:8px;
          padding:18px 22px; margin:18px 0; }
h2 { margin:0 0 12px; font-size:19px; font-weight:600; border-bottom:1px solid var(--line);
     padding-bottom:6px; }
h3 { margin:18px 0 8px; font-size:15px; font-weight:600; color:#334; }
table { border-collapse:collapse; font-size:14px; }
table.kv th { text-align:left; font-weight:500; color:var(--muted); padding:3px 18px 3px 0;
              vertical-align:top; white-space:nowrap; }
table.kv td { padding:3px 0; word-break:break-word; }
table.grid td, table.grid th { border:1px solid var(--line); padding:4px 12px; text-align:right; }
table.grid th { background:#f0f3f6; font-weight:500; }
.cols { display:flex; flex-wrap:wrap; gap:8px 48px; }
.cols > div { flex:1 1 320px; min-width:0; }
.row { display:flex; flex-wrap:wrap; gap:8px 36px; align-items:flex-start; }
.row > .grow { flex:1 1 300px; min-width:0; }
.row > .fixed { flex:0 1 auto; min-width:0; }
img { max-width:100%; height:auto; }
img.plot { display:block; margin:8px 0; border:1px solid var(--line); }
img.px { image-rendering:pixelated; image-rendering:crisp-edges; }
.na { color:var(--muted); font-style:italic; background:#f7f7f2; border-left:3px solid #d8c87a;
      padding:6px 10px; margin:8px 0; }
.note { color:var(--muted); font-size:13px; }
.gallery { display:flex; flex-wrap:wrap; gap:14px; }
.card { width:252px; border:1px solid var(--line); border-radius:6px; padding:8px;
        background:#fbfcfd; }
.card .pair { display:flex; gap:6px; }
.card .pair img { width:115px; height:115px; object-fit:contain; background:#000; }
.card .path { font:12px/1.35 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;
              word-break:break-all; margin-top:6px; color:#333; }
.card .meta { margin-top:4px; }
.card .badge { margin-left:0; margin-right:6px; }
.flag, .okc { font-size:13px; margin-right:6px; }
.card .score { font-weight:600; font-variant-numeric:tabular-nums; }
.flag { color:var(--bad); font-weight:600; }
.okc { color:var(--ok); font-weight:600; }
.badge { display:inline-block; padding:0 6px; border-radius:4px; font-size:12px;
         background:#eef2f6; color:#445; margin-left:6px; }
.summary td.big { font-size:18px; font-weight:600; }
"""


def _summary(data: ReportData) -> str:
    md = data.metadata
    pre = _get(md, "preprocessing") or {}
    rows: list[tuple[str, str]] = []
    if data.model_path:
        rows.append(("model file", f"<code>{_esc(data.model_path)}</code>"))
    if md.get("arch"):
        rows.append(("architecture", _esc(md["arch"])))
    if isinstance(pre, Mapping) and pre.get("height") and pre.get("width"):
        ch = pre.get("channels", "?")
        rows.append(("input", _esc(f"{ch} × {pre['height']} × {pre['width']}")))
    if data.scores is not None:
        s = np.asarray(data.scores, dtype=np.float64)
        rows.append(("images scored", _esc(s.size)))
        if data.threshold is not None:
            flagged = int(np.sum(s > data.threshold))
            pct = 100.0 * flagged / s.size if s.size else 0.0
            rows.append(("flagged anomalous", f'<span class="flag">{flagged}</span> ({pct:.1f}%)'))
    if data.threshold is not None:
        rule = f' <span class="badge">{_esc(data.threshold_rule)}</span>'
        rows.append(
            ("threshold", _fmt(float(data.threshold)) + (rule if data.threshold_rule else ""))
        )
    rows.append(("score", _esc(data.score_kind)))
    if data.labels is not None:
        known = sum(v is not None for v in data.labels)
        anomalous = sum(v == 1 for v in data.labels if v is not None)
        rows.append(("labels", _esc(f"{known} known, {anomalous} anomalous")))
    m = _metrics(data)
    for key, name in (("roc_auc", "ROC AUC"), ("average_precision", "average precision")):
        if m.get(key) is not None:
            rows.append((name, _fmt(float(m[key]))))
    return _table(rows, "kv summary")


def _metrics(data: ReportData) -> dict[str, Any]:
    """Metrics given by the caller; AUC/AP computed here when labels allow and none were given."""
    m = dict(data.metrics or {})
    if (
        data.scores is not None
        and data.has_both_classes()
        and (m.get("roc_auc") is None or m.get("average_precision") is None)
    ):
        from sklearn.metrics import average_precision_score, roc_auc_score

        assert data.labels is not None
        pairs = [
            (s, int(v)) for s, v in zip(data.scores, data.labels, strict=True) if v is not None
        ]
        s, y = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
        if m.get("roc_auc") is None:
            m["roc_auc"] = float(roc_auc_score(y, s))
        if m.get("average_precision") is None:
            m["average_precision"] = float(average_precision_score(y, s))
    return m


def _model_section(data: ReportData, figs: Mapping[str, bytes]) -> str:
    md = data.metadata
    if not md:
        body = _na("no model metadata was given.")
        return _section("model", "Model", body)
    arch_rows = [("architecture", _esc(md.get("arch", "unknown")))]
    arch_rows += [(str(k), _fmt(v)) for k, v in (md.get("arch_args") or {}).items()]
    if md.get("format"):
        arch_rows.append(("file format", _esc(f"{md['format']} v{md.get('format_version', '?')}")))
    pre = md.get("preprocessing") or {}
    pre_rows = [(str(k), _fmt(v)) for k, v in pre.items()] if isinstance(pre, Mapping) else []
    tr = md.get("training") or {}
    tr = tr if isinstance(tr, Mapping) else {}
    order = [
        ("data", "data"),
        ("image_count", "images found"),
        ("train_count", "training images"),
        ("val_count", "validation images"),
        ("epochs_requested", "epochs requested"),
        ("epochs_run", "epochs run"),
        ("best_epoch", "best epoch"),
        ("loss", "loss"),
        ("noise", "noise"),
        ("lr", "learning rate"),
        ("batch_size", "batch size"),
        ("seed", "seed"),
        ("device", "device"),
        ("seconds", "seconds"),
        ("versions", "versions"),
    ]
    tr_rows = [(name, _fmt(tr[key])) for key, name in order if key in tr]
    history = tr.get("history") or {}
    if isinstance(history, Mapping):
        for key, name in (("train_loss", "final train loss"), ("val_loss", "final val loss")):
            seq = history.get(key) or []
            if seq:
                tr_rows.append((name, _fmt(float(seq[-1]))))
    val_count = _get(md, "validation", "count")
    if val_count is not None:
        tr_rows.append(("validation scores kept", _fmt(val_count)))

    parts = ['<div class="cols">']
    parts.append(f"<div><h3>Architecture</h3>{_table(arch_rows)}</div>")
    parts.append(
        "<div><h3>Preprocessing</h3>"
        + (_table(pre_rows) if pre_rows else _na("no preprocessing recorded."))
        + "</div>"
    )
    parts.append("</div>")
    parts.append('<div class="row"><div class="grow"><h3>Training record</h3>')
    parts.append(_table(tr_rows) if tr_rows else _na("no training record."))
    skipped = tr.get("skipped") or []
    if skipped:
        items = "".join(
            f"<li><code>{_esc(_get(s, 'path') or s)}</code>: {_esc(_get(s, 'reason') or '')}</li>"
            for s in skipped[:MAX_SKIPPED_SHOWN]
        )
        more = len(skipped) - MAX_SKIPPED_SHOWN
        if more > 0:
            items += f"<li>… and {more} more</li>"
        parts.append(f"<h3>Skipped while training ({len(skipped)})</h3><ul>{items}</ul>")
    parts.append('</div><div class="fixed"><h3>Loss curve</h3>')
    if "loss_curve.png" in figs:
        parts.append(_img(figs["loss_curve.png"], "training and validation loss per epoch", "plot"))
    else:
        parts.append(_na("the model file records no loss history."))
    parts.append("</div></div>")
    return _section("model", "Model", "".join(parts))


def _reconstructions_section(data: ReportData, figs: Mapping[str, bytes]) -> str:
    if "reconstructions.png" not in figs:
        return _section("reconstructions", "Reconstructions", _na("no sample images were given."))
    note = (
        "Top row: the input; middle: the noisy version the model saw; bottom: its reconstruction."
        if data.noisy is not None
        else "Top row: the input; bottom row: the model's reconstruction."
    )
    body = f'<p class="note">{note}</p>' + _img(
        figs["reconstructions.png"], "inputs and reconstructions", "plot px"
    )
    return _section("reconstructions", "Reconstructions", body)


def _scores_section(data: ReportData, figs: Mapping[str, bytes]) -> str:
    if "score_histogram.png" not in figs:
        return _section("scores", "Scores", _na("no images were scored."))
    parts = []
    if data.has_labels():
        parts.append('<p class="note">Scores of normal and anomalous images, as labelled.</p>')
    elif data.validation_scores() is not None:
        parts.append(
            '<p class="note">No labels: scored images against the validation images '
            "(held-out normal data) the threshold was fitted on.</p>"
        )
    parts.append('<div class="row"><div class="fixed">')
    parts.append(_img(figs["score_histogram.png"], "histogram of anomaly scores", "plot"))
    parts.append('</div><div class="grow">')
    m = _metrics(data)
    conf = m.get("confusion")
    rows = [
        (name, _fmt(float(m[key])))
        for key, name in (
            ("roc_auc", "ROC AUC"),
            ("average_precision", "average precision"),
            ("f1", "F1 at threshold"),
            ("precision", "precision at threshold"),
            ("recall", "recall at threshold"),
        )
        if m.get(key) is not None
    ]
    if rows:
        parts.append(f"<h3>Metrics</h3>{_table(rows)}")
    if isinstance(conf, Mapping):
        c = {k: _fmt(conf.get(k)) for k in ("tn", "fp", "fn", "tp")}
        parts.append(
            '<h3>Confusion at threshold</h3><table class="grid">'
            "<tr><th></th><th>predicted<br>normal</th><th>predicted<br>anomalous</th></tr>"
            f"<tr><th>normal</th><td>{c['tn']}</td><td>{c['fp']}</td></tr>"
            f"<tr><th>anomalous</th><td>{c['fn']}</td><td>{c['tp']}</td></tr>"
            "</table>"
        )
    parts.append(f"<h3>Score statistics</h3>{_table(_score_stats(data))}")
    parts.append("</div></div>")
    parts.append("<h3>ROC and precision-recall</h3>")
    if "roc_pr.png" in figs:
        parts.append(_img(figs["roc_pr.png"], "ROC and precision-recall curves", "plot"))
    elif data.has_labels():
        parts.append(_na("the labels need both normal and anomalous images for ROC curves."))
    else:
        parts.append(_na("no labels are known, so there are no ROC or precision-recall curves."))
    return _section("scores", "Scores", "".join(parts))


def _score_stats(data: ReportData) -> list[tuple[str, str]]:
    s = _finite_scores(data.scores)
    rows: list[tuple[str, str]] = []
    if s.size:
        q = np.quantile(s, [0.0, 0.5, 0.95, 1.0])
        rows += [("min", _fmt(q[0])), ("median", _fmt(q[1])), ("95th percentile", _fmt(q[2]))]
        rows.append(("max", _fmt(q[3])))
    val = data.validation_scores()
    if val is not None and val.size:
        rows.append(("validation median", _fmt(float(np.median(val)))))
        rows.append(("validation max", _fmt(float(np.max(val)))))
    if data.threshold is not None and s.size:
        flagged = int(np.sum(s > data.threshold))
        rows.append(("flagged", _esc(f"{flagged} of {s.size}")))
    return rows


def _finite_scores(scores: Any) -> np.ndarray:
    if scores is None:
        return np.array([])
    s = np.asarray(scores, dtype=np.float64).ravel()
    return s[np.isfinite(s)]


def _cards(items: Sequence[ExtremeItem], threshold: float | None, vmax: float | None) -> str:
    cards = []
    for rank, it in enumerate(items, 1):
        image_png, heat_png = _extreme_images(it, vmax)
        flag = ""
        if threshold is not None:
            flag = (
                '<span class="flag">flagged</span>'
                if it.score > threshold
                else '<span class="okc">not flagged</span>'
            )
        label = ""
        if it.label is not None:
            label = f'<span class="badge">label: {"anomalous" if it.label else "normal"}</span>'
        cards.append(
            '<div class="card">'
            '<div class="pair">'
            + _img(image_png, f"image {rank}", "px")
            + _img(heat_png, f"error heatmap {rank}", "px")
            + "</div>"
            f'<div class="meta">#{rank} &nbsp;score '
            f'<span class="score">{_fmt(float(it.score))}</span>'
            f"</div><div>{flag}{label}</div>"
            f'<div class="path">{_esc(it.path)}</div>'
            "</div>"
        )
    return '<div class="gallery">' + "".join(cards) + "</div>"


def _extremes_section(data: ReportData) -> str:
    vmax = _shared_vmax([*data.top_anomalous, *data.top_normal])
    parts = [
        '<p class="note">Each card: the image as the model saw it, and its reconstruction error '
        "(blue low, red high, one colour scale for all cards).</p>"
    ]
    parts.append(f"<h3>Most anomalous ({len(data.top_anomalous)})</h3>")
    parts.append(
        _cards(data.top_anomalous, data.threshold, vmax)
        if data.top_anomalous
        else _na("no scored images were given.")
    )
    parts.append(f"<h3>Most normal-looking ({len(data.top_normal)})</h3>")
    parts.append(
        _cards(data.top_normal, data.threshold, vmax)
        if data.top_normal
        else _na("no scored images were given.")
    )
    return _section("extremes", "Most anomalous and most normal", "".join(parts))


def _latent_section(data: ReportData, figs: Mapping[str, bytes]) -> str:
    if "latent_map.png" not in figs:
        return _section(
            "latent", "Latent space", _na("this model has no vector latent, or none was computed.")
        )
    k = np.asarray(data.latent_codes).shape[1]
    how = "plotted directly" if k <= 2 else "projected onto their two principal components"
    n = np.asarray(data.latent_codes).shape[0]
    body = f'<p class="note">{n} codes of dimension {k}, {how}.</p>' + _img(
        figs["latent_map.png"], "2-D map of latent codes", "plot"
    )
    return _section("latent", "Latent space", body)


def _section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{_esc(title)}</h2>{body}</section>'


def _build(data: ReportData) -> tuple[str, dict[str, bytes]]:
    figs = render_figures(data)
    nav = "".join(
        f'<a href="#{sid}">{name}</a>'
        for sid, name in (
            ("model", "Model"),
            ("reconstructions", "Reconstructions"),
            ("scores", "Scores"),
            ("extremes", "Extremes"),
            ("latent", "Latent space"),
        )
    )
    sub = []
    if data.model_path:
        sub.append(_esc(data.model_path))
    if data.created:
        sub.append(_esc(data.created))
    page = (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(data.title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{_esc(data.title)}</h1>"
        f'<div class="sub">{" · ".join(sub)}</div><nav>{nav}</nav></header>'
        "<main>"
        f'<section id="summary"><h2>Summary</h2>{_summary(data)}</section>'
        + _model_section(data, figs)
        + _reconstructions_section(data, figs)
        + _scores_section(data, figs)
        + _extremes_section(data)
        + _latent_section(data, figs)
        + "</main></body></html>\n"
    )
    return page, figs


def render_html(data: ReportData) -> str:
    """Render the report as one self-contained HTML page.

    Args:
        data: What to show; missing parts become "Not available" notes.

    Returns:
        The page: inline CSS, no scripts, images as ``data:image/png;base64`` URIs,
        every string from ``data`` HTML-escaped.
    """
    return _build(data)[0]


def write_report(
    data: ReportData,
    path: str | Path,
    png_dir: str | Path | None = None,
) -> list[Path]:
    """Write the HTML report atomically, and optionally each plot as a PNG file.

    Args:
        data: What to show.
        path: Destination ``.html`` file; replaced atomically if it exists.
        png_dir: Folder for the plots as PNG files (created if missing); the
            names are the keys of :func:`render_figures`.

    Returns:
        The files written: the HTML file first, then the PNG files.

    Raises:
        OutputError: ``path`` or ``png_dir`` is an existing folder/file of the wrong kind.
    """
    dest = Path(path)
    if dest.is_dir():
        raise OutputError(f"{dest} is a folder; give a file name for the report, e.g. report.html.")
    if png_dir is not None and Path(png_dir).exists() and not Path(png_dir).is_dir():
        raise OutputError(f"--png-dir {png_dir} exists and is not a folder.")
    page, figs = _build(data)
    dest.parent.mkdir(parents=True, exist_ok=True)
    plots.atomic_write_bytes(dest, page.encode("utf-8"))
    written = [dest]
    if png_dir is not None:
        out = Path(png_dir)
        for name, png in figs.items():
            written.append(plots.save_png(png, out / name))
    return written
