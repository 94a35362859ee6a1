"""``aetool export-model``: write a model as ONNX or TorchScript for deployment."""

from __future__ import annotations

from pathlib import Path

import click

from aetool.cli.options import (
    default_model,
    overwrite_option,
    refuse_existing,
    score_kind_option,
    threshold_option,
)

_SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}


@click.command("export-model", short_help="Write a model as ONNX or TorchScript for deployment.")
@click.argument("model", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--format", "fmt", type=click.Choice(["onnx", "torchscript"]), default="onnx",
    show_default=True, help="onnx (needs the onnx package: pip install 'aetool[export]') or torchscript.",
)  # fmt: skip
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="File to write [default: the model's name with .onnx or .pt].",
)  # fmt: skip
@score_kind_option("Score the graph computes (anomaly models).")
@threshold_option("Threshold rule recorded in the file's metadata, as in aetool score.")
@overwrite_option("Replace an existing output file.")
@click.option("-q", "--quiet", is_flag=True, help="No summary on stderr.")
def export_model_cmd(
    model: Path | None,
    fmt: str,
    output: Path | None,
    score_kind: str,
    threshold: str,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Write MODEL as an ONNX or TorchScript graph that runs without aetool.

    The graph takes 'image': (N, C, H, W) float32 in [0, 1], preprocessed
    as the model file describes (channels, size and resize mode are in the
    metadata). Anomaly models return reconstruction, anomaly_map (N, H, W)
    and score (N,); an image is an anomaly when score > threshold. Denoisers
    return the denoised image (one pass, without tiling or refinement).
    Preprocessing, score kind and threshold are stored as ONNX
    metadata_props or TorchScript extra files. Prints the file's path.

    \b
    Example:
        aetool export-model model.safetensors -o model.onnx
        python -c "import onnxruntime as ort; print(ort.InferenceSession('model.onnx').get_modelmeta().custom_metadata_map['aetool.threshold'])"
    """
    from aetool.cli.console import make_err_console, plain
    from aetool.files import check_output
    from aetool.models.export import export_model

    path = model or default_model()
    target = output or path.with_suffix(_SUFFIX[fmt])
    refuse_existing(target, overwrite)
    check_output(target, reads=[path], overwrite=overwrite)
    written = export_model(path, target, fmt, score_kind=score_kind, threshold=threshold)
    make_err_console(quiet).print(plain(f"Wrote {fmt} graph of {path} to {written}"))
    click.echo(str(written))
