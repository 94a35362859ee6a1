"""`aetool train --arch auto/draem` and scoring with a draem model: scores from its own
maps, --threshold auto, heatmaps, --masks-out, pixel ROC AUC and AUPRO, clear errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import make_texture_images, write_folder
from PIL import Image

from aetool.cli.main import cli


@pytest.fixture(scope="module")
def draem_model(score_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny draem (2 stages of 8 channels) trained 150 steps on score_tree/train/good."""
    from aetool.data.cache import load_images
    from aetool.models.registry import ModelConfig
    from aetool.training.config import TrainConfig
    from aetool.training.draem import train_draem

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train_draem(
            load_images([score_tree / "train" / "good"]),
            ModelConfig(arch="draem", extra={"base_channels": 8, "depth": 2}),
            TrainConfig(epochs=3, batch_size=8, device="cpu", val_split=0.25, seed=0),
        )
    finally:
        torch.set_num_threads(threads)
    return result.save(tmp_path_factory.mktemp("draem") / "d.safetensors")


def _score(args: list[str]) -> tuple[list[dict[str, str]], str]:
    res = CliRunner().invoke(cli, ["score", "--device", "cpu", *args])
    assert res.exit_code == 0, res.stderr
    return list(csv.DictReader(io.StringIO(res.stdout))), res.stderr


def test_scores_use_the_models_map_and_find_the_painted_defects(
    score_tree: Path, draem_model: Path, tmp_path: Path
) -> None:
    report = tmp_path / "r.json"
    rows, err = _score([str(score_tree / "test"), "-m", str(draem_model), "--report", str(report)])
    assert {r["score_kind"] for r in rows} == {"model"}
    assert "AUPRO" in err
    from aetool.models.file import load_model

    loaded = load_model(draem_model)
    assert loaded.metadata["arch_args"]["flip_average"] is True  # the default
    assert loaded.metadata["arch_args"]["centred_score"] is True  # the default
    # the score is the mean of the map's top 1% less the map's mean (24x24: top 6 pixels)
    by_name = {Path(r["path"]).relative_to(score_tree / "test").as_posix(): r for r in rows}
    for name in ("blob/000.png", "good/img001.png"):
        img = np.asarray(Image.open(score_tree / "test" / name), dtype=np.float32) / 255
        with torch.no_grad():
            amap = loaded.model.anomaly_map(torch.from_numpy(img)[None, None])[0, 0].numpy()
        flat = np.sort(amap.ravel())
        assert float(by_name[name]["score"]) == pytest.approx(
            flat[-6:].mean() - flat.mean(), abs=1e-5
        )
    rep = json.loads(report.read_text())
    assert rep["score_kind"] == "model"
    assert rep["threshold"]["rule"].startswith("auto")
    # the painted bright blobs and scratches are found, image- and pixel-wise
    assert rep["metrics"]["roc_auc"] > 0.8
    assert rep["pixel"]["roc_auc"] > 0.7  # 150 steps of a tiny network
    assert 0 < rep["pixel"]["aupro"] <= 1
    # the explicit kinds still work (the model's forward is the input: mse is 0)
    rows_mse, _ = _score([str(score_tree / "test"), "-m", str(draem_model), "--score", "mse",
                          "--threshold", "0.5"])  # fmt: skip
    assert {float(r["score"]) for r in rows_mse} == {0.0}


def test_heatmaps_and_masks_out_mirror_the_inputs(
    score_tree: Path, draem_model: Path, tmp_path: Path
) -> None:
    masks, heat = tmp_path / "masks", tmp_path / "heat"
    _score([str(score_tree / "test"), "-m", str(draem_model), "--masks-out", str(masks),
            "--heatmaps", str(heat)])  # fmt: skip
    names = sorted(p.relative_to(masks).as_posix() for p in masks.rglob("*.png"))
    assert names == sorted(p.relative_to(heat).as_posix() for p in heat.rglob("*.png"))
    assert len(names) == 32 and "blob/000.png" in names
    first = np.asarray(Image.open(masks / "blob/000.png"))
    assert first.shape == (24, 24) and set(np.unique(first)) <= {0, 255}
    # each mask is the model's map cut at the recorded pixel rule (24x24: no resize)
    from aetool.anomaly.masks import pixel_threshold
    from aetool.models.file import load_model

    loaded = load_model(draem_model)
    thr = pixel_threshold(loaded, "model")
    q = loaded.metadata["validation"]["maps"]["model"]["p999"]
    assert thr == max(q, 0.5)
    for name in ("blob/000.png", "scratch/003.png", "good/img001.png"):
        img = np.asarray(Image.open(score_tree / "test" / name), dtype=np.float32) / 255
        with torch.no_grad():
            amap = loaded.model.anomaly_map(torch.from_numpy(img)[None, None])[0, 0].numpy()
        pred = np.asarray(Image.open(masks / name)) > 0
        assert np.array_equal(pred, amap > thr)


