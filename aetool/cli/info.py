"""``aetool info``: show a model file's metadata.

What ``info`` prints is its output, so it goes to stdout (``info M > f`` writes
f, as ``pip show`` does): a readable table by default, ``--json`` for programs,
``--config`` for the TOML options that reproduce the model's training.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from aetool.cli.options import default_model


@click.command("info", short_help="Show a model file's metadata (table, --json or --config).")
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the metadata as JSON.")
@click.option(
    "--config",
    "as_config",
    is_flag=True,
    help="Print the TOML config that reproduces the model's training (aetool train --config FILE).",
)
def info_cmd(model: Path | None, as_json: bool, as_config: bool) -> None:
    """Show a model file's metadata on stdout: a readable table, --json or --config.

    MODEL defaults to $AETOOL_MODEL, else aetool-model.safetensors.

    Examples:

    \b
        aetool info model.safetensors
        aetool info model.safetensors --json | jq .validation.summary
        aetool info model.safetensors --config > train.toml
        aetool train --config train.toml -o again.safetensors
    """
    from aetool.cli.config import training_toml
    from aetool.models.file import read_metadata

    if as_json and as_config:
        raise click.UsageError("--json and --config exclude each other")
    path = model or default_model()
    meta = read_metadata(path)
    if as_json:
        click.echo(json.dumps(meta, indent=2))
    elif as_config:
        click.echo(training_toml(meta, str(path)), nl=False)
    else:
        _print_table(str(path), meta)


def _print_table(title: str, meta: dict[str, object]) -> None:
    import os

    from rich.console import Console

    from aetool.cli.tables import print_model_info

    console = Console(file=sys.stdout, highlight=False, no_color=bool(os.environ.get("NO_COLOR")))
    if not console.is_terminal:
        console.width = 120  # a file or pipe: wide enough that values are not folded
    print_model_info(console, title, meta)
