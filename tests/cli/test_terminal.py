"""Logs stay clean: with stderr not a terminal, no escape codes and no progress redraws."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import make_blob_images, write_folder


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aetool", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def test_summaries_are_plain_text_in_logs(tmp_path: Path) -> None:
    write_folder(tmp_path / "train" / "good", make_blob_images(32, seed=1))
    write_folder(tmp_path / "test" / "good", make_blob_images(6, seed=2))
    write_folder(tmp_path / "test" / "bad", 255 - make_blob_images(6, seed=3))
    model = tmp_path / "m.safetensors"
    runs = [
        _run("train", str(tmp_path / "train"), "-o", str(model), "--epochs", "2"),
        _run("score", str(tmp_path / "test"), "-m", str(model)),
        _run("denoise", str(tmp_path / "test"), str(tmp_path / "out"), "-m", str(model)),
        _run("score", str(tmp_path / "test"), "-m", str(model), env={"NO_COLOR": "1"}),
    ]
    for res in runs:
        assert res.returncode == 0, res.stderr
        assert "\x1b" not in res.stderr and "\r" not in res.stderr
        assert "\x1b" not in res.stdout
    train, score, denoise, _ = runs
    assert "Training summary" in train.stderr and "epoch 2/2" in train.stderr
    assert "ROC AUC" in score.stderr
    assert len(denoise.stdout.strip().splitlines()) == 1 + 12
    quiet = _run("score", str(tmp_path / "test"), "-m", str(model), "-q")
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert quiet.stdout == score.stdout
