"""The summary tables commands print on stderr when they finish (for people, not pipes)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from aetool.cli.console import fmt_number, plain
from aetool.denoise.pipeline import DenoiseSummary
from aetool.training.draem import STEPS_PER_EPOCH
from aetool.training.record import TrainResult, sample_grid_path


def key_value_table(title: str, *, fold: bool = True) -> Table:
    """A two-column table: bold keys, values (folded when long)."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    if fold:
        table.add_column(overflow="fold")
    else:
        table.add_column()
    return table


def print_mapping(console: Console, title: str, items: Mapping[str, Any]) -> None:
    """A key/value table of ``items``."""
    table = key_value_table(title)
    for key, value in items.items():
        table.add_row(key, plain(value))
    console.print(table)


def _run_status(t: dict[str, Any]) -> str:
    """How a training run ended, from its record: interrupted, stopped early (patience),
    ended by ``--time-budget`` before its epochs or steps, or completed."""
    if not t.get("completed", True):
        return "interrupted (resumable)"
    if t.get("stopped_early"):
        return "stopped early"
    budget = (t.get("config") or {}).get("time_budget")
    planned = t.get("epochs_requested") or 0
    if "steps" in t:  # draem counts steps, STEPS_PER_EPOCH an epoch; the last may be partial
        short = t["steps"] < planned * STEPS_PER_EPOCH
    else:
        short = t.get("epochs_run", 0) < planned
    if budget and short:
        return f"ended by the time budget, {budget / 60:g} min"
    return "completed"


def print_train_summary(console: Console, result: TrainResult, path: Path) -> None:
    t = result.metadata["training"]
    v = result.metadata["validation"]
    table = key_value_table("Training summary", fold=False)
    best = t["best_epoch"]
    hist = t["history"]
    table.add_row("model", plain(path))
    if sample_grid_path(path).exists():
        table.add_row("reconstructions", plain(sample_grid_path(path)))
    table.add_row(
        "architecture", f"{result.metadata.get('arch', '')} {t['model_config']['arch']}".strip()
    )
    table.add_row("images", f"{t['train_count']} train / {t['val_count']} validation")
    if t["skipped"]:
        table.add_row("skipped", f"{len(t['skipped'])} unreadable file(s)")
    table.add_row("epochs", f"{t['epochs_run']} run, best {best} ({_run_status(t)})")
    if best:
        vl = hist["val_loss"][best - 1]
        table.add_row(
            "loss at best",
            f"train {hist['train_loss'][best - 1]:.5f}"
            + (f", val {vl:.5f}" if vl is not None else ""),
        )
    if v.get("summary", {}).get("mse"):
        s = v["summary"]["mse"]
        table.add_row("val error (mse)", f"median {s['median']:.5f}, p99 {s['p99']:.5f}")
    rate = sum(r.images_per_s for r in result.history[-3:]) / max(len(result.history[-3:]), 1)
    table.add_row("time", f"{t['seconds']:.1f} s on {t['device']}, {rate:,.0f} img/s")
    console.print(table)


def _score_images_line(report: dict[str, Any]) -> str:
    c = report["counts"]
    images = f"{c['scored']} scored, {c['unreadable']} unreadable"
    if c.get("missing"):
        images += f" (of which {c['missing']} missing)"
    if report.get("shard"):
        images += f"; shard {report['shard']} of {c.get('found')} images found"
    if c.get("excluded_masks"):
        images += f"; {c['excluded_masks']} ground_truth mask files not scored"
    return images


def _add_score_metrics(table: Table, report: dict[str, Any], m: dict[str, Any]) -> None:
    c = report["counts"]
    lab = report["labels"]
    table.add_row(
        "labels",
        f"{lab['normal']} normal, {lab['anomalous']} anomalous from the {lab['source']}"
        + (f", {c['scored'] - lab['known']} unknown" if c["scored"] - lab["known"] else ""),
    )
    table.add_row(
        "ROC AUC / AP", f"{fmt_number(m['roc_auc'])} / {fmt_number(m['average_precision'])}"
    )
    table.add_row(
        "at threshold",
        f"F1 {fmt_number(m['f1'])}, precision {fmt_number(m['precision'])}, "
        f"recall {fmt_number(m['recall'])}",
    )
    cm = m["confusion"]
    table.add_row(
        "confusion", f"TN {cm['tn']}  FP {cm['fp']}  FN {cm['fn']}  TP {cm['tp']}  (label x flag)"
    )
    b = report.get("best_f1")
    if b:
        bm = b["metrics"]
        table.add_row(
            "F1-optimal",
            f"{b['value']:.6g}: F1 {fmt_number(bm['f1'])}, precision "
            f"{fmt_number(bm['precision'])}, recall {fmt_number(bm['recall'])} "
            "(reported only; the threshold above decides)",
        )


