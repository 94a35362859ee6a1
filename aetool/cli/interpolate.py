"""``aetool interpolate``: decode the straight line between two images' latent codes."""

from __future__ import annotations

from pathlib import Path

import click

from aetool.cli.options import (
    common_options,
    default_model,
    model_option,
    overwrite_option,
    png_output_option,
    refuse_existing,
)


@click.command("interpolate", short_help="Decode the straight line between two images' codes.")
@click.argument("a", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("b", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@model_option
@click.option(
    "--steps", type=click.IntRange(2, 256), default=7, show_default=True,
    help="Frames, endpoints included (2-256).",
)  # fmt: skip
@png_output_option("interpolation.png")
@click.option(
    "--min-height", type=click.IntRange(1), default=64, show_default=True,
    help="Enlarge small images (nearest neighbour) to at least this height.",
)  # fmt: skip
@overwrite_option("Replace an existing output file.")
@common_options
def interpolate_cmd(
    a: Path,
    b: Path,
    model: Path | None,
    steps: int,
    output: Path,
    min_height: int,
    overwrite: bool,
    quiet: bool,
    device: str,
) -> None:
    """Encode images A and B, decode evenly spaced points between their codes, write a PNG strip.

    The strip shows the real A (as the model sees it), a grey separator, the
    frames (the first is the reconstruction of A, the last that of B), a grey
    separator and the real B. Prints the PNG's path.

    Examples:

    \b
        aetool interpolate digits/3/0001.png digits/8/0002.png -m model.safetensors
        aetool interpolate a.png b.png --steps 11 -o morph.png
    """
    from aetool.cli.console import make_err_console, plain
    from aetool.devices import resolve_device
    from aetool.files import atomic_path, check_output, refuse_inputs_as_outputs
    from aetool.latents import interpolation_strip
    from aetool.models.file import load_model

    refuse_existing(output, overwrite)
    refuse_inputs_as_outputs([output], [a, b])
    model_path = model or default_model()
    check_output(output, inputs=[a, b], reads=[model_path], overwrite=overwrite)
    console = make_err_console(quiet)
    loaded = load_model(model_path, device=resolve_device(device))
    img = interpolation_strip(loaded, a, b, steps, min_height=min_height)
    with atomic_path(output, overwrite=overwrite) as tmp:
        img.save(tmp, format="PNG")
    console.print(plain(f"Wrote {steps} frames ({img.width}x{img.height} px) from {a} to {b}"))
    click.echo(str(output))
