"""The sections of the HTML report, each a function from :class:`ReportData` to HTML.

Every string that comes from the data is HTML-escaped here (:func:`esc`);
pictures are inline ``data:`` URIs of the PNG bytes :func:`aetool.report.html.render_figures`
made. A section whose data is missing says so ("Not available: ...") rather
than failing, so any subset of :class:`ReportData` renders.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from aetool.anomaly.mapscale import MapScale, map_scale
from aetool.report import pictures
from aetool.report.data import ExtremeItem, ReportData, lookup

__all__ = [
    "esc",
    "esc_path",
    "report_scale",
    "extremes_section",
    "latent_section",
    "model_section",
    "reconstructions_section",
    "scores_section",
    "shared_vmax",
    "summary_table",
]

#: Pixel size (longer side) that small images are enlarged to in the report.
THUMB_SIZE = 128


#: Skipped files listed in the model section before "... and N more".
MAX_SKIPPED_SHOWN = 10


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def esc_path(value: Any) -> str:
    """A path HTML-escaped, with line-break opportunities after each separator only,
    so a long path wraps between names rather than inside one."""
    return esc(value).replace("/", "/<wbr>").replace("\\", "\\<wbr>")


def _fmt(value: Any) -> str:
    """Human text for a metadata value (HTML-escaped)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return esc(f"{value:.4g}") if math.isfinite(value) else esc(value)
    if isinstance(value, Mapping):
        return ", ".join(f"{esc(k)}={_fmt(v)}" for k, v in value.items()) or "—"
    if isinstance(value, (list, tuple)):
        return esc(", ".join(str(v) for v in value)) or "—"
    return esc(value)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _img(png: bytes, alt: str, css: str = "") -> str:
    cls = f' class="{css}"' if css else ""
    return f'<img{cls} src="{_data_uri(png)}" alt="{esc(alt)}">'


def _table(rows: Sequence[tuple[str, str]], css: str = "kv") -> str:
    """Two-column table; values must already be HTML-safe."""
    body = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="{css}">{body}</table>'


def _na(reason: str) -> str:
    return f'<p class="na">Not available: {esc(reason)}</p>'


def extreme_panel(item: ExtremeItem, scale: MapScale, min_size: int = THUMB_SIZE) -> Image.Image:
    """The heatmap panel of one extreme image on the report's colour scale."""
    return pictures.heatmap_panel(
        item.image, item.error_map, vmax=scale.vmax, pixel_threshold=scale.pixel_threshold,
        min_size=min_size,
    )  # fmt: skip


def shared_vmax(items: Sequence[ExtremeItem]) -> float | None:
    """The largest error among the maps shown: the scale when the model records none."""
    tops = [float(np.nanmax(np.asarray(it.error_map))) for it in items if np.size(it.error_map)]
    tops = [t for t in tops if math.isfinite(t) and t > 0]
    return max(tops) if tops else None


def report_scale(data: ReportData) -> MapScale:
    """The model's colour scale and pixel threshold (as ``aetool score --heatmaps`` uses)."""
    scale = map_scale(data.metadata, data.score_kind)
    if scale.vmax is None:
        items = [*data.top_anomalous, *data.top_normal]
        return MapScale(shared_vmax(items), None, "largest error shown")
    return scale


def summary_table(data: ReportData) -> str:
    md = data.metadata
    pre = lookup(md, "preprocessing") or {}
    rows: list[tuple[str, str]] = []
    if data.model_path:
        rows.append(("model file", f"<code>{esc_path(data.model_path)}</code>"))
    if md.get("arch"):
        rows.append(("architecture", esc(md["arch"])))
    if isinstance(pre, Mapping) and pre.get("height") and pre.get("width"):
        ch = pre.get("channels", "?")
        rows.append(("input", esc(f"{ch} × {pre['height']} × {pre['width']}")))
    if data.scores is not None:
        s = np.asarray(data.scores, dtype=np.float64)
        rows.append(("images scored", esc(s.size)))
        if data.threshold is not None:
            flagged = int(np.sum(s > data.threshold))
            pct = 100.0 * flagged / s.size if s.size else 0.0
            rows.append(("flagged anomalous", f'<span class="flag">{flagged}</span> ({pct:.1f}%)'))
    if data.threshold is not None:
        rule = f' <span class="badge">{esc(data.threshold_rule)}</span>'
        rows.append(
            ("threshold", _fmt(float(data.threshold)) + (rule if data.threshold_rule else ""))
        )
    rows.append(("score", esc(data.score_kind)))
    if data.labels is not None:
        known = sum(v is not None for v in data.labels)
        anomalous = sum(v == 1 for v in data.labels if v is not None)
        rows.append(("labels", esc(f"{known} known, {anomalous} anomalous")))
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