def print_score_summary(console: Console, report: dict[str, Any]) -> None:
    c = report["counts"]
    t = report["threshold"]
    table = key_value_table("Scoring summary")
    table.add_row("model", plain(report.get("model")))
    score_note = " (clean inputs, denoising model)" if report.get("denoising_model") else ""
    table.add_row("score", f"{report['score_kind']}{score_note}")
    table.add_row("images", _score_images_line(report))
    table.add_row("threshold", f"{t['value']:.6g} ({t['rule']}) decides is_anomaly")
    pct = 100 * c["anomalies"] / c["scored"] if c["scored"] else 0.0
    table.add_row("flagged", f"{c['anomalies']} anomalous ({pct:.1f}%), {c['normal']} normal")
    if report.get("metrics"):
        _add_score_metrics(table, report, report["metrics"])
    px = report.get("pixel")
    if px:
        table.add_row(
            "pixel ROC AUC",
            f"{fmt_number(px['roc_auc'])} ({px['images_with_masks']} masks, "
            f"{px['images']} images, {px['map']} maps)",
        )
        if px.get("aupro") is not None:
            table.add_row("pixel AUPRO (FPR 0.3)", fmt_number(px["aupro"]))
    console.print(table)


def print_denoise_summary(
    console: Console,
    summary: DenoiseSummary,
    *,
    images: str,
    out_dir: str,
    failed: int,
    with_reference: bool,
    time_line: str,
    method: str = "",
) -> None:
    table = key_value_table("Denoising summary", fold=False)
    table.add_row("images", images)
    if method:
        table.add_row("method", plain(method))
    table.add_row("written", plain(f"{summary.written} to {out_dir}"))
    if summary.exists:
        table.add_row("not overwritten", f"{summary.exists} existing output(s); use --overwrite")
    if failed:
        table.add_row("errors", f"{failed} unreadable or unwritable")
    sigma = summary.mean("sigma_est")
    if sigma is not None:
        table.add_row("noise (sigma_est)", f"mean {sigma:.4f} (x255: {sigma * 255:.1f})")
    if with_reference:
        table.add_row("PSNR (dB)", f"{fmt_number(summary.mean('psnr_in'), '.2f')} -> "
                      f"{fmt_number(summary.mean('psnr_out'), '.2f')} (mean over "
                      f"{summary.counts.get('psnr_in', 0)} with a reference)")  # fmt: skip
        table.add_row("SSIM", f"{fmt_number(summary.mean('ssim_in'), '.4f')} -> "
                      f"{fmt_number(summary.mean('ssim_out'), '.4f')}")  # fmt: skip
        if summary.missing_reference:
            table.add_row("no reference", f"{summary.missing_reference} image(s)")
    table.add_row("time", time_line)
    console.print(table)


def _add_training_rows(table: Table, t: dict[str, Any]) -> None:
    table.add_row("data", ", ".join(t.get("data", [])))
    table.add_row("images", f"{t.get('image_count')} ({t.get('train_count')} train, "
                  f"{t.get('val_count')} validation, {len(t.get('skipped', []))} skipped)")  # fmt: skip
    table.add_row("training", f"{t.get('epochs_run')} of {t.get('epochs_requested')} epochs, "
                  f"best {t.get('best_epoch')}, loss {t.get('loss')}, noise {t.get('noise') or 'none'}, "
                  f"lr {t.get('lr')}, batch {t.get('batch_size')}, seed {t.get('seed')}")  # fmt: skip
    hist = t.get("history", {})
    if hist.get("train_loss"):
        vl = hist.get("val_loss") or [None]
        table.add_row("final loss", f"train {hist['train_loss'][-1]:.5f}"
                      + (f", val {vl[-1]:.5f}" if vl[-1] is not None else ""))  # fmt: skip
    table.add_row("run", f"{t.get('seconds', 0):.1f} s on {t.get('device')}, "
                  f"{_run_status(t)}, "
                  f"{t.get('finished', '')}")  # fmt: skip
    init = t.get("init")
    while isinstance(init, dict):  # fine-tuned: the runs it started from, newest first
        first = init.get("training")
        first = first if isinstance(first, dict) else {}
        secs = first.get("seconds")
        secs = f"{secs:.1f} s" if isinstance(secs, (int, float)) else "? s"
        table.add_row("started from", f"{init.get('file')} (sha256 "
                      f"{str(init.get('sha256'))[:12]}...): {first.get('steps', '?')} steps, "
                      f"{secs} on {first.get('device')}")  # fmt: skip
        init = first.get("init")
    table.add_row("versions", ", ".join(f"{k} {v}" for k, v in t.get("versions", {}).items()))


def print_model_info(console: Console, title: str, meta: dict[str, Any]) -> None:
    """A model file's metadata, readable."""
    t = meta.get("training", {})
    pre = meta.get("preprocessing", {})
    table = key_value_table(title)
    table.add_row("format", f"{meta['format']} v{meta['format_version']}")
    table.add_row("architecture", f"{meta['arch']} {json.dumps(meta.get('arch_args', {}))}")
    size = f"{pre.get('height')}x{pre.get('width')}" if pre.get("height") else "native size"
    if pre.get("patch_size"):
        size += f", patches of {pre['patch_size']}"
    table.add_row("preprocessing",
                  f"{pre.get('channels')} channel(s), {size}, resize {pre.get('resize')}, "
                  f"alpha on {pre.get('alpha_background')}")  # fmt: skip
    if t:
        _add_training_rows(table, t)
    for kind, s in meta.get("validation", {}).get("summary", {}).items():
        table.add_row(f"val {kind}", f"mean {s['mean']:.5f}, median {s['median']:.5f}, "
                      f"p95 {s['p95']:.5f}, p99 {s['p99']:.5f}, max {s['max']:.5f}")  # fmt: skip
    console.print(table)
