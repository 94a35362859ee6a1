from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from aetool.cli import cli
from aetool.modelfile import load_model


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    res = CliRunner().invoke(cli, ["demo", str(out), "--epochs", "2"])
    assert res.exit_code == 0, res.stderr
    assert res.stdout.strip() == str(out / "model.safetensors")
    assert len(list((out / "digits").rglob("*.png"))) == 1797
    assert sorted(p.name for p in (out / "digits").iterdir()) == [str(d) for d in range(10)]
    assert load_model(out / "model.safetensors").metadata["training"]["epochs_run"] == 2
    assert "what was produced" in res.stderr
    # A second run reuses its own folder; a foreign non-empty folder is refused.
    assert CliRunner().invoke(cli, ["demo", str(out), "--epochs", "1"]).exit_code == 0
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    res = CliRunner().invoke(cli, ["demo", str(foreign)])
    assert res.exit_code == 1 and "not an aetool demo folder" in res.stderr
    assert (foreign / "keep.txt").read_text() == "mine"
