"""Tests for aetool.anomaly.detector: the array API agrees with `aetool score` on the same images."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_blob_images, write_folder
from PIL import Image

from aetool import AnomalyDetector
from aetool.cli.main import cli
from aetool.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


def _cli(model: Path, inputs: list[Path], *args: str) -> dict[str, dict[str, str]]:
    res = CliRunner().invoke(
        cli, ["score", *map(str, inputs), "-m", str(model), "--device", "cpu", *args]
    )
    assert res.exit_code == 0, res.stderr
    return {r["path"]: r for r in csv.DictReader(io.StringIO(res.stdout))}


def _read(paths: list[Path]) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in paths])


@pytest.mark.parametrize("kind", ["mse", "max-local"])
def test_arrays_score_like_the_cli(kind: str, score_tree: Path, score_model: Path) -> None:
    paths = (
        sorted((score_tree / "test" / "blob").iterdir())
        + sorted((score_tree / "test" / "good").iterdir())[:4]
    )
    rows = _cli(score_model, paths, "--score", kind, "-t", "p90")
    det = AnomalyDetector.load(score_model, score_kind=kind, threshold="p90", device="cpu")
    arrays = _read(paths)  # (N, 24, 24) uint8, the model's size
    scores = det.decision_function(arrays)
    expected = np.array([float(rows[str(p)]["score"]) for p in paths])
    np.testing.assert_allclose(scores, expected, atol=1e-5, rtol=1e-5)
    flags = det.predict(arrays)
    assert flags.tolist() == [int(rows[str(p)]["is_anomaly"] == "true") for p in paths]
    assert 0 < flags.sum() < len(paths)
    assert det.threshold_.value == pytest.approx(float(rows[str(paths[0])]["threshold"]), 1e-5)
    # Paths, RGB (N, H, W, 3) and float [0, 1] arrays give the same numbers.
    np.testing.assert_allclose(det.score_samples(paths), scores, rtol=1e-6, atol=1e-9)
    rgb = np.repeat(arrays[..., None], 3, axis=-1)
    np.testing.assert_allclose(det.decision_function(rgb), scores, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(
        det.decision_function(arrays.astype(np.float32) / 255), scores, rtol=1e-5, atol=1e-7
    )


def test_arrays_of_another_size_are_resized_like_files(
    score_tree: Path, score_model: Path, tmp_path: Path
) -> None:
    big = np.stack(
        [
            np.asarray(Image.fromarray(a).resize((40, 32), Image.Resampling.NEAREST))
            for a in _read(sorted((score_tree / "test" / "scratch").iterdir()))
        ]
    )  # (N, 32, 40): not the model's 24x24
    paths = write_folder(tmp_path / "big", big)
    rows = _cli(score_model, paths)
    det = AnomalyDetector.load(score_model, device="cpu")
    expected = np.array([float(rows[str(p)]["score"]) for p in paths])
    np.testing.assert_allclose(det.decision_function(big), expected, atol=1e-5, rtol=1e-5)


def test_fit_save_load_round_trip(tmp_path: Path) -> None:
    good = make_blob_images(24, size=16, seed=0)
    odd = make_blob_images(4, size=16, seed=1)
    odd[:, 4:9, 4:9] = 255
    det = AnomalyDetector(
        latent_dim=4, extra={"base_channels": 4}, epochs=2, batch_size=8, device="cpu",
        val_split=0.25, threshold="p95",
    )  # fmt: skip
    assert det.fit(good) is det
    scores = det.decision_function(odd)
    assert scores.shape == (4,) and np.isfinite(scores).all()
    model = det.save(tmp_path / "m.safetensors")
    paths = write_folder(tmp_path / "odd", odd)
    rows = _cli(model, paths, "-t", "p95")
    expected = np.array([float(rows[str(p)]["score"]) for p in paths])
    np.testing.assert_allclose(scores, expected, atol=1e-5, rtol=1e-5)
    again = AnomalyDetector.load(model, threshold="p95", device="cpu")
    np.testing.assert_allclose(again.decision_function(odd), scores, rtol=1e-6)
    assert again.predict(odd).tolist() == det.predict(odd).tolist()
    assert again.get_params()["latent_dim"] == 4


def test_params_follow_scikit_learn() -> None:
    det = AnomalyDetector(latent_dim=8, epochs=3)
    params = det.get_params()
    assert params["latent_dim"] == 8 and params["epochs"] == 3 and params["lr"] == 1e-3
    assert det.set_params(lr=0.01, threshold="p99") is det
    assert det.lr == 0.01 and det.threshold == "p99"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="invalid parameter"):
        det.set_params(nope=1)
    with pytest.raises(TypeError, match="unknown parameter"):
        AnomalyDetector(epoch=3)
    clone = pytest.importorskip("sklearn.base").clone
    copy = clone(det)
    assert copy.get_params() == det.get_params() and copy is not det
    assert repr(det) == "AnomalyDetector(latent_dim=8, threshold='p99', epochs=3, lr=0.01)"


def test_unfitted_and_bad_shapes_are_clear(score_model: Path) -> None:
    with pytest.raises(ConfigError, match="not fitted"):
        AnomalyDetector().predict(np.zeros((1, 8, 8), np.uint8))
    det = AnomalyDetector.load(score_model, device="cpu")
    with pytest.raises(ConfigError, match=r"\(N, H, W\)"):
        det.decision_function(np.zeros((8, 8), np.uint8))
    with pytest.raises(ConfigError, match="C 1 or 3"):
        det.decision_function(np.zeros((1, 8, 8, 2), np.uint8))
