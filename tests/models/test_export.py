"""Tests for aetool.models.export and `aetool export-model`: the exported graphs agree with aetool."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from aetool.cli.main import cli
from aetool.data.decode import prepare_image
from aetool.models.export import export_model
from aetool.models.file import load_model, save_model
from aetool.models.registry import create_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _preprocessed(model_path: Path, paths: list[Path]) -> np.ndarray:
    """The images as the exported graph takes them: (N, C, H, W) float32 in [0, 1]."""
    pre = load_model(model_path).preprocessing
    arrays = [
        prepare_image(p, channels=pre["channels"], size=(pre["height"], pre["width"]))
        for p in paths
    ]
    return np.stack(arrays).astype(np.float32) / 255.0


def _cli_scores(model: Path, folder: Path, kind: str) -> dict[str, tuple[float, float]]:
    res = CliRunner().invoke(
        cli, ["score", str(folder), "-m", str(model), "--device", "cpu", "--score", kind]
    )
    assert res.exit_code == 0, res.stderr
    rows = csv.DictReader(io.StringIO(res.stdout))
    return {r["path"]: (float(r["score"]), float(r["threshold"])) for r in rows}


@pytest.mark.parametrize("kind", ["mse", "ssim", "max-local"])
def test_onnx_matches_aetool_score(
    kind: str, score_tree: Path, score_model: Path, tmp_path: Path
) -> None:
    ort = pytest.importorskip("onnxruntime")
    out = export_model(score_model, tmp_path / "m.onnx", "onnx", score_kind=kind)
    folder = score_tree / "test" / "blob"
    expected = _cli_scores(score_model, folder, kind)
    paths = sorted(folder.iterdir())
    x = _preprocessed(score_model, paths)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    recon, amap, score = sess.run(None, {"image": x})
    assert recon.shape == x.shape and amap.shape == (len(paths), *x.shape[2:])
    cli_scores = np.array([expected[str(p)][0] for p in paths])
    np.testing.assert_allclose(score, cli_scores, atol=1e-4, rtol=0)
    meta = sess.get_modelmeta().custom_metadata_map
    assert float(meta["aetool.threshold"]) == pytest.approx(
        expected[str(paths[0])][1], rel=1e-5
    )  # the CSV keeps 6 significant digits
    assert meta["aetool.score_kind"] == kind
    assert meta["aetool.outputs"] == "reconstruction,anomaly_map,score"
    pre = json.loads(meta["aetool.preprocessing"])
    assert (pre["channels"], pre["height"], pre["width"]) == (1, 24, 24)
    assert json.loads(meta["aetool"])["arch"] == "conv"
    # Another batch size than the one traced with.
    one = sess.run(["score"], {"image": x[:1]})[0]
    assert one[0] == pytest.approx(score[0], abs=1e-6)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_torchscript_matches_aetool_score(
    score_tree: Path, score_model: Path, tmp_path: Path
) -> None:
    out = export_model(score_model, tmp_path / "m.pt", "torchscript", score_kind="max-local")
    folder = score_tree / "test" / "scratch"
    expected = _cli_scores(score_model, folder, "max-local")
    paths = sorted(folder.iterdir())
    extra = {"aetool.threshold": "", "aetool.score_kind": ""}
    graph = torch.jit.load(str(out), _extra_files=extra)
    with torch.no_grad():
        _, _, score = graph(torch.from_numpy(_preprocessed(score_model, paths)))
    cli_scores = np.array([expected[str(p)][0] for p in paths])
    np.testing.assert_allclose(score.numpy(), cli_scores, atol=1e-4, rtol=0)
    assert extra["aetool.score_kind"] == b"max-local"  # extra files come back as bytes
    assert float(extra["aetool.threshold"]) == pytest.approx(expected[str(paths[0])][1], rel=1e-5)


@pytest.fixture
def denoiser_file(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = create_model("denoiser", channels=1)
    meta = {
        "preprocessing": {"channels": 1},
        "training": {"noise": "gaussian:0.1", "patch_size": 16},
    }
    return save_model(tmp_path / "den.safetensors", model, meta)


def test_denoiser_onnx_any_size(denoiser_file: Path, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    out = export_model(denoiser_file, tmp_path / "d.onnx", "onnx")
    x = np.random.default_rng(0).random((2, 1, 40, 56), dtype=np.float32)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["denoised"]
    (denoised,) = sess.run(None, {"image": x})
    with torch.no_grad():
        ref = load_model(denoiser_file).model(torch.from_numpy(x)).numpy()
    assert denoised.shape == x.shape
    np.testing.assert_allclose(denoised, ref, atol=1e-4, rtol=0)
    assert "aetool.threshold" not in sess.get_modelmeta().custom_metadata_map


def test_cli_writes_default_name_and_refuses_overwrite(score_model: Path, tmp_path: Path) -> None:
    model = tmp_path / "model.safetensors"
    model.write_bytes(score_model.read_bytes())
    runner = CliRunner()
    res = runner.invoke(cli, ["export-model", str(model), "--format", "torchscript"])
    assert res.exit_code == 0, res.stderr
    assert res.stdout.strip() == str(tmp_path / "model.pt")
    assert (tmp_path / "model.pt").stat().st_size > 1000
    again = runner.invoke(cli, ["export-model", str(model), "--format", "torchscript"])
    assert again.exit_code == 2 and "--overwrite" in again.stderr
    bad = runner.invoke(cli, ["export-model", str(model), "-t", "nonsense"])
    assert bad.exit_code == 2
    missing = runner.invoke(cli, ["export-model", str(tmp_path / "none.safetensors")])
    assert missing.exit_code == 1 and missing.stderr.startswith("Error: ")
    assert "Traceback" not in missing.stderr
