"""Data-parallel training: shard arithmetic in-process, and real 2-process gloo runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from click.testing import CliRunner
from conftest import make_blob_images, write_folder

from aetool.cli import cli
from aetool.data.cache import load_images
from aetool.models.file import load_model
from aetool.models.registry import ModelConfig, create_model
from aetool.training.config import TrainConfig
from aetool.training.distributed import (
    DistContext,
    EncodeDecode,
    launched_by_torchrun,
    setup,
    shard_batch,
    state_checksum,
    teardown,
)
from aetool.training.loop import train

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 grayscale 8x8 PNGs in TMP/imgs."""
    root = tmp_path_factory.mktemp("ddp") / "imgs"
    write_folder(root, make_blob_images(64, size=8, seed=1))
    return root


def _ctx(rank: int, world: int) -> DistContext:
    return DistContext(rank, world, rank, "gloo", torch.device("cpu"))


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("size", [1, 2, 3, 7, 16])
def test_shard_batch_is_disjoint_cover_with_a_share_for_every_rank(world: int, size: int) -> None:
    batch = torch.arange(100, 100 + size)
    shares = [shard_batch(batch, _ctx(r, world)) for r in range(world)]
    assert all(len(s) >= 1 for s in shares)  # nobody sits out a step, so nobody hangs
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    got = torch.cat(shares).tolist()
    if size >= world:
        assert sorted(got) == batch.tolist()  # disjoint and complete
    else:
        assert set(got) == set(batch.tolist()) and len(got) == world  # topped up by repeats


def test_single_process_needs_no_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in TORCHRUN_ENV:
        monkeypatch.delenv(k, raising=False)
    assert not launched_by_torchrun()
    assert setup("cpu") is None
    for k, v in zip(TORCHRUN_ENV, ("0", "2", "0", "127.0.0.1", "29500"), strict=True):
        monkeypatch.setenv(k, v)
    assert launched_by_torchrun()


def test_encode_decode_wrapper_matches_forward() -> None:
    torch.manual_seed(0)
    model = create_model("conv", channels=1, height=16, width=16, latent_dim=4)
    x = torch.rand(3, 1, 16, 16)
    z, recon = EncodeDecode(model)(x)
    assert z.shape == (3, 4)
    assert torch.equal(recon, model(x))


def test_one_process_group_trains_bit_identically_to_the_plain_loop(tiny_folder: Path) -> None:
    """World size 1 runs every distributed code path (DDP, shards, all-reduced losses)
    and must not change the arithmetic of the single-process loop."""
    images = load_images([tiny_folder])
    cfg = TrainConfig(epochs=2, batch_size=10, device="cpu", seed=4, sparsity="1e-3")
    mcfg = ModelConfig(latent_dim=4)
    plain = train(images, mcfg, cfg)
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        ddp = train(images, mcfg, cfg)
    finally:
        teardown()
    assert plain.metadata["training"]["world_size"] == 1
    assert plain.metadata["training"]["distributed"] is None
    rec = ddp.metadata["training"]["distributed"]
    assert rec["backend"] == "gloo" and rec["world_size"] == 1
    assert rec["rank_checksums"] == [state_checksum(plain.model)]
    for a, b in zip(plain.history, ddp.history, strict=True):
        assert a.train_loss == b.train_loss and a.val_loss == b.val_loss


# ---------------------------------------------------------------------------
# real processes


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}
    env["OMP_NUM_THREADS"] = "1"  # two processes on a shared 2-core machine
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


def _check_model(proc: subprocess.CompletedProcess[str], cwd: Path, name: str) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == [name]  # rank 0 alone prints the path
    loaded = load_model(cwd / name)
    t = loaded.metadata["training"]
    assert t["world_size"] == 2
    assert t["distributed"]["backend"] == "gloo"
    sums = t["distributed"]["rank_checksums"]
    assert len(sums) == 2 and sums[0] == sums[1]  # gradients were averaged: same weights
    assert sums[0] == state_checksum(loaded.model)  # and rank 0 saved exactly those
    assert np.all(np.isfinite(t["history"]["train_loss"] + t["history"]["val_loss"]))
    return t


