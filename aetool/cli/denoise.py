"""``aetool denoise``: denoise images into a folder, keeping formats and modes."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from aetool.cli.options import (
    batch_size_option,
    common_options,
    format_option,
    input_paths,
    overwrite_option,
    shard_option,
    strict_option,
)

if TYPE_CHECKING:
    from rich.console import Console

    from aetool.cli.console import ItemProgress
    from aetool.denoise.pipeline import DenoiseResult, DenoiseSummary
    from aetool.rows import RowWriter


@click.command("denoise", short_help="Denoise images into a folder, keeping formats and modes.")
@click.argument("paths", nargs=-1, required=True, metavar="[INPUT]... OUT")
@click.option(
    "-m",
    "--model",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Model file (default: the bundled grayscale denoiser).",
)
@click.option(
    "--reference",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder of clean originals at the same relative paths: adds PSNR and SSIM columns.",
)
@overwrite_option()
@click.option(
    "--tile", type=click.IntRange(8), default=256, show_default=True,
    help="Tile side for fully convolutional models (fixed-size models use their input size).",
)  # fmt: skip
@click.option(
    "--overlap", type=click.IntRange(0), default=32, show_default=True,
    help="Overlap between tiles in pixels (at most half a tile is used).",
)  # fmt: skip
@batch_size_option(
    8, "Tiles per forward pass; images of up to batch-size x tile^2 pixels run whole."
)
@click.option(
    "--ensemble", type=click.Choice(["1", "2", "4", "8"]), default="1", show_default=True,
    help="Average over N rotations/flips of each image: N times slower, a little cleaner "
    "for models trained on rotated patches (gains in BENCHMARKS.md).",
)  # fmt: skip
@click.option(
    "--refine", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
    help="Refine the model's output by collaborative Wiener filtering of the noisy image "
    "(BM3D's second stage, the model's output as its guide), blended with it, on planes "
    "whose estimated noise is under sigma 30/255: a little cleaner on photos, most on fine "
    "texture, for extra CPU time (gains and cost in BENCHMARKS.md). It assumes "
    "Gaussian-like noise; auto: on for models trained on Gaussian noise (the bundled one), "
    "except for JPEGs with subsampled colour, whose noise is correlated.",
)  # fmt: skip
@click.option(
    "--color", type=click.Choice(["auto", "opponent", "channels"]), default="auto",
    show_default=True,
    help="How a grayscale model treats colour images: in an opponent colour space "
    "(luminance + 2 colour differences; cleaner on photos) or R, G, B one by one "
    "(for unrelated channels such as fluorescence stains, and JPEGs with subsampled "
    "colour); auto: channels for such JPEGs, opponent otherwise.",
)  # fmt: skip
@format_option("csv", "jsonl")
@shard_option()
@strict_option("Fail on the first unreadable or unwritable image.")
@common_options
def denoise_cmd(
    paths: tuple[str, ...],
    model: Path | None,
    reference: Path | None,
    overwrite: bool,
    tile: int,
    overlap: int,
    batch_size: int,
    ensemble: str,
    refine: str,
    color: str,
    fmt: str,
    shard: tuple[int, int] | None,
    strict: bool,
    quiet: bool,
    device: str,
) -> None:
    """Denoise every image under INPUT... and write it to OUT at the same relative path.

    The last argument is the output folder. Inputs are files and folders; `-`,
    or only OUT with paths piped on stdin, reads newline-separated paths.
    Outputs keep the input's format, mode, bit depth, alpha and size (JPEG
    and lossy WebP at quality 95). Existing outputs are left alone unless
    --overwrite (reported with status `exists`). OUT may not be, contain or
    lie inside an input folder.

    stdout: one row per image: src, dst, sigma_est (estimated noise standard
    deviation of the input, in [0, 1] units: x255 for 8-bit levels), with
    --reference psnr_in, psnr_out, ssim_in, ssim_out, then status
    (written | exists | error) and error. The summary on stderr says what
    ran (the model alone, or the model then the refinement).

    Examples:

    \b
        aetool denoise noisy/ clean/
        aetool denoise scan.tif out/ --refine off   # the model alone, faster
        aetool denoise noisy/ out/ --reference originals/ > quality.csv
        find raw/ -name '*.png' | aetool denoise - out/ --shard 1/4
    """
    from aetool.cli.console import ItemProgress, exit_partial, make_err_console, warn, warn_skipped
    from aetool.cli.tables import print_denoise_summary
    from aetool.data.inputs import select_inputs
    from aetool.denoise.pipeline import DenoiseOptions, denoise_images
    from aetool.denoise.suitability import denoiser_doubts
    from aetool.devices import resolve_device
    from aetool.files import check_output_dir
    from aetool.rows import RowWriter

    if overlap >= tile:
        raise click.UsageError(f"--overlap ({overlap}) must be smaller than --tile ({tile})")
    *inputs, out_dir = paths
    console = make_err_console(quiet)
    if out_dir == "-":
        raise click.UsageError("the last argument is the output folder; `-` cannot be one")
    in_paths = input_paths(tuple(inputs), "denoise")
    sel = select_inputs(
        in_paths, shard=shard, strict=strict, on_missing=lambda m: warn_skipped(console, m)
    )
    check_output_dir(out_dir, in_paths)
    for line in denoiser_doubts(model) if model is not None else []:
        warn(console, line)
    options = DenoiseOptions(
        overwrite=overwrite, reference=reference, tile=tile, overlap=overlap,
        batch_size=batch_size, device=device, strict=strict, ensemble=int(ensemble),
        color=color, refine={"on": True, "off": False}.get(refine, "auto"),
    )  # fmt: skip
    results = denoise_images(sel.refs, out_dir, model, options)
    t0 = time.perf_counter()
    try:
        with ItemProgress(console, len(sel.refs), "denoising") as bar:
            summary, warned = _write_rows(
                console, results, RowWriter(fmt, sys.stdout), reference, bar
            )
    finally:  # stop the worker threads now, even when stdout fails (a full disk)
        results.close()
    seconds = time.perf_counter() - t0
    problems = summary.exists + summary.errors + summary.missing_reference
    if warned < problems:
        warn(console, f"... and {problems - warned} more (see the status column)")
    failed = summary.errors + len(sel.missing)
    shard_note = f" (shard {shard[0]}/{shard[1]} of {len(sel.found)} found)" if shard else ""
    rate = summary.written / seconds if seconds > 0 else 0.0
    extra = f", ensemble {ensemble}" if ensemble != "1" else ""
    print_denoise_summary(
        console, summary, images=f"{len(sel.refs)}{shard_note}", out_dir=out_dir, failed=failed,
        with_reference=reference is not None, method=_method_line(model, refine, summary),
        time_line=f"{seconds:.1f} s, {rate:,.1f} images/s on {resolve_device(device)}{extra}",
    )  # fmt: skip
    if summary.written == 0 and summary.errors and not summary.exists:
        raise click.ClickException("no image could be denoised")
    exit_partial(console, failed, "denoised", "written")


def _method_line(model: Path | None, refine: str, summary: DenoiseSummary) -> str:
    """What ran, plainly: which model, and on how many images the refinement ran."""
    name = "the bundled grayscale denoiser" if model is None else str(model)
    if summary.refined:
        done = "all" if summary.refined == summary.written else str(summary.refined)
        line = (
            f"{name}, then collaborative Wiener refinement (BM3D's second stage) on {done} of "
            f"{summary.written} image(s)"
        )
    else:
        line = f"{name} alone, no refinement"
    if refine == "auto" and summary.refined < summary.written:
        line += (
            " (--refine auto refines only for models trained on Gaussian noise, below an "
            "estimated noise of 30/255, on planes of 16 px or more, and not JPEGs with "
            "subsampled colour)"
        )
    elif refine == "off":
        line += " (--refine off)"
    return line


def _write_rows(
    console: Console,
    results: Iterable[DenoiseResult],
    writer: RowWriter,
    reference: Path | None,
    bar: ItemProgress,
) -> tuple[DenoiseSummary, int]:
    """Stream one row per result, warn about the first problems; return the tally and
    the number of warnings printed."""
    from aetool.cli.console import MAX_WARNINGS, warn
    from aetool.denoise.pipeline import DenoiseSummary

    summary = DenoiseSummary()
    warned = 0
    # The header comes first, even for an empty shard (a batch job's `head -n 1` needs it).
    writer.write_header(
        ["src", "dst", "sigma_est"]
        + (["psnr_in", "psnr_out", "ssim_in", "ssim_out"] if reference is not None else [])
        + ["status", "error"]
    )
    for r in results:
        summary.add(r)
        row: dict[str, Any] = {
            "src": str(r.ref.path),
            "dst": "" if r.dst is None else str(r.dst),
            "sigma_est": r.sigma_est,
        }
        if reference is not None:
            row.update(psnr_in=r.psnr_in, psnr_out=r.psnr_out, ssim_in=r.ssim_in,
                       ssim_out=r.ssim_out)  # fmt: skip
        row.update(status=r.status, error=r.error or "")
        writer.write(row)
        if r.error and warned < MAX_WARNINGS:
            what = "not overwritten" if r.status == "exists" else r.error
            where = r.dst if r.status == "exists" else r.ref.path
            warn(console, f"{where}: {what}")
            warned += 1
        bar.advance()
    writer.close()
    return summary, warned
