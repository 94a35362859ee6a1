"""``aetool score``: one row per image with its anomaly score, on stdout."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from aetool.cli.console import MAX_WARNINGS, ItemProgress, exit_partial, make_err_console, warn
from aetool.cli.options import (
    batch_size_option,
    common_options,
    default_model,
    format_option,
    input_paths,
    labels_option,
    model_option,
    score_kind_option,
    shard_option,
    strict_option,
    threshold_option,
)
from aetool.cli.tables import print_score_summary


@click.command("score")
@click.argument("inputs", nargs=-1, type=str)
@model_option
@score_kind_option(
    "auto: model for models with their own anomaly map (draem), else mse; model: the "
    "model's map, mean of its top 1%; mse: mean squared error in [0,1] pixel units; "
    "ssim: 1 - mean SSIM; max-local: max of the 5x5-smoothed squared-error map."
)
@threshold_option(
    "auto (median + 4*1.4826*MAD of the model's validation scores), a number, "
    "a validation percentile such as p99.5, or mean + K std such as 3sigma."
)
@format_option("csv", "jsonl", "table", short=True)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the summary report as JSON to this file.",
)
@click.option(
    "--fail-on-anomaly", is_flag=True, help="Exit with status 3 when any image is flagged."
)
@click.option(
    "--heatmaps",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write an error-map overlay PNG per image here, mirroring the input paths.",
)
@click.option(
    "--masks-out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write a predicted binary defect mask PNG per image here (image size), the map cut "
    "at the 99.9th percentile of the validation normal pixels (at least 0.5 for --score model).",
)
@labels_option
@click.option(
    "--masks",
    "masks_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder of ground-truth masks mirroring the images (default: MVTec ground_truth/).",
)
@shard_option("Score only shard I of N (I/N).")
@batch_size_option()
@strict_option("Fail on the first unreadable or missing file.")
@common_options
def score_cmd(
    inputs: tuple[str, ...],
    model: Path | None,
    score_kind: str,
    threshold: str,
    fmt: str,
    report_path: Path | None,
    fail_on_anomaly: bool,
    heatmaps: Path | None,
    masks_out: Path | None,
    labels_path: Path | None,
    masks_dir: Path | None,
    shard: tuple[int, int] | None,
    batch_size: int,
    strict: bool,
    quiet: bool,
    device: str,
) -> None:
    """Score images for anomalies; one row per image on stdout.

    INPUTs are image files and folders (recursive). `-`, or piped stdin with no
    INPUT, reads newline-separated paths:

        find new/ -name '*.png' | aetool score --threshold auto

    Columns: path, score, threshold, is_anomaly (score > threshold),
    percentile (rank among the model's validation scores), label (when known
    from the folder layout or --labels), error (why a file could not be
    scored; its score is empty), score_kind, rule (how the threshold was set).
    Labels from folders: images under good/normal/ok are 0, their sibling
    folders 1 (MVTec-AD, anomalib Folder). The report goes to stderr.
    """
    from aetool.anomaly.labels import read_labels_csv
    from aetool.anomaly.options import ScoreOptions
    from aetool.anomaly.pipeline import score_images
    from aetool.devices import resolve_device
    from aetool.files import atomic_path
    from aetool.models.file import load_model
    from aetool.rows import RowWriter

    console = make_err_console(quiet)
    paths = input_paths(inputs)
    dev = resolve_device(device)
    loaded = load_model(model or default_model(), device=dev)
    labels = read_labels_csv(labels_path) if labels_path is not None else None
    warned = [0]

    def warn_unreadable(path: str, reason: str) -> None:
        warned[0] += 1
        if warned[0] <= MAX_WARNINGS:
            warn(console, f"cannot score {path}: {reason}")
        elif warned[0] == MAX_WARNINGS + 1:
            warn(console, "more unreadable files; see the summary")

    bar = ItemProgress(console, None, "scoring")
    options = ScoreOptions(
        score_kind=score_kind, threshold=threshold, labels=labels, batch_size=batch_size,
        device=dev, shard=shard, heatmap_dir=heatmaps, masks_dir=masks_dir, masks_out=masks_out,
        strict=strict,
        progress=bar.update, warn=warn_unreadable,
    )  # fmt: skip
    run = score_images(paths, loaded, options)
    writer = RowWriter(fmt, sys.stdout)
    try:
        with bar:
            for row in run:
                writer.write(row.as_dict(with_label=run.columns_with_label, with_info=True))
    finally:
        run.close()
    writer.close()
    report = run.summary.report()
    if report_path is not None:
        with atomic_path(report_path) as tmp:
            tmp.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    print_score_summary(console, report)
    if report["counts"]["scored"] == 0:
        raise click.ClickException(
            f"none of the {report['counts']['rows']} inputs could be scored (see the error column)"
        )
    if fail_on_anomaly and report["counts"]["anomalies"]:
        sys.exit(3)
    exit_partial(console, report["counts"]["unreadable"], "scored", "scored")
