from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from conftest import make_blob_images, write_folder
from PIL import Image

from aetool.cli.main import cli


def test_report_command_writes_one_self_contained_file(tmp_path: Path) -> None:
    write_folder(tmp_path / "train" / "good", make_blob_images(40, seed=1))
    write_folder(tmp_path / "test" / "good", make_blob_images(10, seed=2))
    bad = make_blob_images(10, seed=3)
    bad[:, 2:6, 2:12] = 255  # a bright scratch
    write_folder(tmp_path / "test" / "scratch", bad)
    runner = CliRunner()
    model = tmp_path / "m.safetensors"
    res = runner.invoke(
        cli,
        [
            "train",
            str(tmp_path / "train"),
            "-o",
            str(model),
            "--epochs",
            "15",
            "--lr",
            "3e-3",
            "--batch-size",
            "16",
        ],
    )
    assert res.exit_code == 0, res.stderr
    out = tmp_path / "r.html"
    res = runner.invoke(
        cli, ["report", str(tmp_path / "test"), "-m", str(model), "-o", str(out),
              "--png-dir", str(tmp_path / "png"), "--top-n", "3"],
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert res.stdout.strip() == str(out)
    html = out.read_text()
    for section in ("model", "reconstructions", "scores", "extremes", "latent"):
        assert f'id="{section}"' in html
    srcs = re.findall(r'(?:src|href)="([^"#]*)"', html)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "http://" not in html and "https://" not in html and "<script src" not in html
    for s in srcs:
        img = Image.open(io.BytesIO(base64.b64decode(s.split(",", 1)[1])))
        assert img.format == "PNG" and min(img.size) > 10
    assert "ROC AUC" in html
    pngs = sorted(p.name for p in (tmp_path / "png").iterdir())
    assert "roc_pr.png" in pngs and "latent_map.png" in pngs and "loss_curve.png" in pngs
    # The scratched images are the most anomalous ones shown.
    top = html[html.index('id="extremes"') :]
    first_paths = re.findall(r"test/<wbr>(good|scratch)/<wbr>img\d+\.png", top)[:3]
    assert first_paths == ["scratch"] * 3
    again = runner.invoke(cli, ["report", str(tmp_path / "test"), "-m", str(model), "-o", str(out)])
    assert again.exit_code == 2 and "--overwrite" in again.stderr
    assert np.isfinite(float(re.search(r"flagged at ([0-9.e-]+)", res.stderr).group(1)))


def test_report_options_fail_like_scores(
    tmp_path: Path, score_tree: Path, score_model: Path
) -> None:
    """A bad threshold and a missing labels file are usage errors (exit 2) in both commands."""
    runner = CliRunner()
    test = str(score_tree / "test")
    for command in ("score", "report"):
        out = ["-o", str(tmp_path / "r.html")] if command == "report" else []
        res = runner.invoke(cli, [command, test, "-m", str(score_model), "-t", "foo", *out])
        assert res.exit_code == 2 and "invalid threshold 'foo'" in res.stderr, command
        labels = str(tmp_path / "nope.csv")
        res = runner.invoke(cli, [command, test, "-m", str(score_model), "--labels", labels, *out])
        assert res.exit_code == 2 and "does not exist" in res.stderr, command
    assert not (tmp_path / "r.html").exists()


def test_report_matches_score_metrics_and_exit_codes(
    tmp_path: Path, score_tree: Path, score_model: Path
) -> None:
    """The report shows the pixel ROC AUC and F1-optimal threshold `score` reports, warns
    about folder labels, and exits 4 when some inputs could not be read."""
    import json
    import shutil

    runner = CliRunner()
    test = tmp_path / "widget"
    shutil.copytree(score_tree, test)
    (test / "test" / "good" / "broken.png").write_bytes(b"not a png")
    summary = tmp_path / "s.json"
    score = runner.invoke(cli, ["score", str(test / "test"), "-m", str(score_model),
                                "--report", str(summary)])  # fmt: skip
    assert score.exit_code == 4
    expected = json.loads(summary.read_text())
    out = tmp_path / "r.html"
    res = runner.invoke(cli, ["report", str(test / "test"), "-m", str(score_model), "-o", str(out)])
    assert res.exit_code == 4 and "could not be scored" in res.stderr  # as `score`
    assert "labels come from folder names: 16 normal, 16 anomalous" in res.stderr
    html = out.read_text(encoding="utf-8")
    auc = float(re.search(r"pixel ROC AUC</th><td>([0-9.]+)", html).group(1))
    assert abs(auc - expected["pixel"]["roc_auc"]) < 1e-3
    best = float(re.search(r"F1-optimal threshold</th><td>([0-9.e-]+)", html).group(1))
    assert abs(best - expected["best_f1"]["value"]) <= 1e-3 * abs(expected["best_f1"]["value"])
    res = runner.invoke(cli, ["report", str(test / "test"), "-m", str(score_model), "-o",
                              str(out), "--overwrite", "--no-labels"])  # fmt: skip
    assert "folder names" not in res.stderr
    html = out.read_text(encoding="utf-8")
    assert "F1-optimal" not in html and "no labels are known" in html
