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
from aetool.cli.export_model import export_model_cmd
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
        _bytes_safe_streams()
        try:
            return super().invoke(ctx)
        except AetoolError as exc:
            raise click.ClickException(str(exc)) from None
        except BrokenPipeError:
            _quiet_broken_pipe()
        except OSError as exc:  # a full disk or stdout on /dev/full: one line, no traceback
            raise click.ClickException(os_error_line(exc)) from None
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)


def os_error_line(exc: OSError) -> str:
    """One line for an operating-system error: what failed, on which file, and why."""
    from aetool.files import display

    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is not None:
        return f"{display(exc.filename)}: {reason}"
    return f"cannot write the output: {reason}"


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
    report_cmd, info_cmd, demo_cmd, export_model_cmd,
):  # fmt: skip
    if _command is not info_cmd:  # info's --config prints a config instead of reading one
        add_config_option(_command)
    cli.add_command(_command)


def main() -> None:
    """Console-script entry point."""
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    _check_std_streams()
    code: Any = 0
    try:
        cli(prog_name="aetool")
    except SystemExit as exc:
        code = exc.code
    _flush_stdout(code)
    sys.exit(code)


def _check_std_streams() -> None:
    """A closed stdin reads as empty; a closed stdout (where the data goes) is a usage error."""
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    if sys.stdin is None:
        sys.stdin = open(os.devnull)  # noqa: SIM115
    if sys.stdout is None:
        click.echo(
            "Error: standard output is closed; aetool writes its data there: "
            "redirect it to a file or /dev/null",
            err=True,
        )
        sys.exit(2)


def _bytes_safe_streams() -> None:
    """Paths may be any bytes (names that are not UTF-8, junk piped in): stdin and stdout
    carry them through unchanged (surrogate escapes), stderr shows them as escapes."""
    for stream, errors in (
        (sys.stdin, "surrogateescape"),
        (sys.stdout, "surrogateescape"),
        (sys.stderr, "backslashreplace"),
    ):
        try:
            stream.reconfigure(errors=errors)  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            pass  # not a text stream that can change (a test's buffer); left as it is


def _flush_stdout(code: Any) -> None:
    """Flush stdout now, so a full disk is one line and an exit status, not an ignored error.

    When the command already failed, its own message stands and the flush stays quiet.
    """
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_broken_pipe()
    except OSError as exc:
        # Point stdout at devnull so the interpreter's own flush at exit cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        if code in (0, None):
            click.echo(f"Error: cannot write to standard output: {exc.strerror or exc}", err=True)
            sys.exit(1)
