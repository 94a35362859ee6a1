"""Device selection everywhere; CUDA paths (marked gpu, skipped without a GPU)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import aetool.training.loop as training
from aetool.data.cache import load_images
from aetool.devices import autocast_dtype, fast_layout, place, resolve_device
from aetool.errors import ConfigError
from aetool.models.file import load_model
from aetool.models.registry import ModelConfig, create_model
from aetool.training.config import TrainConfig
from aetool.training.feeder import BatchFeeder
from aetool.training.loop import reconstruct, train


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_auto_and_cpu_resolve_to_the_cpu_without_a_gpu(no_cuda: None) -> None:
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    dev = torch.device("cpu")
    assert resolve_device(dev) == dev
    assert autocast_dtype(dev) is None  # no mixed precision on the CPU


@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "CUDA:1"])
def test_cuda_without_a_gpu_is_a_one_line_config_error(no_cuda: None, spec: str) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_device(spec)
    msg = str(err.value)
    assert "\n" not in msg and "no CUDA device" in msg and "cpu" in msg


def test_cuda_index_beyond_the_devices_present(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match=r"only 2 CUDA device\(s\) present \(cuda:0\.\.1\)"):
        resolve_device("cuda:2")


def test_bare_cuda_resolves_to_an_indexed_device(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tensors report cuda:0, and torch.device("cuda") != torch.device("cuda", 0): a bare
    # "cuda" once sent a GPU-resident training cache down the host-memory path.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    for spec in ("cuda", "auto", torch.device("cuda")):
        assert resolve_device(spec) == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    # Not initialised yet: index 0 without initialising CUDA (no context on GPU 0 per rank).
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: pytest.fail("initialised CUDA"))
    assert resolve_device("cuda") == torch.device("cuda", 0)


def test_a_torch_device_is_validated_like_its_name(no_cuda: None) -> None:
    with pytest.raises(ConfigError, match="no CUDA device"):
        resolve_device(torch.device("cuda"))


@pytest.mark.parametrize("spec", ["gpu", "mps0", "cuda0", "tpu", "0"])
def test_unknown_specs_name_the_choices(spec: str) -> None:
    with pytest.raises(ConfigError, match="use auto, cpu, cuda or cuda:N"):
        resolve_device(spec)


def test_compile_refuses_the_contractive_penalty() -> None:
    with pytest.raises(ConfigError, match="--compile cannot be combined with --contractive"):
        TrainConfig(compile=True, contractive=0.1).validate()


@pytest.mark.slow
def test_compiled_training_on_cpu_matches_eager_closely(blob_folder: Path) -> None:
    images = load_images([blob_folder])
    runs = [
        train(images, ModelConfig(latent_dim=4), TrainConfig(epochs=2, device="cpu", compile=c))
        for c in (False, True)
    ]
    eager, compiled = (r.history[-1].train_loss for r in runs)
    assert math.isfinite(compiled) and abs(compiled - eager) < 0.05 * eager


def _channels_last(model: torch.nn.Module) -> bool:
    """Every conv weight is stored channels-last, and (so the check can fail) some are not
    also plain-contiguous, as weights with one input and one output channel are."""
    convs = [
        m for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)
    ]
    weights = [m.weight for m in convs]
    return all(w.is_contiguous(memory_format=torch.channels_last) for w in weights) and any(
        not w.is_contiguous() for w in weights
    )


def _plain(model: torch.nn.Module) -> bool:
    return all(p.is_contiguous() for p in model.parameters())


@pytest.mark.parametrize(
    ("arch", "kwargs", "shape"),
    [
        ("conv", {"channels": 1, "height": 28, "width": 28, "latent_dim": 8}, (5, 1, 28, 28)),
        ("denoiser", {"channels": 3, "height": 32, "width": 32}, (2, 3, 40, 56)),
    ],
)
def test_fast_layout_changes_the_cpu_layout_not_the_values(arch, kwargs, shape) -> None:
    torch.manual_seed(0)
    plain = create_model(arch, **kwargs).eval()
    fast = create_model(arch, **kwargs).eval()
    fast.load_state_dict(plain.state_dict())
    assert fast_layout(fast, "cpu") is fast
    assert _channels_last(fast)
    assert _plain(plain)
    x = torch.rand(shape)
    with torch.no_grad():
        a, b = plain(x), fast(x)
    torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)
    for k, v in plain.state_dict().items():  # same keys and values, as saved
        assert torch.equal(fast.state_dict()[k].contiguous(), v)


class _ViewAE(torch.nn.Module):
    """A hand-written model that views a conv output, as much user code does."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 6 * 6, 2 * 6 * 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        return self.fc(h.view(h.size(0), -1)).view(-1, 2, 6, 6)


