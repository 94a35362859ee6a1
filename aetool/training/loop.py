"""Training loop: from a decoded image cache to a trained model and its record.

The loop knows nothing about any particular architecture: it needs
``encode``/``decode`` only for the sparsity and contractive penalties.
Progress is reported through :class:`TrainCallback` methods, so the CLI can
draw rich bars while Python users pass their own callbacks (or none).
"""

from __future__ import annotations

import copy
import math
import os
import platform
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from aetool import __version__
from aetool.anomaly.scores import SCORE_KINDS, image_scores
from aetool.data.cache import ImageSet, load_images
from aetool.devices import autocast_dtype, place, resolve_device
from aetool.errors import ConfigError, TrainingError
from aetool.metrics import ssim_map
from aetool.models.file import load_model, save_model
from aetool.models.registry import AutoEncoder, ModelConfig, model_from_config
from aetool.training.distributed import DistContext, EncodeDecode, shard_batch, state_checksum, wrap
from aetool.training.distributed import setup as setup_distributed
from aetool.training.noise import NoiseSpec, parse_noise

__all__ = [
    "EpochRecord",
    "SampleGrids",
    "TrainCallback",
    "TrainConfig",
    "TrainResult",
    "reconstruct",
    "sample_grid_path",
    "train",
]

LOSSES = ("mse", "bce", "ssim")
LR_SCHEDULES = ("constant", "cosine")
#: Automatic epoch count: at least this many optimizer steps in all. Small folders
#: (a few dozen images, 1-2 batches an epoch) otherwise stop long before converging.
MIN_STEPS = 1000
#: Automatic patience: about this many optimizer steps without improvement.
PATIENCE_STEPS = 150


def auto_epochs(batches_per_epoch: int) -> int:
    """Epochs giving about :data:`MIN_STEPS` optimizer steps, clamped to [30, 300]."""
    return int(min(300, max(30, math.ceil(MIN_STEPS / max(batches_per_epoch, 1)))))


def auto_patience(batches_per_epoch: int) -> int:
    """Patience of about :data:`PATIENCE_STEPS` optimizer steps, clamped to [10, 50] epochs."""
    return int(min(50, max(10, math.ceil(PATIENCE_STEPS / max(batches_per_epoch, 1)))))


#: Keep every validation score up to this count; above it keep this many quantiles.
MAX_STORED_SCORES = 10_000


