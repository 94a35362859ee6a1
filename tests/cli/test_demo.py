from __future__ import annotations

import csv
from pathlib import Path

from click.testing import CliRunner
from PIL import Image

from aetool.cli.main import cli
from aetool.models.file import load_model


def test_demo_runs_every_command(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    res = CliRunner().invoke(cli, ["demo", str(out), "--epochs", "3"])
    assert res.exit_code == 0, res.stderr
    assert res.stdout.strip() == str(out / "report.html")
    assert len(list((out / "digits").rglob("*.png"))) == 1797
    assert sorted(p.name for p in (out / "digits").iterdir()) == [str(d) for d in range(10)]
    assert load_model(out / "model.safetensors").metadata["training"]["epochs_run"] == 3
    assert load_model(out / "zeros-model.safetensors").metadata["training"]["noise"] is None
    # export, latent map, interpolation
    with open(out / "codes.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1797 and len(rows[0]) == 1 + 16
    assert Image.open(out / "latent-map.png").format == "PNG"
    strip = Image.open(out / "interpolation.png")
    assert strip.size[0] > 5 * strip.size[1]  # 7 frames side by side
    # denoise mirrors the noisy folder
    noisy = sorted(p.relative_to(out / "noisy") for p in (out / "noisy").rglob("*.png"))
    assert noisy == sorted(
        p.relative_to(out / "denoised") for p in (out / "denoised").rglob("*.png")
    )
    # scores: one row per test image, labels from test/good vs test/<digit>
    with open(out / "scores.csv") as fh:
        scores = list(csv.DictReader(fh))
    assert len(scores) == len(list((out / "anomaly" / "test").rglob("*.png")))
    assert {r["label"] for r in scores} == {"0", "1"}
    assert len(list((out / "heatmaps").rglob("*.png"))) == len(scores)
    html = (out / "report.html").read_text()
    assert 'id="latent"' in html and "data:image/png;base64," in html
    assert "what was produced" in res.stderr and "ROC AUC" in res.stderr
    # A second run reuses its own folder; a foreign non-empty folder is refused.
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    res = CliRunner().invoke(cli, ["demo", str(foreign)])
    assert res.exit_code == 1 and "not an aetool demo folder" in res.stderr
    assert (foreign / "keep.txt").read_text() == "mine"