def test_fast_layout_leaves_models_that_do_not_declare_it_alone() -> None:
    model = _ViewAE()
    assert fast_layout(model, "cpu") is model
    assert _plain(model)
    model(torch.rand(3, 2, 6, 6))  # would raise on channels-last conv outputs
    torch.nn.Module.to(model, memory_format=torch.channels_last)
    with pytest.raises(RuntimeError, match="view size is not compatible"):
        model(torch.rand(3, 2, 6, 6))  # why the opt-in exists


def test_off_the_cpu_the_default_layout_comes_back() -> None:
    conv = fast_layout(create_model("conv", channels=1, height=28, width=28, latent_dim=8), "cpu")
    assert _channels_last(conv)
    fast_layout(conv, torch.device("cuda", 0))  # not run there: only the device type counts
    assert _plain(conv)
    fast_layout(conv, "cpu")
    moved = place(conv, torch.device("meta"))  # a model loaded on the CPU, then moved
    assert moved is conv and conv.features[0].weight.device.type == "meta" and _plain(conv)


def test_fast_layout_inside_inference_mode_keeps_the_model_trainable() -> None:
    torch.manual_seed(0)
    model = create_model("conv", channels=1, height=28, width=28, latent_dim=8)
    with torch.inference_mode():
        fast_layout(model, "cpu")
    assert _channels_last(model)
    assert not any(p.is_inference() for p in model.parameters())
    x = torch.rand(4, 1, 28, 28)
    torch.nn.functional.mse_loss(model(x), x).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_cpu_model_files_load_channels_last_and_save_unchanged(tmp_path: Path) -> None:
    from aetool.models.file import save_model

    torch.manual_seed(0)
    model = create_model("conv", channels=1, height=28, width=28, latent_dim=8)
    first = save_model(tmp_path / "a.safetensors", model, {"note": "x"})
    loaded = load_model(first).model
    assert _channels_last(loaded)
    second = save_model(tmp_path / "b.safetensors", loaded, {"note": "x"})
    from safetensors.torch import load_file

    a, b = load_file(first), load_file(second)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_cpu_training_in_channels_last_tracks_the_plain_layout(
    blob_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = load_images([blob_folder])
    cfg = TrainConfig(epochs=3, device="cpu", seed=3)
    fast = train(images, ModelConfig(latent_dim=4), cfg)
    monkeypatch.setattr(training, "place", lambda model, device: model.to(device))
    plain = train(images, ModelConfig(latent_dim=4), cfg)
    assert _channels_last(fast.model)
    assert _plain(plain.model)
    for f, p in zip(fast.history, plain.history, strict=True):
        assert f.train_loss == pytest.approx(p.train_loss, rel=1e-3)


# ---------------------------------------------------------------------------
# CUDA (skipped without a GPU by the hook in conftest.py)


@pytest.mark.gpu
def test_auto_picks_cuda_and_amp_dtype() -> None:
    assert resolve_device("auto").type == "cuda"
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert autocast_dtype(torch.device("cuda")) == expected


@pytest.mark.gpu
@pytest.mark.parametrize("amp", [True, False])
def test_tiny_cuda_training_learns_and_saves(blob_folder: Path, tmp_path: Path, amp: bool) -> None:
    images = load_images([blob_folder])
    result = train(
        images, ModelConfig(latent_dim=4), TrainConfig(epochs=4, device="cuda", lr=3e-3, amp=amp)
    )
    t = result.metadata["training"]
    assert t["device"].startswith("cuda")
    losses = t["history"]["train_loss"]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    loaded = load_model(result.save(tmp_path / "m.safetensors"))
    assert next(loaded.model.parameters()).device.type == "cpu"  # files load anywhere


@pytest.mark.gpu
def test_fp16_grad_scaler_path(blob_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Force the fp16 + GradScaler branch even on GPUs that support bf16.
    monkeypatch.setattr(training, "autocast_dtype", lambda device: torch.float16)
    images = load_images([blob_folder])
    cfg = TrainConfig(epochs=3, device="cuda", lr=3e-3, amp=True)
    losses = train(images, ModelConfig(latent_dim=4), cfg).metadata["training"]["history"]
    assert all(math.isfinite(v) for v in losses["train_loss"])
    assert losses["train_loss"][-1] < losses["train_loss"][0]


@pytest.mark.gpu
@pytest.mark.parametrize("arch", ["conv", "dense", "denoiser"])
def test_cuda_and_cpu_reconstructions_agree(arch: str) -> None:
    torch.manual_seed(0)
    model = create_model(arch, channels=1, height=32, width=32, latent_dim=8).eval()
    x = torch.rand(16, 1, 32, 32)
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        cpu = reconstruct(model, x)
        gpu = reconstruct(model.cuda(), x.cuda()).cpu()
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    assert torch.allclose(cpu, gpu, atol=1e-5), (cpu - gpu).abs().max()


@pytest.mark.gpu
@pytest.mark.parametrize("resident", [True, False])
def test_feeder_converts_uint8_on_the_gpu(
    blob_folder: Path, monkeypatch: pytest.MonkeyPatch, resident: bool
) -> None:
    images = load_images([blob_folder])
    if not resident:  # pretend the GPU is full: batches go through pinned host memory
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (0, 1))
    feeder = BatchFeeder(images, torch.device("cuda"), None)
    assert feeder.cache.device.type == ("cuda" if resident else "cpu")
    idx = torch.tensor([5, 0, 7])
    batch = feeder.batch(idx)
    assert batch.device.type == "cuda" and batch.dtype == torch.float32
    expected = torch.from_numpy(np.asarray(images.data)[idx.numpy()]).float() / 255
    # CUDA may divide by multiplying with 1/255: equal to within one float32 ulp.
    torch.testing.assert_close(batch.cpu(), expected, rtol=0, atol=1e-7)
    if not resident:
        assert feeder.pinned is not None and feeder.pinned.is_pinned()


@pytest.mark.gpu
def test_compiled_cuda_training(blob_folder: Path) -> None:
    images = load_images([blob_folder])
    cfg = TrainConfig(epochs=2, device="cuda", compile=True)
    result = train(images, ModelConfig(latent_dim=4), cfg)
    assert all(math.isfinite(v) for v in result.metadata["training"]["history"]["train_loss"])
    assert not any(k.startswith("_orig_mod") for k in result.model.state_dict())


@pytest.mark.gpu
def test_torchrun_uses_nccl_on_cuda(blob_folder: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    nproc = min(2, torch.cuda.device_count())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += [f"--nproc-per-node={nproc}", "-m", "aetool", "train", str(blob_folder)]
    cmd += ["-o", str(tmp_path / "m.safetensors"), "--epochs", "2", "--device", "cuda"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == [str(tmp_path / "m.safetensors")]
    t = load_model(tmp_path / "m.safetensors").metadata["training"]
    assert t["distributed"]["backend"] == "nccl" and t["world_size"] == nproc
    assert len(set(t["distributed"]["rank_checksums"])) == 1


@pytest.mark.gpu
def test_bundled_denoiser_with_refinement_on_cuda_matches_the_cpu() -> None:
    from skimage import data

    from aetool.denoise.array import denoise_array
    from aetool.metrics import psnr
    from aetool.models.bundled import bundled_model_path

    clean = (data.camera()[:192, :256] / 255.0).astype(np.float32)
    noisy = clean + np.random.default_rng(0).normal(0, 15 / 255, clean.shape).astype(np.float32)
    out = {}
    for dev in ("cpu", "cuda"):
        model = load_model(bundled_model_path(), device=dev).model
        out[dev] = denoise_array(model, noisy, device=dev, refine=True)
    assert out["cuda"].dtype == np.float32 and out["cuda"].shape == clean.shape
    # cuDNN's convolutions (TF32 where allowed) differ from the CPU's in the low bits;
    # the refinement's block matching may then pick another patch here and there.
    diff = np.abs(out["cuda"] - out["cpu"])
    assert diff.mean() < 5e-4, (diff.mean(), diff.max())
    gap = psnr(clean, out["cuda"]) - psnr(clean, out["cpu"])
    assert abs(gap) < 0.02, gap
    assert psnr(clean, out["cuda"]) > psnr(clean, noisy) + 6.0
