"""One self-contained HTML report about a model and the images it scored.

:func:`render_html` turns a :class:`~aetool.report.data.ReportData` (plain numpy arrays, lists
and the model file's metadata dict) into a single page: inline CSS, no
JavaScript, every picture a ``data:image/png;base64`` URI, so the file opens
offline in any browser and can be mailed around. :func:`write_report` writes
it atomically and, on request, the same plots as PNG files.

Sections (element ids): ``model``, ``reconstructions``, ``scores``,
``extremes`` and ``latent``. Missing data never fails the report; the section
says what is not available and why.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from aetool.errors import OutputError
from aetool.files import atomic_write_bytes, check_output
from aetool.report import plots
from aetool.report.data import ReportData, lookup
from aetool.report.sections import (
    esc,
    esc_path,
    extreme_panel,
    extremes_section,
    latent_section,
    model_section,
    reconstructions_section,
    report_scale,
    scores_section,
    summary_table,
)

__all__ = ["render_figures", "render_html", "write_report"]


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
    history = lookup(data.metadata, "training", "history") or {}
    train_loss = history.get("train_loss") or [] if isinstance(history, Mapping) else []
    val_loss = history.get("val_loss") or [] if isinstance(history, Mapping) else []
    if train_loss or val_loss:
        best = lookup(data.metadata, "training", "best_epoch")
        loss_name = lookup(data.metadata, "training", "loss") or "loss"
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
    scale = report_scale(data)
    for name, items in (("top_anomalous", data.top_anomalous), ("top_normal", data.top_normal)):
        if items:
            figs[f"{name}.png"] = plots.png_bytes(
                _stack([extreme_panel(it, scale) for it in items])
            )
    return figs


def _stack(panels: list[Image.Image]) -> Image.Image:
    """Panels one above the other on white."""
    width = max(p.width for p in panels)
    out = Image.new("RGB", (width, sum(p.height for p in panels)), (255, 255, 255))
    y = 0
    for p in panels:
        out.paste(p, (0, y))
        y += p.height
    return out


_CSS = """
:root { --fg:#1d2125; --muted:#5f6b76; --line:#dfe3e8; --bg:#f5f7f9; --card:#fff;
        --accent:#2b6cb0; --bad:#c0392b; --ok:#2f855a; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
       font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif; }
header { background:#1f2d3d; color:#fff; padding:20px 32px 14px; }
header h1 { margin:0 0 4px; font-size:24px; font-weight:600; }
header .sub { color:#c4cfdb; font-size:13px; overflow-wrap:break-word; }
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
table.kv td { padding:3px 0; overflow-wrap:break-word; }
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
.card { width:460px; max-width:100%; border:1px solid var(--line); border-radius:6px;
        padding:8px; background:#fbfcfd; }
.card img.panel { width:100%; height:auto; }
.card .path { font:12px/1.35 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;
              overflow-wrap:break-word; margin-top:6px; color:#333; }
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
        sub.append(esc_path(data.model_path))
    if data.created:
        sub.append(esc(data.created))
    page = (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(data.title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{esc(data.title)}</h1>"
        f'<div class="sub">{" · ".join(sub)}</div><nav>{nav}</nav></header>'
        "<main>"
        f'<section id="summary"><h2>Summary</h2>{summary_table(data)}</section>'
        + model_section(data, figs)
        + reconstructions_section(data, figs)
        + scores_section(data, figs)
        + extremes_section(data)
        + latent_section(data, figs)
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
    *,
    overwrite: bool = True,
) -> list[Path]:
    """Write the HTML report atomically, and optionally each plot as a PNG file.

    Args:
        data: What to show.
        path: Destination ``.html`` file; replaced atomically if it exists.
        png_dir: Folder for the plots as PNG files (created if missing); the
            names are the keys of :func:`render_figures`.
        overwrite: replace existing files; without it an existing report or
            plot is an :class:`OutputError` (checked before anything is written).

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
    check_output(dest, overwrite=overwrite)
    if png_dir is not None:
        for name in figs:
            check_output(Path(png_dir) / name, overwrite=overwrite, root=png_dir)
    atomic_write_bytes(dest, page.encode("utf-8", "backslashreplace"), overwrite=overwrite)
    written = [dest]
    if png_dir is not None:
        out = Path(png_dir)
        for name, png in figs.items():
            written.append(plots.save_png(png, out / name, overwrite=overwrite, root=out))
    return written