def test_torchrun_two_processes_write_one_ordinary_model(tiny_folder: Path) -> None:
    cwd = tiny_folder.parent
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    args = ["-m", "aetool", "train", "imgs", "-o", "m.safetensors", "--epochs", "2"]
    proc = _run([*cmd, *args, "--batch-size", "8", "--lr", "3e-3", "--device", "cpu"], cwd)
    t = _check_model(proc, cwd, "m.safetensors")
    assert t["train_count"] + t["val_count"] == 64 and t["epochs_run"] == 2
    assert t["history"]["val_loss"][1] < t["history"]["val_loss"][0]
    stderr = " ".join(proc.stderr.split())  # rich wraps lines at the terminal width
    assert "x 2 processes" in stderr and stderr.count("Training summary") == 1
    single = create_model("conv", channels=1, height=8, width=8, latent_dim=16)
    assert sum(p.numel() for p in load_model(cwd / "m.safetensors").model.parameters()) == sum(
        p.numel() for p in single.parameters()
    )


def test_distributed_flag_relaunches_under_torchrun_with_penalties(tiny_folder: Path) -> None:
    """--distributed --nproc 2, the contractive + sparsity path through DDP, and a final
    batch of one image (58 training images, batches of 19) that both ranks must share."""
    cwd = tiny_folder.parent
    args = ["train", "imgs", "-o", "p.safetensors", "--epochs", "1", "--batch-size", "19"]
    args += ["--device", "cpu"]  # gloo on the CPU even where one GPU would be auto-picked
    extra = ["--contractive", "0.1", "--sparsity", "1e-3", "--noise", "gaussian:0.1"]
    proc = _run(
        [sys.executable, "-m", "aetool", *args, *extra, "--distributed", "--nproc", "2"], cwd
    )
    t = _check_model(proc, cwd, "p.safetensors")
    assert t["train_count"] == 58 and t["config"]["contractive"] == 0.1
    assert t["config"]["batch_size"] == 19


def test_distributed_without_gpu_or_nproc_is_a_usage_error(
    tiny_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k in TORCHRUN_ENV:
        monkeypatch.delenv(k, raising=False)
    res = CliRunner().invoke(cli, ["train", str(tiny_folder), "--distributed", "--device", "cpu"])
    assert res.exit_code == 2
    assert "--nproc" in res.stderr


def test_distributed_relaunch_passes_the_given_options(
    tiny_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k in TORCHRUN_ENV:
        monkeypatch.delenv(k, raising=False)
    seen: list[list[str]] = []

    def fake_run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        seen.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, stdout="out.safetensors\n")

    monkeypatch.setattr(subprocess, "run", fake_run)
    out = tmp_path / "out.safetensors"
    res = CliRunner().invoke(
        cli,
        ["train", str(tiny_folder), "-o", str(out), "--epochs", "5", "--no-amp", "-q"]
        + ["--nproc", "3", "--device", "cpu"],
    )
    assert res.exit_code == 0, res.output
    assert res.stdout == "out.safetensors\n"
    (cmd,) = seen
    assert cmd[:6] == [sys.executable, "-m", "torch.distributed.run", "--standalone",
                       "--nproc-per-node=3", "-m"]  # fmt: skip
    rest = cmd[7:]
    assert rest[0] == "train" and rest[-2:] == ["--", str(tiny_folder)]
    opts = rest[1:-2]
    assert opts[opts.index("--output") + 1] == str(out)
    assert opts[opts.index("--epochs") + 1] == "5"
    assert opts[opts.index("--device") + 1] == "cpu"
    assert {"--no-amp", "--quiet"} <= set(opts)
    assert "--nproc" not in opts and "--distributed" not in opts and "--lr" not in opts
