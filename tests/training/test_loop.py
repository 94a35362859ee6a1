from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from aetool.data.cache import load_images
from aetool.errors import ConfigError, TrainingError
from aetool.models.registry import ModelConfig, create_model
from aetool.training.callbacks import TrainCallback
from aetool.training.config import TrainConfig, parse_sparsity
from aetool.training.loop import train
from aetool.training.losses import contractive_penalty
from aetool.training.noise import parse_noise

FAST = dict(epochs=6, batch_size=16, device="cpu")


def test_loss_falls_and_validation_scores_are_stored(blob_folder: Path) -> None:
    res = train(blob_folder, ModelConfig(arch="conv", latent_dim=4), TrainConfig(lr=3e-3, **FAST))
    hist = res.metadata["training"]["history"]
    assert hist["train_loss"][-1] < 0.5 * hist["train_loss"][0]
    assert hist["val_loss"][-1] < hist["val_loss"][0]
    val = res.metadata["validation"]
    assert val["count"] == 5 and val["source"] == "validation"  # 10% of 48, rounded
    for kind in ("mse", "ssim", "max-local"):
        scores = val["scores"][kind]
        assert len(scores) == 5 and scores == sorted(scores)
    assert res.metadata["preprocessing"]["height"] == 16
    assert res.metadata["training"]["completed"] is True


def test_same_seed_gives_bit_identical_weights(blob_folder: Path) -> None:
    images = load_images([blob_folder])
    cfg = TrainConfig(seed=7, epochs=2, batch_size=16, device="cpu", noise="gaussian:0.1")
    a = train(images, ModelConfig(latent_dim=4), cfg).model.state_dict()
    b = train(images, ModelConfig(latent_dim=4), cfg).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = train(images, ModelConfig(latent_dim=4), TrainConfig(**{**cfg.__dict__, "seed": 8}))
    assert not all(torch.equal(a[k], c.model.state_dict()[k]) for k in a)


@pytest.mark.parametrize(
    "extra",
    [
        dict(noise="mask:0.3"),
        dict(noise="saltpepper:0.05", loss="bce"),
        dict(sparsity="1e-2:0.05"),
        dict(contractive=1e-3),
        dict(loss="ssim"),
    ],
)
def test_variants_train_and_improve(blob_folder: Path, extra: dict) -> None:
    res = train(
        blob_folder, ModelConfig(arch="dense", latent_dim=4), TrainConfig(lr=3e-3, **FAST, **extra)
    )
    hist = res.metadata["training"]["history"]["train_loss"]
    assert np.isfinite(hist).all() and hist[-1] < hist[0]


def test_contractive_estimate_is_unbiased() -> None:
    torch.manual_seed(0)
    model = create_model("dense", channels=1, height=6, width=6, latent_dim=3, hidden=[16])
    x = torch.rand(4, 1, 6, 6, requires_grad=True)
    exact = (
        torch.stack(
            [
                torch.autograd.functional.jacobian(lambda v: model.encode(v[None])[0], xi)
                .pow(2)
                .sum()
                for xi in x
            ]
        )
        .mean()
        .detach()
    )
    z = model.encode(x)
    est = torch.stack([contractive_penalty(model, x, z).detach() for _ in range(2000)]).mean()
    assert float(est) == pytest.approx(float(exact), rel=0.05)


def test_nan_loss_stops_with_advice(blob_folder: Path) -> None:
    with pytest.raises(TrainingError, match="lower --lr"):
        train(blob_folder, ModelConfig(arch="dense"), TrainConfig(lr=1e12, **FAST))


