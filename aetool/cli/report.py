"""``aetool report``: one self-contained HTML report on a model and a set of images."""

from __future__ import annotations

from pathlib import Path

import click

from aetool.cli.options import (
    batch_size_option,
    common_options,
    default_model,
    input_paths,
    labels_option,
    masks_option,
    model_option,
    no_labels_option,
    overwrite_option,
    refuse_existing,
    score_kind_option,
    threshold_option,
)


@click.command("report", short_help="Write one self-contained HTML report on a model and images.")
@click.argument("inputs", nargs=-1)
@model_option
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default="report.html",
    show_default=True,
    help="The HTML file to write.",
)
@click.option(
    "--png-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Also write every plot as a PNG file into this folder.",
)
@score_kind_option()
@threshold_option("As for `aetool score`: auto, a number, pNN or Ksigma.")
@labels_option
@no_labels_option
@masks_option
@click.option(
    "--top-n",
    type=click.IntRange(1, 100),
    default=8,
    show_default=True,
    help="How many most-anomalous and most-normal images to show.",
)
@overwrite_option("Replace an existing report file.")
@batch_size_option()
@common_options
def report_cmd(
    inputs: tuple[str, ...],
    model: Path | None,
    output: Path,
    png_dir: Path | None,
    score_kind: str,
    threshold: str,
    labels_path: Path | None,
    no_labels: bool,
    masks_dir: Path | None,
    top_n: int,
    overwrite: bool,
    batch_size: int,
    quiet: bool,
    device: str,
) -> None:
    """Write ONE self-contained HTML report: model, reconstructions, scores, extremes, latents.

    Images are embedded; the file references nothing outside itself. Prints
    the report's path. Scores, threshold and labels work as in `aetool score`.

    Examples:

    \b
        aetool report mvtec/bottle/test -m bottle.safetensors
        aetool report test/ -o bottle.html --png-dir plots/ -t p99.5
    """
    from aetool.anomaly.labels import read_labels_csv
    from aetool.cli.console import (
        ItemProgress,
        exit_partial,
        make_err_console,
        plain,
        unreadable_warner,
        warn_folder_labels,
    )
    from aetool.files import check_output
    from aetool.models.file import load_model
    from aetool.report.collect import build_report
    from aetool.report.html import write_report

    if labels_path is not None and no_labels:
        raise click.UsageError("--labels and --no-labels exclude each other")
    console = make_err_console(quiet)
    refuse_existing(output, overwrite)
    paths = input_paths(inputs, "report")
    model_path = model or default_model()
    check_output(
        output, inputs=paths, reads=[model_path, *([labels_path] if labels_path else [])],
        overwrite=overwrite,
    )  # fmt: skip
    loaded = load_model(model_path)
    with ItemProgress(console, None, "scoring") as bar:
        data = build_report(
            paths, loaded, score_kind=score_kind, threshold=threshold,
            labels=read_labels_csv(labels_path) if labels_path else None,
            infer_labels=not no_labels, masks_dir=masks_dir, top_n=top_n,
            batch_size=batch_size, device=device, progress=bar.update,
            warn=unreadable_warner(console, "score"),
        )  # fmt: skip
    counts = data.counts or {}
    if counts.get("rows") and not counts.get("scored"):
        raise click.ClickException(f"none of the {counts['rows']} inputs could be scored")
    warn_folder_labels(console, "folder layout" if not labels_path else None, data.labels or [])
    written = write_report(data, output, png_dir=png_dir, overwrite=overwrite)
    n_flagged = int((data.scores > data.threshold).sum()) if data.scores is not None else 0
    console.print(
        plain(
            f"Report on {len(data.paths)} images ({n_flagged} flagged at {data.threshold:.5g}, "
            f"{data.threshold_rule}) written to {written[0]}"
            + (f"; {len(written) - 1} PNG plots in {png_dir}" if png_dir else "")
        )
    )
    click.echo(str(written[0]))
    exit_partial(console, int(counts.get("unreadable", 0)), "scored", "reported")
