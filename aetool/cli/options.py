"""Options shared by several commands, one decorator each (as sqlite-utils' ``output_options``).

A shared option is declared once, so its name, type, default and checks
cannot drift between commands; a command passes its own help text where the
option means something slightly different there (``--batch-size`` counts
tiles in ``denoise``, images elsewhere).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from importlib import import_module
from pathlib import Path
from typing import Any, TypeVar

import click

from aetool.data.inputs import InputArgumentError, NoInputsError, read_input_args
from aetool.errors import AetoolError

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_MODEL = "aetool-model.safetensors"


def default_model() -> Path:
    """The model file when -m is not given: $AETOOL_MODEL, else the default of `aetool train`."""
    return Path(os.environ.get("AETOOL_MODEL") or DEFAULT_MODEL)


#: ``-m/--model``: the model file, default $AETOOL_MODEL, else the default of `aetool train`.
model_option = click.option(
    "-m",
    "--model",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"Model file [default: $AETOOL_MODEL, else {DEFAULT_MODEL}, as written by aetool train].",
)


def _check_device(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """auto, cpu, cuda or cuda:N (whether that CUDA device exists is checked when used)."""
    spec = value.strip().lower()
    index = spec.partition(":")[2]
    if spec not in ("auto", "cpu", "cuda") and not (spec.startswith("cuda:") and index.isdigit()):
        raise click.BadParameter(f"{value!r} is not auto, cpu, cuda or cuda:N")
    return value


def usage_check(
    parse: Callable[[Any], Any] | str,
) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A Click callback that runs ``parse`` on the value: a ConfigError is a usage error.

    ``parse`` may be ``"module:function"``, imported only when a value is checked, so that
    ``--help`` and completion never import the library (torch) behind it.
    """

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None or ctx.resilient_parsing:
            return value
        fn = parse
        if isinstance(fn, str):
            module, _, name = fn.partition(":")
            fn = getattr(import_module(module), name)
        try:
            fn(value)
        except AetoolError as exc:
            raise click.BadParameter(str(exc)) from None
        return value

    return callback


def _finite_positive(value: float) -> None:
    if not (value > 0 and value != float("inf")):
        raise AetoolError(f"{value} is not a positive finite number")


#: Callback: a learning rate (or any rate) that is a positive, finite number.
check_positive = usage_check(_finite_positive)


