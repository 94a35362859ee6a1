"""Training loop: from a decoded image cache to a trained model and its record.

The loop knows nothing about any particular architecture: it needs
``encode``/``decode`` only for the sparsity and contractive penalties.
Progress is reported through :class:`~aetool.training.callbacks.TrainCallback`
methods, so the CLI can draw rich bars while Python users pass their own
callbacks (or none).

:func:`train` reads as the run does: set up (or resume), run epochs until the
count is reached or early stopping ends it, then restore the best epoch's
weights and write the run record. Ctrl-C ends the epochs early and returns a
result that can be saved and resumed.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from aetool.data.cache import ImageSet, load_images
from aetool.devices import autocast_dtype, place, resolve_device
from aetool.errors import ConfigError, TrainingError
from aetool.models.registry import AutoEncoder, ModelConfig, model_from_config
from aetool.training.callbacks import EpochRecord, TrainCallback
from aetool.training.config import TrainConfig, auto_epochs, auto_patience, parse_sparsity
from aetool.training.distributed import EncodeDecode, shard_batch, state_checksum, wrap
from aetool.training.distributed import setup as setup_distributed
from aetool.training.feeder import BatchFeeder, index_batches, split_indices
from aetool.training.losses import contractive_penalty, kl_sparsity, reconstruction_loss
from aetool.training.noise import parse_noise
from aetool.training.record import RunRecord, TrainResult, data_roots, validation_record
from aetool.training.resume import (
    capture_resume_state,
    check_resume_matches,
    load_interrupted,
    restore_resume_state,
)

__all__ = ["EarlyStopping", "reconstruct", "train"]


def train(
    data: ImageSet | str | Path | Sequence[str | Path],
    model_config: ModelConfig | None = None,
    config: TrainConfig | None = None,
    callbacks: Sequence[TrainCallback] = (),
    *,
    resume_from: str | Path | None = None,
    data_sources: Sequence[str | Path] | None = None,
) -> TrainResult:
    """Train an autoencoder on a folder (or decoded :class:`ImageSet`) of normal images.

    Args:
        data: an :class:`ImageSet`, or files/folders to load with default settings.
        model_config: architecture and latent size; channels and size are taken
            from the data.
        config: training settings.
        callbacks: progress hooks.
        resume_from: a model file written by an interrupted run to continue.
        data_sources: how the run record names the training data (the files and
            folders given, or a description); default: ``data`` resolved, or for
            an :class:`ImageSet` the folder that holds all its images.

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
    run = _Run(images, mcfg, cfg, resume_from)
    if run.ddp and not run.ddp.is_main:
        callbacks = ()  # only rank 0 reports progress
    n_batches = math.ceil(run.per_epoch / cfg.batch_size)
    epochs = cfg.epochs if cfg.epochs is not None else auto_epochs(n_batches)
    patience = cfg.patience if cfg.patience is not None else auto_patience(n_batches)
    stopping = EarlyStopping(patience, copy.deepcopy(run.model.state_dict()))
    history, start_epoch, seconds_before = run.resume(stopping)
    for cb in callbacks:
        cb.on_train_start(run.start_info(n_batches, start_epoch, epochs))

    t_start = time.perf_counter()
    interrupted = False
    try:
        for epoch in range(start_epoch, epochs + 1):
            rec = run.train_epoch(epoch, epochs, n_batches, stopping, callbacks)
            history.append(rec)
            samples = run.samples() if callbacks else {}
            for cb in callbacks:
                cb.on_epoch_end(rec, samples)
            if stopping.should_stop():
                break
            if cfg.time_budget and time.perf_counter() - t_start >= cfg.time_budget:
                break  # the run record's epochs_run < epochs_requested says so
    except KeyboardInterrupt:
        interrupted = True

    seconds = seconds_before + time.perf_counter() - t_start
    last_epoch = history[-1].epoch if history else start_epoch - 1
    sources = data_sources if data_sources is not None else data_roots(data)
    result = run.finish(
        [str(s) for s in sources], history, stopping, interrupted, last_epoch, epochs, seconds
    )
    for cb in callbacks:
        cb.on_train_end(result)
    return result