def test_masks_out_inside_a_scored_folder_is_refused(score_tree: Path, draem_model: Path) -> None:
    res = CliRunner().invoke(cli, ["score", str(score_tree / "test"), "-m", str(draem_model),
                                   "--masks-out", str(score_tree / "test" / "m")])  # fmt: skip
    assert res.exit_code == 1 and "--masks-out" in res.stderr
    assert "Traceback" not in res.output


def test_vector_latent_commands_refuse_draem(score_tree: Path, draem_model: Path) -> None:
    res = CliRunner().invoke(cli, ["export", str(score_tree / "test"), "-m", str(draem_model)])
    assert res.exit_code == 1
    assert (
        res.stderr.strip().splitlines()[-1].startswith("Error: ") and "vector latent" in res.stderr
    )


def test_train_auto_picks_draem_for_128px_and_stops_at_the_time_budget(tmp_path: Path) -> None:
    write_folder(tmp_path / "good", make_texture_images(24, size=128, seed=4))
    out = tmp_path / "m.safetensors"
    res = CliRunner().invoke(cli, ["train", str(tmp_path / "good"), "-o", str(out), "--image-size",
                                   "32", "--epochs", "100", "--time-budget", "0.05",
                                   "--device", "cpu"])  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert "--arch auto: draem" in res.stderr and "working size 32x32, batch 16" in res.stderr
    meta = json.loads(CliRunner().invoke(cli, ["info", str(out), "--json"]).stdout)
    assert meta["arch"] == "draem"
    t = meta["training"]
    assert t["time_budget"] == pytest.approx(3.0)
    assert 0 < t["steps"] < 100 * 50  # ended by the 3-second budget, not by --epochs
    assert "(ended by the time budget, 0.05 min)" in res.stderr  # the summary says why
    assert meta["validation"]["maps"]["model"]["p999"] > 0
    assert len(meta["validation"]["scores"]["model"]) == t["val_count"]


def test_train_auto_keeps_conv_for_small_images(blob_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    res = CliRunner().invoke(cli, ["train", str(blob_folder), "-o", str(out), "--epochs", "1",
                                   "--device", "cpu"])  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert "--arch auto: conv" in res.stderr
    meta = json.loads(CliRunner().invoke(cli, ["info", str(out), "--json"]).stdout)
    assert meta["arch"] == "conv" and set(meta["validation"]["maps"]) == {
        "mse",
        "ssim",
        "max-local",
    }


def test_time_budget_also_ends_autoencoder_training(blob_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    res = CliRunner().invoke(cli, ["train", str(blob_folder), "-o", str(out), "--arch", "conv",
                                   "--epochs", "100000", "--patience", "0", "--time-budget",
                                   "0.01", "--device", "cpu"])  # fmt: skip
    assert res.exit_code == 0, res.stderr
    t = json.loads(CliRunner().invoke(cli, ["info", str(out), "--json"]).stdout)["training"]
    assert 1 <= t["epochs_run"] < 100000 and t["config"]["time_budget"] == pytest.approx(0.6)
    assert "(ended by the time budget, 0.01 min)" in res.stderr
    assert "ended by the time budget" in CliRunner().invoke(cli, ["info", str(out)]).stdout


def test_a_run_that_ends_on_its_step_count_reads_completed(
    blob_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "m.safetensors"
    res = CliRunner().invoke(cli, ["train", str(blob_folder), "-o", str(out), "--arch", "conv",
                                   "--epochs", "2", "--patience", "0", "--time-budget", "60",
                                   "--device", "cpu"])  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert "2 run, best" in res.stderr and "(completed)" in res.stderr
    assert "time budget" not in res.stderr.split("Training summary")[-1]


def test_html_report_of_a_draem_model(score_tree: Path, draem_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    res = CliRunner().invoke(cli, ["report", str(score_tree / "test"), "-m", str(draem_model),
                                   "-o", str(out), "--device", "cpu"])  # fmt: skip
    assert res.exit_code == 0, res.stderr
    html = out.read_text()
    assert "<th>score</th><td>model</td>" in html and "<img" in html


def test_detector_scores_arrays_of_a_draem_model_as_the_cli_does(
    score_tree: Path, draem_model: Path
) -> None:
    from aetool import AnomalyDetector

    det = AnomalyDetector.load(draem_model)
    names = ["blob/000.png", "scratch/003.png", "good/img001.png"]
    arrays = [np.asarray(Image.open(score_tree / "test" / n)) for n in names]
    got = det.decision_function(arrays)
    rows, _ = _score([*(str(score_tree / "test" / n) for n in names), "-m", str(draem_model)])
    want = [float(r["score"]) for r in rows]
    assert got == pytest.approx(want, abs=1e-5)
    assert len(set(np.round(got, 6))) == 3  # the model's map, not the mse of an identity (0)
    assert det.threshold_.value == pytest.approx(float(rows[0]["threshold"]))
