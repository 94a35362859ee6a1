"""``aetool export``: each image's latent code, as CSV, JSON lines or NPY."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from aetool.cli.options import (
    batch_size_option,
    common_options,
    default_model,
    format_option,
    input_paths,
    model_option,
    overwrite_option,
    refuse_existing,
    shard_option,
    strict_option,
)

if TYPE_CHECKING:
    from rich.console import Console

    from aetool.cli.console import ItemProgress
    from aetool.data.inputs import ImageRef, InputSelection
    from aetool.models.file import LoadedModel
    from aetool.rows import LatentRow


@click.command("export", short_help="Write each image's latent code (CSV, JSONL or NPY).")
@click.argument("inputs", nargs=-1)
@model_option
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to this file instead of stdout (required for npy).",
)
@format_option(
    "csv", "jsonl", "npy",
    help="npy writes an (N, k) float32 array to -o and its rows' paths to a sibling .paths.csv.",
)  # fmt: skip
@overwrite_option()
@batch_size_option()
@shard_option()
@strict_option()
@common_options
def export_cmd(
    inputs: tuple[str, ...],
    model: Path | None,
    output: Path | None,
    fmt: str,
    overwrite: bool,
    batch_size: int,
    shard: tuple[int, int] | None,
    strict: bool,
    quiet: bool,
    device: str,
) -> None:
    """Encode images to latent codes: one row per image, `path,z0,...,z{k-1}`.

    A `label` column is added when the folder layout gives labels (a folder
    named good/normal/ok gives 0, its sibling folders 1). Rows stream to
    stdout unless -o is given. INPUT is files and folders; `-`, or no
    arguments with piped stdin, reads newline-separated paths. The model
    needs a vector latent (conv or dense).

    Examples:

    \b
        aetool export digits/ -m model.safetensors > codes.csv
        aetool export digits/ -f npy -o codes.npy
        aetool export big/ --shard 2/8 -o part-2.csv
    """
    from aetool.anomaly.labels import infer_labels
    from aetool.cli.console import ItemProgress, exit_partial, make_err_console, warn_skipped
    from aetool.data.inputs import select_inputs
    from aetool.devices import resolve_device
    from aetool.files import atomic_path, check_output, refuse_inputs_as_outputs
    from aetool.latents import require_vector_latent
    from aetool.models.file import load_model
    from aetool.rows import npy_index_path, write_latent_npy, write_latent_rows

    if fmt == "npy" and output is None:
        raise click.UsageError(
            "--format npy needs -o FILE.npy (binary output is not written to stdout)"
        )
    outputs = (
        [] if output is None else [output, *([npy_index_path(output)] if fmt == "npy" else [])]
    )
    for path in outputs:
        refuse_existing(path, overwrite)
    model_path = model or default_model()
    for path in outputs:
        check_output(path, reads=[model_path], overwrite=overwrite)
    console = make_err_console(quiet)
    loaded = load_model(model_path, device=resolve_device(device))
    require_vector_latent(loaded, "export")
    paths = input_paths(inputs, "export")
    sel = select_inputs(
        paths, shard=shard, strict=strict, on_missing=lambda m: warn_skipped(console, m)
    )
    refuse_inputs_as_outputs(outputs, (r.path for r in sel.found))
    labels_all = infer_labels([r.relpath for r in sel.found])
    has_labels = any(v is not None for v in labels_all)
    label_of = dict(zip((r.path for r in sel.found), labels_all, strict=True))
    failed: list[ImageRef] = []
    with ItemProgress(console, len(sel.refs), "encoding") as bar:
        rows = _encoded_rows(console, loaded, sel, label_of, batch_size, strict, failed, bar)
        if output is None:
            k = write_latent_rows(rows, fmt, sys.stdout, with_label=has_labels,
                                  latent_dim=_latent_dim(loaded))  # fmt: skip
        elif fmt == "npy":
            k, index_path = write_latent_npy(
                rows, output, with_label=has_labels, overwrite=overwrite
            )
        else:
            with (
                atomic_path(output, overwrite=overwrite) as tmp,
                open(tmp, "w", newline="", encoding="utf-8", errors="surrogateescape") as f,
            ):
                k = write_latent_rows(rows, fmt, f, with_label=has_labels,
                                      latent_dim=_latent_dim(loaded))  # fmt: skip
    for path in outputs:
        click.echo(str(path))
    _report(console, sel, failed, k, output, shard)
    exit_partial(console, len(failed) + len(sel.missing), "encoded", "exported")


def _latent_dim(loaded: LoadedModel) -> int:
    return int(loaded.model.arch_args().get("latent_dim", 0))


def _encoded_rows(
    console: Console,
    loaded: LoadedModel,
    sel: InputSelection,
    label_of: dict[Path, int | None],
    batch_size: int,
    strict: bool,
    failed: list[ImageRef],
    bar: ItemProgress,
) -> Iterator[LatentRow]:
    """Each image's (path, code, label), advancing the bar; unreadable ones go to ``failed``."""
    from aetool.cli.console import MAX_WARNINGS, warn
    from aetool.latents import encode_latents

    def on_error(ref: ImageRef, reason: str) -> None:
        failed.append(ref)
        if len(failed) <= MAX_WARNINGS:
            warn(console, f"skipped {ref.path}: {reason}")

    for ref, z in encode_latents(
        loaded, sel.refs, batch_size=batch_size, strict=strict, on_error=on_error
    ):
        yield str(ref.path), z, label_of[ref.path]
        bar.advance()


def _report(
    console: Console,
    sel: InputSelection,
    failed: list[Any],
    k: int,
    output: Path | None,
    shard: tuple[int, int] | None,
) -> None:
    from aetool.cli.console import MAX_WARNINGS, plain, warn

    n = len(sel.refs) - len(failed)
    if len(failed) > MAX_WARNINGS:
        warn(console, f"... and {len(failed) - MAX_WARNINGS} more unreadable files")
    where = f" to {output}" if output else ""
    skipped = len(failed) + len(sel.missing)
    console.print(
        plain(
            f"Exported {n} latent code(s) of dimension {k}{where}"
            + (f"; {skipped} unreadable or missing skipped" if skipped else "")
            + (f" (shard {shard[0]}/{shard[1]} of {len(sel.found)} images)" if shard else "")
        )
    )
    if n == 0 and sel.refs:
        raise click.ClickException("no image could be encoded")
