"""``aetool info``: show a model file's metadata."""

from __future__ import annotations

import json
from pathlib import Path

import click

from aetool.cli.console import make_err_console
from aetool.cli.options import default_model
from aetool.cli.tables import print_model_info
from aetool.models.file import read_metadata


@click.command("info")
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the metadata as JSON on stdout.")
def info_cmd(model: Path | None, as_json: bool) -> None:
    """Show a model file's metadata (readable on stderr, or --json on stdout)."""
    path = model or default_model()
    meta = read_metadata(path)
    if as_json:
        click.echo(json.dumps(meta, indent=2))
        return
    print_model_info(make_err_console(), str(path), meta)
