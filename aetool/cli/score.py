"""``aetool score``: one row per image with its anomaly score, on stdout."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import click

from aetool.cli.options import (
    batch_size_option,
    common_options,
    default_model,
    format_option,
    input_paths,
    labels_option,
    masks_option,
    model_option,
    no_labels_option,
    overwrite_option,
    refuse_existing,
    score_kind_option,
    shard_option,
    strict_option,
    threshold_option,
)

if TYPE_CHECKING:
    from aetool.anomaly.pipeline import ScoreRun
    from aetool.cli.console import ItemProgress


@click.command("score", short_help="Score images for anomalies: one CSV row per image.")
@click.argument("inputs", nargs=-1, type=str)
@model_option
@score_kind_option(
    "auto: model for models with their own anomaly map (draem), else mse; model: the "
    "model's map, mean of its top 1% less its mean (older draem files: top 1%); "
    "mse: mean squared error in [0,1] pixel units; ssim: 1 - mean SSIM; "
    "max-local: max of the 5x5-smoothed squared-error map."
)
@threshold_option(
    "auto (median + 4*1.4826*MAD of the model's validation scores), a number, "
    "a validation percentile such as p99.5, or mean + K std such as 3sigma."
)
@format_option("csv", "jsonl", "table", short=True)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the rows to this file instead of stdout.",
)
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
@overwrite_option("Replace an existing -o file, --report file and existing heatmaps.")
@click.option(
    "--masks-out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write a predicted binary defect mask PNG per image here (image size), the map cut "
    "at the 99.9th percentile of the validation normal pixels (at least 0.5 for --score model).",
)
@labels_option
@no_labels_option
@masks_option
@shard_option("Score only shard I of N (disjoint, stable across runs).")
@batch_size_option()
@strict_option("Fail on the first unreadable or missing file.")
@common_options
def score_cmd(
    inputs: tuple[str, ...],
    model: Path | None,
    score_kind: str,
    threshold: str,
    fmt: str,
    output: Path | None,
    report_path: Path | None,
    fail_on_anomaly: bool,
    heatmaps: Path | None,
    overwrite: bool,
    masks_out: Path | None,
    labels_path: Path | None,
    no_labels: bool,
    masks_dir: Path | None,
    shard: tuple[int, int] | None,
    batch_size: int,
    strict: bool,
    quiet: bool,
    device: str,
) -> None:
    """Score images for anomalies; one row per image on stdout (or -o FILE).

    INPUTs are image files and folders (recursive). `-`, or piped stdin with no
    INPUT, reads newline-separated paths.

    Columns: path, score, threshold, is_anomaly (score > threshold),
    percentile (rank among the model's validation scores), label (when known
    from the folder layout or --labels), error (why a file could not be
    scored; its score is empty), score_kind, rule (how the threshold was set).
    Labels from folders: images under good/normal/ok are 0, their sibling
    folders (and folders named abnormal, anomaly, anomalous, bad, defect or
    defective) 1, as in MVTec-AD and anomalib's Folder; a warning says so,
    --no-labels turns it off. The report goes to stderr.

    Examples:

    \b
        aetool score new/ -m model.safetensors > scores.csv
        find new/ -name '*.png' | aetool score -t 3sigma
        aetool score mvtec/bottle/test --heatmaps maps/ --report summary.json
        aetool score big/ --shard 1/8 -o part-1.csv    # one of 8 batch jobs
    """
    from aetool.anomaly.labels import read_labels_csv
    from aetool.anomaly.options import ScoreOptions
    from aetool.anomaly.pipeline import score_images
    from aetool.cli.console import (
        ItemProgress,
        exit_partial,
        make_err_console,
        unreadable_warner,
        warn_folder_labels,
    )
    from aetool.cli.tables import print_score_summary
    from aetool.devices import resolve_device
    from aetool.files import atomic_path, check_output
    from aetool.models.file import load_model

    if labels_path is not None and no_labels:
        raise click.UsageError("--labels and --no-labels exclude each other")
    if output is not None:
        refuse_existing(output, overwrite)
    console = make_err_console(quiet)
    paths = input_paths(inputs)
    model_path = model or default_model()
    reads = [model_path, *([labels_path] if labels_path else [])]
    for out in (output, report_path):
        if out is not None:
            check_output(out, inputs=paths, reads=reads, overwrite=overwrite)
    dev = resolve_device(device)
    loaded = load_model(model_path, device=dev)
    labels = read_labels_csv(labels_path) if labels_path is not None else None
    bar = ItemProgress(console, None, "scoring")
    options = ScoreOptions(
        score_kind=score_kind, threshold=threshold, labels=labels, infer=not no_labels,
        batch_size=batch_size, device=dev, shard=shard, heatmap_dir=heatmaps,
        overwrite=overwrite, masks_dir=masks_dir, masks_out=masks_out, strict=strict,
        progress=bar.update, warn=unreadable_warner(console, "score"),
    )  # fmt: skip
    run = score_images(paths, loaded, options)
    warn_folder_labels(console, run.summary.info.get("label_source"), run.labels)
    if output is None:
        _write_rows(run, fmt, sys.stdout, bar)
    else:
        with (
            atomic_path(output, overwrite=overwrite) as tmp,
            open(tmp, "w", newline="", encoding="utf-8") as f,
        ):
            _write_rows(run, fmt, f, bar)
    report = run.summary.report()
    if report_path is not None:
        with atomic_path(report_path, overwrite=overwrite) as tmp:
            tmp.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    print_score_summary(console, report)
    if report["counts"]["rows"] and report["counts"]["scored"] == 0:
        raise click.ClickException(
            f"none of the {report['counts']['rows']} inputs could be scored (see the error column)"
        )
    if fail_on_anomaly and report["counts"]["anomalies"]:
        sys.exit(3)
    exit_partial(console, report["counts"]["unreadable"], "scored", "scored")


def _write_rows(run: ScoreRun, fmt: str, stream: TextIO, bar: ItemProgress) -> None:
    """Stream the run's rows; the CSV header comes first even when there is no row
    (an empty shard of a batch job still gives a file that `head -n 1` can read)."""
    from aetool.anomaly.results import score_columns
    from aetool.rows import RowWriter

    writer = RowWriter(fmt, stream)
    writer.write_header(score_columns(run.columns_with_label, with_info=True))
    try:
        with bar:
            for row in run:
                writer.write(row.as_dict(with_label=run.columns_with_label, with_info=True))
    finally:
        run.close()
    writer.close()