@dataclass
class TrainConfig:
    """How to train. Field names mirror the ``aetool train`` options."""

    #: None: enough epochs for about MIN_STEPS optimizer steps (30 to 300 epochs).
    epochs: int | None = None
    batch_size: int = 64
    lr: float = 1e-3
    val_split: float = 0.1
    #: Epochs without validation improvement before stopping; None: auto (about
    #: PATIENCE_STEPS optimizer steps, 10 to 50 epochs); 0: never stop early.
    patience: int | None = None
    seed: int = 0
    device: str = "auto"
    loss: str = "mse"
    noise: str | None = None
    sparsity: str | None = None
    contractive: float = 0.0
    patch_size: int | None = None
    patches_per_epoch: int | None = None
    amp: bool = True
    compile: bool = False
    #: "constant", or "cosine": decay from lr towards 0 over the epochs (per epoch).
    lr_schedule: str = "constant"

    def validate(self) -> None:
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError("--epochs must be at least 1")
        if self.batch_size < 1:
            raise ConfigError("--batch-size must be at least 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError("--lr must be a positive number")
        if not 0 <= self.val_split < 1:
            raise ConfigError("--val-split must be in [0, 1)")
        if self.loss not in LOSSES:
            raise ConfigError(f"--loss must be one of {', '.join(LOSSES)}, not {self.loss!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}")
        if self.contractive < 0:
            raise ConfigError("--contractive must be >= 0")
        if self.patch_size is not None and self.patch_size < 8:
            raise ConfigError("--patch-size must be at least 8")
        if self.compile and self.contractive:
            raise ConfigError(
                "--compile cannot be combined with --contractive (torch.compile has no double "
                "backward); drop one of them"
            )
        parse_noise(self.noise)
        parse_sparsity(self.sparsity)


def parse_sparsity(spec: str | None) -> tuple[float, float] | None:
    """``BETA[:RHO]`` -> (beta, rho); RHO defaults to 0.05."""
    if spec is None or str(spec).strip() in ("", "0", "none"):
        return None
    beta_s, _, rho_s = str(spec).partition(":")
    try:
        beta, rho = float(beta_s), float(rho_s) if rho_s else 0.05
    except ValueError:
        raise ConfigError(
            f"--sparsity {spec!r} is not BETA or BETA:RHO (for example 1e-3:0.05)"
        ) from None
    if beta < 0 or not 0 < rho < 1:
        raise ConfigError(f"--sparsity {spec!r}: BETA must be >= 0 and RHO in (0, 1)")
    return beta, rho


@dataclass
class EpochRecord:
    """What one epoch did."""

    epoch: int
    train_loss: float
    val_loss: float | None
    seconds: float
    images_per_s: float
    best: bool
    lr: float | None = None


class TrainCallback:
    """Hooks called during training; override the ones you need."""

    def on_train_start(self, info: dict[str, Any]) -> None: ...

    def on_epoch_start(self, epoch: int, n_batches: int) -> None: ...

    def on_batch_end(self, epoch: int, batch: int, loss: float, n_images: int) -> None: ...

    def on_epoch_end(self, record: EpochRecord, samples: dict[str, np.ndarray]) -> None:
        """``samples`` holds ``inputs``, ``recons`` (and ``noisy``) float arrays of a few
        validation images, for per-epoch reconstruction grids."""

    def on_train_end(self, result: TrainResult) -> None: ...


@dataclass
class TrainResult:
    """A trained model, the metadata to store with it, and how the run went."""

    model: AutoEncoder
    metadata: dict[str, Any]
    history: list[EpochRecord]
    interrupted: bool = False
    resume_state: dict[str, Tensor] = field(default_factory=dict)
    #: A few validation images and the final model's reconstructions of them.
    samples: dict[str, np.ndarray] = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        """Write the model file (with resume state when interrupted) atomically, and the
        final reconstruction grid beside it (:func:`sample_grid_path`)."""
        out = save_model(path, self.model, self.metadata, extra=self.resume_state or None)
        if self.samples:
            from aetool.report.plots import reconstruction_grid, save_png

            s = self.samples
            save_png(
                reconstruction_grid(s["inputs"], s["recons"], s.get("noisy")), sample_grid_path(out)
            )
        return out


def sample_grid_path(model_path: str | Path) -> Path:
    """Where a model's final reconstruction grid goes: beside it, ``NAME.samples.png``."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name.removesuffix(".safetensors") + ".samples.png")


# ---------------------------------------------------------------------------
# data feeding


class _Feeder:
    """Serves uint8 batches from the cache as float tensors on the device.

    Fixed-size caches are indexed directly; on CUDA the whole cache goes to
    the GPU when it is small, else batches are gathered into pinned memory.
    Native-size caches (patch training) serve random crops.
    """

    def __init__(self, images: ImageSet, device: torch.device, patch: int | None) -> None:
        self.device = device
        self.patch = patch
        if isinstance(images.data, list):
            if patch is None:
                raise ConfigError("images of different sizes need --patch-size (or --image-size)")
            self.arrays = images.data
            too_small = [a.shape for a in self.arrays if min(a.shape[1:]) < patch]
            if too_small:
                raise ConfigError(
                    f"--patch-size {patch} is larger than {len(too_small)} image(s) "
                    f"(smallest {min(min(s[1:]) for s in too_small)} px); use a smaller patch"
                )
            area = np.array([a.shape[1] * a.shape[2] for a in self.arrays], dtype=np.float64)
            self.weights = torch.from_numpy(area / area.sum())
            self.cache = None
        else:
            cache = torch.from_numpy(np.asarray(images.data))
            self.pinned = None
            if device.type == "cuda":
                free = torch.cuda.mem_get_info(device)[0]
                if cache.numel() < free // 4:
                    cache = cache.to(device)
            self.cache = cache

    def count(self) -> int:
        return len(self.arrays) if self.cache is None else self.cache.shape[0]

    def batch(self, idx: Tensor, gen: torch.Generator | None = None) -> Tensor:
        if self.cache is None:
            return self._patches(idx, gen)
        if self.cache.device.type == self.device.type:  # resident (on the GPU, or CPU training)
            x = self.cache.index_select(0, idx.to(self.device))
        else:
            if self.device.type == "cuda":
                shape = (len(idx), *self.cache.shape[1:])
                if self.pinned is None or self.pinned.shape[0] < len(idx):
                    self.pinned = torch.empty(shape, dtype=torch.uint8).pin_memory()
                buf = self.pinned[: len(idx)]
                torch.index_select(self.cache, 0, idx, out=buf)
                x = buf.to(self.device, non_blocking=True)
            else:
                x = self.cache.index_select(0, idx)
        return x.float().div_(255.0)

    def _patches(self, idx: Tensor, gen: torch.Generator | None) -> Tensor:
        p = self.patch
        assert p is not None
        out = []
        for i in idx.tolist():
            a = self.arrays[i]
            h, w = a.shape[1:]
            top = int(torch.randint(0, h - p + 1, (1,), generator=gen))
            left = int(torch.randint(0, w - p + 1, (1,), generator=gen))
            crop = torch.from_numpy(np.ascontiguousarray(a[:, top : top + p, left : left + p]))
            k = int(torch.randint(0, 8, (1,), generator=gen))  # flips and rotations
            if k & 1:
                crop = crop.flip(-1)
            crop = torch.rot90(crop, k >> 1, (1, 2))
            out.append(crop)
        return torch.stack(out).to(self.device).float().div_(255.0)


def _split(n: int, val_split: float, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    perm = torch.randperm(n, generator=gen)
    n_val = int(round(n * val_split)) if n >= 2 and val_split > 0 else 0
    n_val = min(max(n_val, 1 if val_split > 0 and n >= 2 else 0), n - 1)
    return perm[n_val:].sort().values, perm[:n_val].sort().values


# ---------------------------------------------------------------------------
# losses


def _recon_loss(kind: str, recon: Tensor, target: Tensor) -> Tensor:
    if kind == "mse":
        return F.mse_loss(recon, target)
    if kind == "bce":
        return F.binary_cross_entropy(recon.clamp(1e-6, 1 - 1e-6), target.clamp(0, 1))
    return 1 - ssim_map(recon, target).mean()


def _kl_sparsity(z: Tensor, rho: float) -> Tensor:
    rho_hat = torch.sigmoid(z).mean(0).clamp(1e-6, 1 - 1e-6)
    return (rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))).sum()


def contractive_penalty(model: AutoEncoder, x: Tensor, z: Tensor, probes: int = 1) -> Tensor:
    """Unbiased estimate of the mean squared Frobenius norm of the encoder Jacobian.

    Uses ``E_v ||J^T v||^2 = ||J||_F^2`` for ``v ~ N(0, I)`` (Hutchinson): one
    vector-Jacobian product per probe, cheap for conv encoders. ``x`` must
    require grad and ``z = model.encode(x)``.
    """
    total = x.new_zeros(())
    for _ in range(probes):
        v = torch.randn_like(z)
        (g,) = torch.autograd.grad(z, x, v, create_graph=True)
        total = total + g.pow(2).flatten(1).sum(1).mean()
    return total / probes


# ---------------------------------------------------------------------------
# the loop


def _batches(idx: Tensor, batch_size: int, gen: torch.Generator, shuffle: bool) -> Iterator[Tensor]:
    order = idx[torch.randperm(len(idx), generator=gen)] if shuffle else idx
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def train(
    data: ImageSet | str | Path | Sequence[str | Path],
    model_config: ModelConfig | None = None,
    config: TrainConfig | None = None,
    callbacks: Sequence[TrainCallback] = (),
    *,
    resume_from: str | Path | None = None,
) -> TrainResult:
    """Train an autoencoder on a folder (or decoded :class:`ImageSet`) of normal images.

    Args:
        data: an :class:`ImageSet`, or files/folders to load with default settings.
        model_config: architecture and latent size; channels and size are taken
            from the data.
        config: training settings.
        callbacks: progress hooks.
        resume_from: a model file written by an interrupted run to continue.

    Returns:
        The trained model (best validation epoch), its metadata and history.
        Ctrl-C returns early with ``interrupted=True`` and resume state.

    Raises:
        TrainingError: the loss became NaN or infinite.
    """
    mcfg = copy.copy(model_config or ModelConfig())
    cfg = config or TrainConfig()
    cfg.validate()
    images = (
        data
        if isinstance(data, ImageSet)
        else load_images(
            [data] if isinstance(data, (str, Path)) else data,
            native_size=cfg.patch_size is not None,
        )
    )
    # Under torchrun: join the process group; each process then has its own device.
    ddp = setup_distributed(cfg.device)
    device = ddp.device if ddp else resolve_device(cfg.device)
    if ddp and not ddp.is_main:
        callbacks = ()  # only rank 0 reports progress
    noise = parse_noise(cfg.noise)
    sparsity = parse_sparsity(cfg.sparsity)

    mcfg.channels = images.channels
    if images.size is not None:
        mcfg.height, mcfg.width = images.size
    if cfg.patch_size is not None:
        mcfg.height = mcfg.width = cfg.patch_size

    resumed: dict[str, Any] | None = None
    resumed_best: dict[str, Tensor] = {}
    loaded = None
    torch.manual_seed(cfg.seed)
    if resume_from is not None:
        loaded = load_model(resume_from)
        resumed = loaded.metadata.get("training", {})
        if resumed.get("completed", True) or "resume.epoch" not in loaded.extra:
            raise ConfigError(f"{resume_from} holds a finished run; nothing to resume")
        model = loaded.model
        resumed_best = copy.deepcopy(model.state_dict())
        model.load_state_dict(
            {
                k[len("resume.model.") :]: v
                for k, v in loaded.extra.items()
                if k.startswith("resume.model.")
            }
        )
    else:
        model = model_from_config(mcfg)
    if cfg.patch_size is not None and not model.fully_convolutional:
        raise ConfigError(
            f"--patch-size needs a fully convolutional architecture, not {mcfg.arch!r}"
        )
    if (sparsity or cfg.contractive) and not model.has_vector_latent:
        raise ConfigError(
            f"--sparsity and --contractive need a model with a vector latent, not {mcfg.arch!r}"
        )
    place(model, device)
    # The penalties need the latent: one forward returning (z, recon) keeps DDP's hooks in play.
    net = wrap(EncodeDecode(model) if (sparsity or cfg.contractive) else model, ddp)
    if cfg.compile:
        net = torch.compile(net)

    gen = torch.Generator().manual_seed(cfg.seed)
    # Patch crops consume RNG per image; each rank crops its own, keeping `gen` in step.
    crop_gen = torch.Generator().manual_seed(cfg.seed + 5 + ddp.rank) if ddp else gen
    feeder = _Feeder(images, device, cfg.patch_size)
    train_idx, val_idx = _split(feeder.count(), cfg.val_split, gen)
    if cfg.patch_size is not None:
        per_epoch = cfg.patches_per_epoch or max(cfg.batch_size * 32, len(train_idx))
        val_gen = torch.Generator().manual_seed(cfg.seed + 1)
        src = val_idx if len(val_idx) else train_idx
        val_pick = src[
            torch.randint(0, len(src), (max(cfg.batch_size * 4, 64),), generator=val_gen)
        ]
        val_fixed = feeder.batch(val_pick, val_gen)
    else:
        per_epoch = len(train_idx)
        val_fixed = None
    noise_gen = torch.Generator(device=device).manual_seed(cfg.seed + 2 + (ddp.rank if ddp else 0))
    val_noise_seed = cfg.seed + 3

    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    amp_dtype = autocast_dtype(device) if cfg.amp else None
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = images.size is not None or cfg.patch_size is not None

    history: list[EpochRecord] = []
    best_val = math.inf
    best_state = copy.deepcopy(model.state_dict())
    best_epoch = 0
    start_epoch = 1
    stale = 0
    seconds_before = 0.0
    if resumed is not None and loaded is not None:
        _load_resume(loaded.extra, opt, gen)
        history = [EpochRecord(**r) for r in resumed.get("epochs", [])]
        start_epoch = int(loaded.extra["resume.epoch"].item()) + 1
        best_val = min(
            (r.val_loss if r.val_loss is not None else r.train_loss for r in history),
            default=math.inf,
        )
        best_epoch = resumed.get("best_epoch", 0)
        best_state = resumed_best
        stale = resumed.get("stale", 0)
        seconds_before = float(resumed.get("seconds", 0.0))

    n_batches = math.ceil(per_epoch / cfg.batch_size)
    epochs = cfg.epochs if cfg.epochs is not None else auto_epochs(n_batches)
    patience = cfg.patience if cfg.patience is not None else auto_patience(n_batches)
    info = {
        "images": len(images),
        "train": len(train_idx),
        "val": len(val_idx),
        "skipped": len(images.skipped),
        "device": str(device),
        "arch": mcfg.arch,
        "params": sum(p.numel() for p in model.parameters()),
        "batches_per_epoch": n_batches,
        "start_epoch": start_epoch,
        "epochs": epochs,
        "world_size": ddp.world_size if ddp else 1,
    }
    for cb in callbacks:
        cb.on_train_start(info)

    t_start = time.perf_counter()
    interrupted = False
    epoch = start_epoch - 1
    try:
        for epoch in range(start_epoch, epochs + 1):
            for cb in callbacks:
                cb.on_epoch_start(epoch, n_batches)
            if cfg.lr_schedule == "cosine":
                for group in opt.param_groups:
                    group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / epochs))
            model.train()
            t0 = time.perf_counter()
            total, seen = 0.0, 0
            if cfg.patch_size is not None:
                draws = torch.multinomial(feeder.weights[train_idx], per_epoch, True, generator=gen)
                batch_iter: Iterator[Tensor] = _batches(
                    train_idx[draws], cfg.batch_size, gen, False
                )
            else:
                batch_iter = _batches(train_idx, cfg.batch_size, gen, True)
            for b, global_idx in enumerate(batch_iter):
                idx = shard_batch(global_idx, ddp)
                clean = feeder.batch(idx, crop_gen)
                x = noise.apply(clean, noise_gen) if noise else clean
                loss = _step(net, opt, scaler, amp_dtype, device, x, clean, cfg, sparsity)
                if ddp:  # the global batch's loss: every rank sees it (and a NaN) alike
                    loss_sum, n_sum = ddp.sum(loss * len(idx), len(idx))
                    loss = loss_sum / n_sum
                if not math.isfinite(loss):
                    raise TrainingError(
                        f"the loss became {loss} at epoch {epoch}, batch {b + 1}; training "
                        f"diverged: try a lower --lr (now {cfg.lr:g})"
                    )
                total += loss * len(global_idx)
                seen += len(global_idx)
                for cb in callbacks:
                    cb.on_batch_end(epoch, b + 1, loss, len(global_idx))
            secs = time.perf_counter() - t0
            train_loss = total / max(seen, 1)
            val_loss = None
            if ddp:
                ddp.broadcast_buffers(model)
            if val_fixed is not None or len(val_idx):
                val_loss = _evaluate(
                    model, feeder, val_idx, val_fixed, cfg, noise, val_noise_seed, device, ddp
                )
            monitor = val_loss if val_loss is not None else train_loss
            improved = monitor < best_val
            if improved:
                best_val, best_epoch, stale = monitor, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
            rec = EpochRecord(
                epoch,
                train_loss,
                val_loss,
                secs,
                seen / max(secs, 1e-9),
                improved,
                opt.param_groups[0]["lr"],
            )
            history.append(rec)
            samples = (
                _samples(
                    model, feeder, val_idx if len(val_idx) else train_idx, val_fixed, noise, cfg
                )
                if callbacks
                else {}
            )
            for cb in callbacks:
                cb.on_epoch_end(rec, samples)
            if patience and stale >= patience:
                break
    except KeyboardInterrupt:
        interrupted = True

    seconds = seconds_before + time.perf_counter() - t_start
    resume_state: dict[str, Tensor] = {}
    last_epoch = history[-1].epoch if history else start_epoch - 1
    if interrupted:
        resume_state = _resume_state(model, opt, gen, last_epoch)
    model.load_state_dict(best_state)
    model.eval()
    distributed = None
    if ddp:  # a collective: every rank gets here, as every rank made the same stop decision
        distributed = {
            "backend": ddp.backend,
            "world_size": ddp.world_size,
            "rank_checksums": ddp.gather_object(state_checksum(model)),
        }

    training = {
        "data": [str(p) for p in _data_roots(data)],
        "image_count": len(images),
        "train_count": len(train_idx),
        "val_count": len(val_idx),
        "skipped": [asdict(s) for s in images.skipped],
        "seed": cfg.seed,
        "config": asdict(cfg),
        "model_config": asdict(mcfg),
        "epochs_requested": epochs,
        "patience": patience,
        "epochs_run": len(history),
        "best_epoch": best_epoch,
        "stale": stale,
        "completed": not interrupted,
        "stopped_early": bool(patience and stale >= patience and last_epoch < epochs),
        "history": {
            "train_loss": [r.train_loss for r in history],
            "val_loss": [r.val_loss for r in history],
        },
        "epochs": [asdict(r) for r in history],
        "loss": cfg.loss,
        "noise": str(noise) if noise else None,
        "lr": cfg.lr,
        "batch_size": cfg.batch_size,
        "device": str(device),
        "world_size": ddp.world_size if ddp else 1,
        "distributed": distributed,
        "seconds": seconds,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {
            "aetool": __version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
    }
    validation = _validation_record(model, feeder, val_idx, train_idx, val_fixed, device)
    metadata = {"preprocessing": images.preprocessing() | {"patch_size": cfg.patch_size},
                "training": training, "validation": validation}  # fmt: skip
    final_samples = _samples(
        model, feeder, val_idx if len(val_idx) else train_idx, val_fixed, noise, cfg
    )
    result = TrainResult(model.cpu(), metadata, history, interrupted, resume_state, final_samples)
    for cb in callbacks:
        cb.on_train_end(result)
    return result


def _data_roots(data: object) -> list[object]:
    if isinstance(data, ImageSet):
        if not data.refs:
            return []
        return [Path(os.path.commonpath([str(r.path.resolve().parent) for r in data.refs]))]
    if isinstance(data, (str, Path)):
        return [Path(data).resolve()]
    return [Path(p).resolve() for p in data]  # type: ignore[union-attr]


def _step(
    net: torch.nn.Module,
    opt: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    amp_dtype: torch.dtype | None,
    device: torch.device,
    x: Tensor,
    clean: Tensor,
    cfg: TrainConfig,
    sparsity: tuple[float, float] | None,
) -> float:
    opt.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        if sparsity or cfg.contractive:
            if cfg.contractive:
                x = x.detach().requires_grad_(True)
            z, recon = net(x)  # net wraps EncodeDecode
        else:
            z = None
            recon = net(x)
    loss = _recon_loss(cfg.loss, recon.float(), clean)
    if sparsity and z is not None:
        loss = loss + sparsity[0] * _kl_sparsity(z.float(), sparsity[1])
    if cfg.contractive and z is not None:
        loss = loss + cfg.contractive * contractive_penalty(net, x, z.float())  # type: ignore[arg-type]
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    else:
        loss.backward()
        opt.step()
    return float(loss.detach())


@torch.no_grad()
def reconstruct(model: AutoEncoder, x: Tensor, batch_size: int = 256) -> Tensor:
    """Reconstruct a batch in chunks, in eval mode, without gradients."""
    was = model.training
    model.eval()
    out = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    model.train(was)
    return out


@torch.no_grad()
def _evaluate(
    model: AutoEncoder,
    feeder: _Feeder,
    val_idx: Tensor,
    val_fixed: Tensor | None,
    cfg: TrainConfig,
    noise: NoiseSpec | None,
    seed: int,
    device: torch.device,
    ddp: DistContext | None = None,
) -> float:
    model.eval()
    gen = torch.Generator(device=device).manual_seed(seed)  # same corruption every epoch
    total, n = 0.0, 0
    if ddp:  # each rank scores a strided share; the sums are all-reduced below
        val_idx = val_idx[ddp.rank :: ddp.world_size]
        val_fixed = val_fixed[ddp.rank :: ddp.world_size] if val_fixed is not None else None
    chunks = [val_fixed] if val_fixed is not None else (
        feeder.batch(i) for i in val_idx.split(max(cfg.batch_size, 256))
    )  # fmt: skip
    for clean in chunks:
        if not len(clean):  # a rank's share can be empty when there are few images
            continue
        x = noise.apply(clean, gen) if noise else clean
        total += float(_recon_loss(cfg.loss, model(x).float(), clean)) * len(clean)
        n += len(clean)
    model.train()
    if ddp:
        total, n = ddp.sum(total, n)
    return total / max(n, 1)


@torch.no_grad()
def _samples(
    model: AutoEncoder,
    feeder: _Feeder,
    idx: Tensor,
    fixed: Tensor | None,
    noise: NoiseSpec | None,
    cfg: TrainConfig,
    n: int = 8,
) -> dict[str, np.ndarray]:
    clean = fixed[:n] if fixed is not None else feeder.batch(idx[:n])
    x = noise.apply(clean, torch.Generator(clean.device).manual_seed(cfg.seed)) if noise else clean
    out = {"inputs": clean.cpu().numpy(), "recons": reconstruct(model, x).float().cpu().numpy()}
    if noise:
        out["noisy"] = x.clamp(0, 1).cpu().numpy()
    return out


@torch.no_grad()
def _validation_record(
    model: AutoEncoder,
    feeder: _Feeder,
    val_idx: Tensor,
    train_idx: Tensor,
    val_fixed: Tensor | None,
    device: torch.device,
) -> dict[str, Any]:
    """Per-image scores of held-out normal images (clean input), for thresholds."""
    model.to(device).eval()
    source = "validation" if len(val_idx) else "training"
    idx = val_idx if len(val_idx) else train_idx
    scores: dict[str, list[float]] = {k: [] for k in SCORE_KINDS}
    chunks = [val_fixed] if val_fixed is not None else (feeder.batch(i) for i in idx.split(256))
    for clean in chunks:
        recon = model(clean).float()
        for kind in SCORE_KINDS:
            scores[kind].extend(image_scores(clean, recon, kind).cpu().tolist())
    out: dict[str, Any] = {"count": len(scores["mse"]), "source": source, "quantiles_only": False}
    stored: dict[str, list[float]] = {}
    for kind, vals in scores.items():
        arr = np.sort(np.asarray(vals, dtype=np.float64))
        if len(arr) > MAX_STORED_SCORES:
            arr = np.quantile(arr, np.linspace(0, 1, MAX_STORED_SCORES))
            out["quantiles_only"] = True
        stored[kind] = [float(v) for v in arr]
    out["scores"] = stored
    out["summary"] = {
        k: {
            "mean": float(np.mean(v)),
            "std": float(np.std(v)),
            "median": float(np.median(v)),
            "p95": float(np.quantile(v, 0.95)),
            "p99": float(np.quantile(v, 0.99)),
            "max": float(np.max(v)),
        }
        for k, v in stored.items()
        if v
    }
    return out


# ---------------------------------------------------------------------------
# resume


def _resume_state(
    model: AutoEncoder, opt: torch.optim.Optimizer, gen: torch.Generator, epoch: int
) -> dict[str, Tensor]:
    state: dict[str, Tensor] = {
        f"resume.model.{k}": v.detach().clone() for k, v in model.state_dict().items()
    }
    osd = opt.state_dict()
    for pid, pstate in osd["state"].items():
        for name, val in pstate.items():
            t = val if isinstance(val, Tensor) else torch.tensor(val)
            state[f"resume.optim.{pid}.{name}"] = t.detach().clone()
    state["resume.rng"] = gen.get_state()
    state["resume.epoch"] = torch.tensor(epoch)
    return state


def _load_resume(
    extra: dict[str, Tensor], opt: torch.optim.Optimizer, gen: torch.Generator
) -> None:
    osd = opt.state_dict()
    for key, val in extra.items():
        if key.startswith("resume.optim."):
            pid_s, name = key[len("resume.optim.") :].split(".", 1)
            osd["state"].setdefault(int(pid_s), {})[name] = val
    opt.load_state_dict(osd)
    gen.set_state(extra["resume.rng"])


class SampleGrids(TrainCallback):
    """Writes a reconstruction grid (inputs, noisy inputs, reconstructions) per epoch.

    Files are ``DIR/epoch_001.png``, ``DIR/epoch_002.png``, ... so a user can
    watch the model learn.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def on_epoch_end(self, record: EpochRecord, samples: dict[str, np.ndarray]) -> None:
        from aetool.report.plots import reconstruction_grid, save_png

        grid = reconstruction_grid(samples["inputs"], samples["recons"], samples.get("noisy"))
        save_png(grid, self.directory / f"epoch_{record.epoch:03d}.png")
