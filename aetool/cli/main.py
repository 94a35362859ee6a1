"""The ``aetool`` command group: library errors become one-line messages, a closed pipe ends quietly.

Each command lives in its own module (``aetool/cli/<command>.py``): options
(shared ones from :mod:`aetool.cli.options`), one library call, rendering
(:mod:`aetool.cli.console`, :mod:`aetool.cli.tables`). Data goes to stdout;
progress, tables, warnings and errors go to stderr.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import click

from aetool import __version__
from aetool.cli.config import add_config_option
from aetool.cli.demo import demo_cmd
from aetool.cli.denoise import denoise_cmd
from aetool.cli.export import export_cmd
from aetool.cli.info import info_cmd
from aetool.cli.interpolate import interpolate_cmd
from aetool.cli.latent_map import latent_map_cmd
from aetool.cli.report import report_cmd
from aetool.cli.score import score_cmd
from aetool.cli.train import train_cmd
from aetool.errors import AetoolError


class AetoolGroup(click.Group):
    """Turns library errors into one-line messages, and ends quietly on a closed pipe."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AetoolError as exc:
            raise click.ClickException(str(exc)) from None
        except BrokenPipeError:
            _quiet_broken_pipe()
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)


def _quiet_broken_pipe() -> None:
    # Python flushes stdout at exit; point it at devnull so that flush cannot fail again.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(0)


@click.group(cls=AetoolGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aetool")
def cli() -> None:
    """Anomaly detection and denoising with autoencoders.

    Train on a folder of normal images, then score, denoise or export. Data is
    written to stdout (CSV by default); progress and reports go to stderr.

    Every command takes --config FILE (TOML) for its options; see
    `aetool COMMAND --help` for examples.

    Exit codes: 0 success, 1 error, 2 bad usage, 3 anomalies found (score
    --fail-on-anomaly), 4 some inputs failed and the others were done,
    130 interrupted.
    """


for _command in (
    train_cmd, score_cmd, denoise_cmd, export_cmd, interpolate_cmd, latent_map_cmd,
    report_cmd, info_cmd, demo_cmd,
):  # fmt: skip
    if _command is not info_cmd:  # info's --config prints a config instead of reading one
        add_config_option(_command)
    cli.add_command(_command)


def main() -> None:
    """Console-script entry point."""
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    cli(prog_name="aetool")
