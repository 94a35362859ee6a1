"""`aetool --help`, `--version`, every command's help and shell completion import no torch.

Run in a fresh interpreter each (the test process has torch loaded already); the
time they take is measured in benchmarks/startup.py, not here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "numpy", "PIL", "scipy", "sklearn", "matplotlib", "skimage", "rich")

PROBE = """
import json, sys
from aetool.cli import cli
try:
    cli(sys.argv[1:], prog_name="aetool")
except SystemExit:
    pass
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})), file=sys.stderr)
"""


def _top_modules(*args: str, env: dict[str, str] | None = None) -> set[str]:
    res = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})},
    )  # fmt: skip
    return set(json.loads(res.stderr.strip().splitlines()[-1]))


COMMANDS = [
    "train", "score", "denoise", "export", "interpolate", "latent-map", "report", "info", "demo",
]  # fmt: skip


@pytest.mark.parametrize(
    "args",
    [["--help"], ["--version"], *([c, "--help"] for c in COMMANDS)],
    ids=lambda a: " ".join(a),
)
def test_help_and_version_import_no_heavy_library(args: list[str]) -> None:
    loaded = _top_modules(*args)
    assert "aetool" in loaded and "click" in loaded  # the probe did run the CLI
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_shell_completion_imports_no_heavy_library() -> None:
    env = {"_AETOOL_COMPLETE": "bash_complete", "COMP_WORDS": "aetool score -t 3 --sh",
           "COMP_CWORD": "4"}  # fmt: skip
    res = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60,
        env={**os.environ, **env},
    )  # fmt: skip
    assert "--shard" in res.stdout  # completion answered
    loaded = set(json.loads(res.stderr.strip().splitlines()[-1]))
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_train_help_lists_the_registered_architectures() -> None:
    from aetool.cli.train import ARCHITECTURES
    from aetool.models.registry import list_models

    assert list(ARCHITECTURES) == list(list_models())