def test_interrupt_then_resume(blob_folder: Path, tmp_path: Path) -> None:
    class StopAfter(TrainCallback):
        def on_epoch_end(self, record, samples):  # noqa: ANN001
            if record.epoch == 2:
                raise KeyboardInterrupt

    images = load_images([blob_folder])
    cfg = TrainConfig(epochs=4, batch_size=16, device="cpu", patience=None)
    res = train(images, ModelConfig(latent_dim=4), cfg, [StopAfter()])
    assert res.interrupted and len(res.history) == 2
    path = res.save(tmp_path / "m.safetensors")
    again = train(images, ModelConfig(latent_dim=4), cfg, resume_from=path)
    assert [r.epoch for r in again.history] == [1, 2, 3, 4]
    assert again.metadata["training"]["completed"]
    full = train(images, ModelConfig(latent_dim=4), cfg)
    # Resuming continues the same run: same data order, same weights as an uninterrupted one.
    fa, fb = full.model.state_dict(), again.model.state_dict()
    assert all(torch.allclose(fa[k], fb[k], atol=1e-6) for k in fa)
    with pytest.raises(ConfigError, match="finished run"):
        train(
            images,
            ModelConfig(latent_dim=4),
            cfg,
            resume_from=again.save(tmp_path / "done.safetensors"),
        )


def test_early_stopping(blob_folder: Path) -> None:
    res = train(
        blob_folder,
        ModelConfig(latent_dim=4),
        TrainConfig(epochs=40, lr=1e-9, patience=2, batch_size=16),
    )
    assert res.metadata["training"]["epochs_run"] < 40
    assert res.metadata["training"]["stopped_early"]


def test_config_validation() -> None:
    for bad in (
        dict(epochs=0),
        dict(lr=-1),
        dict(val_split=1.0),
        dict(loss="l1"),
        dict(noise="pink:1"),
    ):
        with pytest.raises(ConfigError):
            TrainConfig(**bad).validate()
    assert parse_sparsity("0.1") == (0.1, 0.05)
    assert parse_sparsity("0.1:0.2") == (0.1, 0.2)
    with pytest.raises(ConfigError):
        parse_sparsity("a:b")
    n = parse_noise("gaussian:0.02-0.2")
    assert (n.low, n.high) == (0.02, 0.2)
    with pytest.raises(ConfigError):
        parse_noise("mask:2")


def test_noise_levels_match_spec() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.full((8, 1, 64, 64), 0.5)
    assert float((parse_noise("gaussian:0.1").apply(x, g) - x).std()) == pytest.approx(
        0.1, rel=0.05
    )
    assert float((parse_noise("mask:0.3").apply(x, g) == 0).float().mean()) == pytest.approx(
        0.3, abs=0.02
    )
    dark = parse_noise("gaussian:0.5").apply(torch.zeros(2, 1, 32, 32), g)
    assert float(dark.min()) == 0.0 and float(dark.max()) <= 1.0 and float(dark.mean()) > 0.1
    sp = parse_noise("saltpepper:0.2").apply(x, g)
    assert float((sp != 0.5).float().mean()) == pytest.approx(0.2, abs=0.02)
    assert float((sp == 1).float().mean()) == pytest.approx(0.1, abs=0.02)


def test_patch_training_needs_fully_convolutional(tmp_path: Path) -> None:
    from PIL import Image

    Image.new("L", (40, 30)).save(tmp_path / "a.png")
    Image.new("L", (50, 36)).save(tmp_path / "b.png")
    images = load_images([tmp_path], native_size=True)
    with pytest.raises(ConfigError, match="fully convolutional"):
        train(images, ModelConfig(arch="conv"), TrainConfig(patch_size=16, epochs=1))


def test_cosine_schedule_decays_the_learning_rate(blob_folder: Path) -> None:
    cfg = TrainConfig(epochs=4, batch_size=16, lr=1e-3, lr_schedule="cosine", patience=0)
    res = train(blob_folder, ModelConfig(latent_dim=4), cfg)
    expected = [1e-3 * 0.5 * (1 + np.cos(np.pi * e / 4)) for e in range(4)]
    assert [r.lr for r in res.history] == pytest.approx(expected)
    constant = train(blob_folder, ModelConfig(latent_dim=4), TrainConfig(epochs=2, patience=0))
    assert [r.lr for r in constant.history] == [1e-3, 1e-3]
    with pytest.raises(ConfigError, match="lr-schedule"):
        TrainConfig(lr_schedule="step").validate()