class EarlyStopping:
    """The best epoch so far (lowest monitored loss), its weights, and epochs since.

    ``patience`` epochs without improvement end the run; 0 never ends it.
    """

    def __init__(self, patience: int, state: dict[str, Tensor]) -> None:
        self.patience = patience
        #: The best epoch's weights (the first ones until an epoch improves).
        self.state = state
        self.value = math.inf
        self.epoch = 0
        self.stale = 0

    def update(self, monitor: float, epoch: int, model: torch.nn.Module) -> bool:
        """Record an epoch's monitored loss; True when it is the best so far."""
        if monitor < self.value:
            self.value, self.epoch, self.stale = monitor, epoch, 0
            self.state = copy.deepcopy(model.state_dict())
            return True
        self.stale += 1
        return False

    def should_stop(self) -> bool:
        """True once ``patience`` epochs in a row brought no improvement."""
        return bool(self.patience and self.stale >= self.patience)


class _Run:
    """One training run's set-up and state: the model, optimizer, data and RNGs."""

    def __init__(
        self, images: ImageSet, mcfg: ModelConfig, cfg: TrainConfig, resume_from: str | Path | None
    ) -> None:
        self.images, self.mcfg, self.cfg = images, mcfg, cfg
        # Under torchrun: join the process group; each process then has its own device.
        self.ddp = setup_distributed(cfg.device)
        self.device = self.ddp.device if self.ddp else resolve_device(cfg.device)
        self.noise = parse_noise(cfg.noise)
        self.sparsity = parse_sparsity(cfg.sparsity)
        mcfg.channels = images.channels
        if images.size is not None:
            mcfg.height, mcfg.width = images.size
        if cfg.patch_size is not None:
            mcfg.height = mcfg.width = cfg.patch_size
        torch.manual_seed(cfg.seed)
        self.resumed = load_interrupted(resume_from) if resume_from is not None else None
        if self.resumed is not None:
            check_resume_matches(self.resumed.model, mcfg, resume_from)
        self.model = self.resumed.model if self.resumed else model_from_config(mcfg)
        self.net = self._place_model()
        self._split_data()
        rank = self.ddp.rank if self.ddp else 0
        self.noise_gen = torch.Generator(device=self.device).manual_seed(cfg.seed + 2 + rank)
        self.val_noise_seed = cfg.seed + 3
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.amp_dtype = autocast_dtype(self.device) if cfg.amp else None
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = images.size is not None or cfg.patch_size is not None

    def _place_model(self) -> torch.nn.Module:
        """Check the model suits the settings, move it to the device, and wrap it for DDP."""
        model, cfg, arch = self.model, self.cfg, self.mcfg.arch
        if cfg.patch_size is not None and not model.fully_convolutional:
            raise ConfigError(
                f"--patch-size needs a fully convolutional architecture, not {arch!r}"
            )
        if (self.sparsity or cfg.contractive) and not model.has_vector_latent:
            raise ConfigError(
                f"--sparsity and --contractive need a model with a vector latent, not {arch!r}"
            )
        place(model, self.device)
        # The penalties need the latent: one forward returning (z, recon) keeps DDP's hooks in play.
        net = wrap(EncodeDecode(model) if (self.sparsity or cfg.contractive) else model, self.ddp)
        return torch.compile(net) if cfg.compile else net  # type: ignore[return-value]

    def _split_data(self) -> None:
        """The train/validation split, images per epoch, and fixed validation patches."""
        cfg, ddp = self.cfg, self.ddp
        self.gen = torch.Generator().manual_seed(cfg.seed)
        # Patch crops consume RNG per image; each rank crops its own, keeping `gen` in step.
        self.crop_gen = torch.Generator().manual_seed(cfg.seed + 5 + ddp.rank) if ddp else self.gen
        self.feeder = BatchFeeder(self.images, self.device, cfg.patch_size)
        self.train_idx, self.val_idx = split_indices(self.feeder.count(), cfg.val_split, self.gen)
        self.val_fixed: Tensor | None = None
        self.per_epoch = len(self.train_idx)
        if cfg.patch_size is not None:
            n_train = len(self.train_idx)
            self.per_epoch = cfg.patches_per_epoch or max(cfg.batch_size * 32, n_train)
            val_gen = torch.Generator().manual_seed(cfg.seed + 1)
            src = self.val_idx if len(self.val_idx) else self.train_idx
            n_pick = max(cfg.batch_size * 4, 64)
            val_pick = src[torch.randint(0, len(src), (n_pick,), generator=val_gen)]
            self.val_fixed = self.feeder.batch(val_pick, val_gen)

    def resume(self, stopping: EarlyStopping) -> tuple[list[EpochRecord], int, float]:
        """Continue an interrupted run's optimizer, RNG and early stopping.

        Returns its epoch history, the first epoch to run and the seconds it took.
        """
        if self.resumed is None:
            return [], 1, 0.0
        record = self.resumed.record
        restore_resume_state(self.resumed.extra, self.opt, self.gen)
        history = [EpochRecord(**r) for r in record.get("epochs", [])]
        stopping.value = min(
            (r.val_loss if r.val_loss is not None else r.train_loss for r in history),
            default=math.inf,
        )
        stopping.epoch = record.get("best_epoch", 0)
        stopping.state = self.resumed.best_state
        stopping.stale = record.get("stale", 0)
        return history, self.resumed.epoch + 1, float(record.get("seconds", 0.0))

    def start_info(self, n_batches: int, start_epoch: int, epochs: int) -> dict[str, Any]:
        """What :meth:`TrainCallback.on_train_start` is told."""
        return {
            "images": len(self.images),
            "train": len(self.train_idx),
            "val": len(self.val_idx),
            "skipped": len(self.images.skipped),
            "device": str(self.device),
            "arch": self.mcfg.arch,
            "params": sum(p.numel() for p in self.model.parameters()),
            "batches_per_epoch": n_batches,
            "start_epoch": start_epoch,
            "epochs": epochs,
            "world_size": self.ddp.world_size if self.ddp else 1,
        }

    def train_epoch(
        self,
        epoch: int,
        epochs: int,
        n_batches: int,
        stopping: EarlyStopping,
        callbacks: Sequence[TrainCallback],
    ) -> EpochRecord:
        """Train one epoch, validate, and update early stopping."""
        cfg, opt = self.cfg, self.opt
        for cb in callbacks:
            cb.on_epoch_start(epoch, n_batches)
        if cfg.lr_schedule == "cosine":
            for group in opt.param_groups:
                group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / epochs))
        self.model.train()
        t0 = time.perf_counter()
        total, seen = self._train_batches(epoch, callbacks)
        secs = time.perf_counter() - t0
        train_loss = total / max(seen, 1)
        val_loss = None
        if self.ddp:
            self.ddp.broadcast_buffers(self.model)
        if self.val_fixed is not None or len(self.val_idx):
            val_loss = self._evaluate()
        monitor = val_loss if val_loss is not None else train_loss
        improved = stopping.update(monitor, epoch, self.model)
        lr = opt.param_groups[0]["lr"]
        return EpochRecord(epoch, train_loss, val_loss, secs, seen / max(secs, 1e-9), improved, lr)

    def _epoch_batches(self) -> Iterator[Tensor]:
        cfg = self.cfg
        if cfg.patch_size is None:
            return index_batches(self.train_idx, cfg.batch_size, self.gen, True)
        weights = self.feeder.weights[self.train_idx]
        draws = torch.multinomial(weights, self.per_epoch, True, generator=self.gen)
        return index_batches(self.train_idx[draws], cfg.batch_size, self.gen, False)

    def _train_batches(self, epoch: int, callbacks: Sequence[TrainCallback]) -> tuple[float, int]:
        """One pass over the epoch's batches: (summed loss, images seen)."""
        ddp, noise = self.ddp, self.noise
        total, seen = 0.0, 0
        for b, global_idx in enumerate(self._epoch_batches()):
            idx = shard_batch(global_idx, ddp)
            clean = self.feeder.batch(idx, self.crop_gen)
            x = noise.apply(clean, self.noise_gen) if noise else clean
            loss = self._step(x, clean)
            if ddp:  # the global batch's loss: every rank sees it (and a NaN) alike
                loss_sum, n_sum = ddp.sum(loss * len(idx), len(idx))
                loss = loss_sum / n_sum
            if not math.isfinite(loss):
                raise TrainingError(
                    f"the loss became {loss} at epoch {epoch}, batch {b + 1}; training "
                    f"diverged: try a lower --lr (now {self.cfg.lr:g})"
                )
            total += loss * len(global_idx)
            seen += len(global_idx)
            for cb in callbacks:
                cb.on_batch_end(epoch, b + 1, loss, len(global_idx))
        return total, seen

    def _step(self, x: Tensor, clean: Tensor) -> float:
        """One optimizer step on a batch; the loss."""
        cfg, opt, scaler, sparsity = self.cfg, self.opt, self.scaler, self.sparsity
        amp_dtype = self.amp_dtype
        opt.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            if sparsity or cfg.contractive:
                if cfg.contractive:
                    x = x.detach().requires_grad_(True)
                z, recon = self.net(x)  # net wraps EncodeDecode
            else:
                z = None
                recon = self.net(x)
        loss = reconstruction_loss(cfg.loss, recon.float(), clean)
        if sparsity and z is not None:
            loss = loss + sparsity[0] * kl_sparsity(z.float(), sparsity[1])
        if cfg.contractive and z is not None:
            loss = loss + cfg.contractive * contractive_penalty(self.net, x, z.float())
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        return float(loss.detach())

    @torch.no_grad()
    def _evaluate(self) -> float:
        """The validation loss; every epoch corrupts the same images alike."""
        model, cfg, noise, ddp = self.model, self.cfg, self.noise, self.ddp
        val_idx, val_fixed = self.val_idx, self.val_fixed
        model.eval()
        gen = torch.Generator(device=self.device).manual_seed(self.val_noise_seed)
        total = 0.0
        n: float = 0
        if ddp:  # each rank scores a strided share; the sums are all-reduced below
            val_idx = val_idx[ddp.rank :: ddp.world_size]
            val_fixed = val_fixed[ddp.rank :: ddp.world_size] if val_fixed is not None else None
        chunks = [val_fixed] if val_fixed is not None else (
            self.feeder.batch(i) for i in val_idx.split(max(cfg.batch_size, 256))
        )  # fmt: skip
        for clean in chunks:
            if not len(clean):  # a rank's share can be empty when there are few images
                continue
            x = noise.apply(clean, gen) if noise else clean
            total += float(reconstruction_loss(cfg.loss, model(x).float(), clean)) * len(clean)
            n += len(clean)
        model.train()
        if ddp:
            total, n = ddp.sum(total, n)
        return total / max(n, 1)

    @torch.no_grad()
    def samples(self, n: int = 8) -> dict[str, np.ndarray]:
        """A few validation images (training ones when none are held out), noisy copies
        when training with noise, and the model's reconstructions."""
        noise = self.noise
        idx = self.val_idx if len(self.val_idx) else self.train_idx
        fixed = self.val_fixed
        clean = fixed[:n] if fixed is not None else self.feeder.batch(idx[:n])
        x = (
            noise.apply(clean, torch.Generator(clean.device).manual_seed(self.cfg.seed))
            if noise
            else clean
        )
        out = {
            "inputs": clean.cpu().numpy(),
            "recons": reconstruct(self.model, x).float().cpu().numpy(),
        }
        if noise:
            out["noisy"] = x.clamp(0, 1).cpu().numpy()
        return out

    def finish(
        self,
        data: list[str],
        history: list[EpochRecord],
        stopping: EarlyStopping,
        interrupted: bool,
        last_epoch: int,
        epochs: int,
        seconds: float,
    ) -> TrainResult:
        """Restore the best weights and write the run and validation records."""
        model, ddp = self.model, self.ddp
        resume_state: dict[str, Tensor] = {}
        if interrupted:
            resume_state = capture_resume_state(model, self.opt, self.gen, last_epoch)
        model.load_state_dict(stopping.state)
        model.eval()
        distributed = None
        if ddp:  # a collective: every rank gets here, as every rank made the same stop decision
            distributed = {
                "backend": ddp.backend,
                "world_size": ddp.world_size,
                "rank_checksums": ddp.gather_object(state_checksum(model)),
            }
        training = RunRecord(
            data=data,
            images=self.images,
            train_count=len(self.train_idx),
            val_count=len(self.val_idx),
            config=self.cfg,
            model_config=self.mcfg,
            epochs_requested=epochs,
            patience=stopping.patience,
            history=history,
            best_epoch=stopping.epoch,
            stale=stopping.stale,
            last_epoch=last_epoch,
            interrupted=interrupted,
            noise=self.noise,
            device=self.device,
            world_size=ddp.world_size if ddp else 1,
            distributed=distributed,
            seconds=seconds,
        ).to_dict()
        validation = self._validation_record()
        metadata = {"preprocessing": self.images.preprocessing() | {"patch_size": self.cfg.patch_size},
                    "training": training, "validation": validation}  # fmt: skip
        final_samples = self.samples()
        return TrainResult(model.cpu(), metadata, history, interrupted, resume_state, final_samples)

    def _validation_record(self) -> dict[str, Any]:
        """Scores of the held-out images (training ones when none are held out), clean."""
        self.model.to(self.device).eval()
        source = "validation" if len(self.val_idx) else "training"
        idx = self.val_idx if len(self.val_idx) else self.train_idx
        chunks = (
            [self.val_fixed]
            if self.val_fixed is not None
            else (self.feeder.batch(i) for i in idx.split(256))
        )
        return validation_record(self.model, chunks, source)


@torch.no_grad()
def reconstruct(model: AutoEncoder, x: Tensor, batch_size: int = 256) -> Tensor:
    """Reconstruct a batch in chunks, in eval mode, without gradients."""
    was = model.training
    model.eval()
    out = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    model.train(was)
    return out
