"""``aetool latent-map``: a scatter plot of latent codes coloured by folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from aetool.cli.options import (
    batch_size_option,
    common_options,
    default_model,
    input_paths,
    model_option,
    overwrite_option,
    png_output_option,
    refuse_existing,
    strict_option,
)


@click.command("latent-map", short_help="Scatter plot of latent codes coloured by folder label.")
@click.argument("inputs", nargs=-1)
@model_option
@png_output_option("latent-map.png")
@click.option("--title", default=None, help="Plot title (default: the model file name).")
@overwrite_option("Replace an existing output file.")
@batch_size_option()
@strict_option()
@common_options
def latent_map_cmd(
    inputs: tuple[str, ...],
    model: Path | None,
    output: Path,
    title: str | None,
    overwrite: bool,
    batch_size: int,
    strict: bool,
    quiet: bool,
    device: str,
) -> None:
    """Plot the latent codes of images in 2-D (wider codes projected with PCA).

    Points are coloured by folder: normal/anomaly when the layout has a
    good/normal/ok folder, else by each image's first folder under its
    input (for example the digit of `digits/3/0001.png`). Prints the PNG's path.

    Examples:

    \b
        aetool latent-map digits/ -m model.safetensors
        aetool latent-map mvtec/bottle/test -o bottle-latents.png --title bottle
    """
    import numpy as np

    from aetool.cli.console import ItemProgress, exit_partial, make_err_console, warn_skipped
    from aetool.data.inputs import Skipped, select_inputs
    from aetool.devices import resolve_device
    from aetool.files import atomic_path, check_output, refuse_inputs_as_outputs
    from aetool.latents import encode_latents, folder_labels, latent_map, require_vector_latent
    from aetool.models.file import load_model

    refuse_existing(output, overwrite)
    model_path = model or default_model()
    check_output(output, reads=[model_path], overwrite=overwrite)
    console = make_err_console(quiet)
    loaded = load_model(model_path, device=resolve_device(device))
    require_vector_latent(loaded, "latent-map")
    paths = input_paths(inputs, "latent-map")
    sel = select_inputs(paths, strict=strict, on_missing=lambda m: warn_skipped(console, m))
    refuse_inputs_as_outputs([output], (r.path for r in sel.refs))
    labels_all = folder_labels([r.relpath for r in sel.refs])
    label_of = dict(zip((r.path for r in sel.refs), labels_all, strict=True))
    skipped: list[Skipped] = []
    codes: list[Any] = []
    labels: list[Any] = []
    with ItemProgress(console, len(sel.refs), "encoding") as bar:
        for ref, z in encode_latents(
            loaded, sel.refs, batch_size=batch_size, strict=strict,
            on_error=lambda r, why: skipped.append(Skipped(str(r.path), why)),
        ):  # fmt: skip
            codes.append(z)
            labels.append(label_of[ref.path])
            bar.advance()
    warn_skipped(console, skipped)
    if not codes:
        raise click.ClickException("no image could be encoded")
    png = latent_map(np.stack(codes), labels, title or f"Latent space of {loaded.path.name}")
    with atomic_path(output, overwrite=overwrite) as tmp:
        tmp.write_bytes(png)
    console.print(f"Mapped {len(codes)} latent code(s) of dimension {len(codes[0])}")
    click.echo(str(output))
    exit_partial(console, len(skipped) + len(sel.missing), "encoded", "mapped")