def common_options(f: F) -> F:
    """--quiet and --device, shared by every command that computes."""

    @click.option("-q", "--quiet", is_flag=True, help="No progress or summary on stderr.")
    @click.option(
        "--device",
        default="auto",
        show_default=True,
        callback=_check_device,
        help="auto, cpu, cuda or cuda:N (auto picks CUDA when present).",
    )
    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return f(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def overwrite_option(help: str = "Replace existing output files.") -> Callable[[F], F]:
    return click.option("--overwrite", is_flag=True, help=help)


def strict_option(help: str = "Fail on the first unreadable image.") -> Callable[[F], F]:
    return click.option("--strict", is_flag=True, help=help)


def batch_size_option(default: int = 64, help: str | None = None) -> Callable[[F], F]:
    return click.option(
        "--batch-size", type=click.IntRange(1), default=default, show_default=True, help=help
    )


def format_option(*choices: str, short: bool = False, help: str | None = None) -> Callable[[F], F]:
    """``--format`` (and ``-f`` with ``short``) among ``choices``, stored as ``fmt``."""
    names = ("-f", "--format") if short else ("--format",)
    return click.option(
        *names, "fmt", type=click.Choice(list(choices)), default=choices[0], show_default=True,
        help=help,
    )  # fmt: skip


def _parse_shard(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if ctx.resilient_parsing:  # shell completion: parse nothing it does not need
        return None
    from aetool.data.shards import parse_shard

    try:
        return parse_shard(value)
    except AetoolError as exc:
        raise click.BadParameter(str(exc)) from None


def shard_option(
    help: str = "Process only shard I of N (disjoint, stable across runs).",
) -> Callable[[F], F]:
    """``--shard I/N``, parsed to ``(I, N)`` (a bad value is a usage error)."""
    return click.option("--shard", default=None, metavar="I/N", callback=_parse_shard, help=help)


def _check_threshold(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if ctx.resilient_parsing:  # shell completion: no numpy for a Tab
        return value
    from aetool.anomaly.thresholds import parse_threshold

    try:
        spec = parse_threshold(value)
    except AetoolError as exc:
        raise click.BadParameter(str(exc)) from None
    if spec.kind == "value" and spec.param is not None and _looks_like_k(spec.param):
        k = int(spec.param)
        click.echo(
            f"hint: -t {value} is an absolute score threshold, and scores are rarely above 1; "
            f"for mean + {k} standard deviations of the validation scores write -t {k}sigma",
            err=True,
        )
    return value


def _looks_like_k(value: float) -> bool:
    """A whole number from 1 to 10: more likely a K of Ksigma than a score."""
    return value == int(value) and 1 <= value <= 10


def threshold_option(help: str) -> Callable[[F], F]:
    """``-t/--threshold``: auto, a number, pNN or Ksigma (a bad value is a usage error)."""
    return click.option(
        "-t", "--threshold", default="auto", show_default=True, callback=_check_threshold,
        help=help,
    )  # fmt: skip


def masks_option(f: F) -> F:
    """``--masks DIR``: ground-truth masks for pixel metrics (score and report)."""
    return click.option(
        "--masks",
        "masks_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Folder of ground-truth masks mirroring the images (default: MVTec ground_truth/).",
    )(f)


def labels_option(f: F) -> F:
    """``--labels FILE``: a CSV of path,label that must exist."""
    return click.option(
        "--labels",
        "labels_path",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None,
        help="CSV with path,label columns; replaces labels from the folder layout.",
    )(f)


def no_labels_option(f: F) -> F:
    """``--no-labels``: take no labels from folder names (no evaluation, no label column)."""
    return click.option(
        "--no-labels",
        is_flag=True,
        help="Take no labels from folder names (no label column, no evaluation).",
    )(f)


def score_kind_option(help: str | None = None) -> Callable[[F], F]:
    return click.option(
        "--score", "score_kind", type=click.Choice(["auto", "model", "mse", "ssim", "max-local"]),
        default="auto",
        show_default=True, help=help,
    )  # fmt: skip


def _png_output(ctx: click.Context, param: click.Parameter, path: Path) -> Path:
    """-o of a picture command: a .png file name (the picture is always PNG)."""
    if path.suffix.lower() != ".png":
        raise click.BadParameter(f"{path}: the picture is written as PNG; use a .png name")
    return path


def png_output_option(default: str) -> Callable[[F], F]:
    return click.option(
        "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=default,
        show_default=True, callback=_png_output,
    )  # fmt: skip


# ---------------------------------------------------------------------------
# checks of arguments that need the file system or stdin (usage errors, exit 2)


def stdin_is_terminal() -> bool:
    """Whether stdin is an interactive terminal (tests monkeypatch this)."""
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def input_paths(inputs: tuple[str, ...], command: str = "score") -> list[str]:
    """INPUTs, with ``-`` (or no INPUT and piped stdin) read as newline-separated paths."""
    try:
        return read_input_args(inputs, sys.stdin, stdin_is_terminal=stdin_is_terminal())
    except NoInputsError:
        raise click.UsageError(
            f"pass image files or folders (for example `aetool {command} images/`), "
            f"or pipe newline-separated paths: `find images/ -name '*.png' | aetool {command}`"
        ) from None
    except InputArgumentError as exc:
        raise click.UsageError(str(exc)) from None


def refuse_existing(path: Path, overwrite: bool) -> None:
    """An existing output file is replaced only with --overwrite."""
    if path.exists() and not overwrite:
        raise click.UsageError(
            f"{path} exists; pass --overwrite to replace it, or -o to write elsewhere"
        )
