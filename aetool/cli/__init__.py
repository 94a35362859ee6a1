"""The ``aetool`` command line: a thin layer of Click commands over the library."""

from aetool.cli.main import cli, main

__all__ = ["cli", "main"]
