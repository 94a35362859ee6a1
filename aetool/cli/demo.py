"""``aetool demo``: the whole toolkit on scikit-learn's handwritten digits."""

from __future__ import annotations

from pathlib import Path

import click

from aetool.cli.options import common_options, overwrite_option


@click.command("demo", short_help="Run the whole toolkit on handwritten digits (no arguments).")
@click.argument("directory", required=False, default="aetool-demo", type=click.Path(path_type=Path))
@click.option("--epochs", type=click.IntRange(1), default=None, help="Override training epochs.")
@overwrite_option("Replace the files of an earlier demo in DIRECTORY.")
@common_options
def demo_cmd(
    directory: Path, epochs: int | None, overwrite: bool, quiet: bool, device: str
) -> None:
    """Run the whole toolkit on scikit-learn's handwritten digits (no arguments needed).

    Writes the digits as PNG files into DIRECTORY (default ./aetool-demo), trains,
    exports, denoises, scores and writes an HTML report there; prints the report's path.

    Examples:

    \b
        aetool demo
        aetool demo /tmp/try-aetool --epochs 5
    """
    from aetool.cli.console import RichTrainProgress, make_err_console, plain
    from aetool.cli.tables import print_mapping
    from aetool.demo import run_demo

    console = make_err_console(quiet)
    summary = run_demo(
        directory,
        console=console,
        device=device,
        epochs=epochs,
        progress=RichTrainProgress,
        overwrite=overwrite,
    )
    print_mapping(console, "aetool demo: what was produced", summary)
    console.print(plain(f"Open {directory / 'report.html'} in a browser to see it all."))
    click.echo(str(directory / "report.html"))