def model_section(data: ReportData, figs: Mapping[str, bytes]) -> str:
    md = data.metadata
    if not md:
        body = _na("no model metadata was given.")
        return _section("model", "Model", body)
    arch_rows = [("architecture", esc(md.get("arch", "unknown")))]
    arch_rows += [(str(k), _fmt(v)) for k, v in (md.get("arch_args") or {}).items()]
    if md.get("format"):
        arch_rows.append(("file format", esc(f"{md['format']} v{md.get('format_version', '?')}")))
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
    val_count = lookup(md, "validation", "count")
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
            f"<li><code>{esc_path(lookup(s, 'path') or s)}</code>: {esc(lookup(s, 'reason') or '')}</li>"
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


def reconstructions_section(data: ReportData, figs: Mapping[str, bytes]) -> str:
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


def scores_section(data: ReportData, figs: Mapping[str, bytes]) -> str:
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
    rows += _f1_pixel_rows(data)
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


def _f1_pixel_rows(data: ReportData) -> list[tuple[str, str]]:
    """The F1-optimal threshold and the pixel ROC AUC, as `aetool score` reports them."""
    rows: list[tuple[str, str]] = []
    b = data.best_f1
    if b and b.get("metrics"):
        bm = b["metrics"]
        rows.append((
            "F1-optimal threshold",
            f"{_fmt(float(b['value']))}: F1 {_fmt(bm.get('f1'))}, precision "
            f"{_fmt(bm.get('precision'))}, recall {_fmt(bm.get('recall'))} "
            "(reported only; the threshold above decides)",
        ))  # fmt: skip
    p = data.pixel
    if p and p.get("roc_auc") is not None:
        rows.append((
            "pixel ROC AUC",
            f"{_fmt(float(p['roc_auc']))} ({_fmt(p.get('images_with_masks'))} images with "
            "ground-truth masks)",
        ))  # fmt: skip
    return rows


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
        rows.append(("flagged", esc(f"{flagged} of {s.size}")))
    return rows


def _finite_scores(scores: Any) -> np.ndarray:
    if scores is None:
        return np.array([])
    s = np.asarray(scores, dtype=np.float64).ravel()
    return s[np.isfinite(s)]


def _cards(items: Sequence[ExtremeItem], threshold: float | None, scale: MapScale) -> str:
    cards = []
    for rank, it in enumerate(items, 1):
        panel_png = pictures.png_bytes(extreme_panel(it, scale))
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
            + _img(panel_png, f"image {rank}, its error map and overlay", "panel px")
            + f'<div class="meta">#{rank} &nbsp;score '
            f'<span class="score">{_fmt(float(it.score))}</span>'
            f"</div><div>{flag}{label}</div>"
            f'<div class="path">{esc_path(it.path)}</div>'
            "</div>"
        )
    return '<div class="gallery">' + "".join(cards) + "</div>"


def extremes_section(data: ReportData) -> str:
    scale = report_scale(data)
    contour = (
        f", white contour at the pixel threshold {scale.pixel_threshold:.3g}"
        if scale.pixel_threshold is not None
        else ""
    )
    parts = [
        '<p class="note">Each card: the image as the model saw it, its reconstruction error map '
        f"and the map over the image (blue low, red high; one colour scale, from the {esc(scale.source)}, "
        f"for every card and for <code>aetool score --heatmaps</code>{esc(contour)}).</p>"
    ]
    parts.append(f"<h3>Most anomalous ({len(data.top_anomalous)})</h3>")
    parts.append(
        _cards(data.top_anomalous, data.threshold, scale)
        if data.top_anomalous
        else _na("no scored images were given.")
    )
    parts.append(f"<h3>Most normal-looking ({len(data.top_normal)})</h3>")
    parts.append(
        _cards(data.top_normal, data.threshold, scale)
        if data.top_normal
        else _na("no scored images were given.")
    )
    return _section("extremes", "Most anomalous and most normal", "".join(parts))


def latent_section(data: ReportData, figs: Mapping[str, bytes]) -> str:
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
    return f'<section id="{sid}"><h2>{esc(title)}</h2>{body}</section>'
