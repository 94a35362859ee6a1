"""Training the ``draem`` defect-segmentation model on simulated defects, within a time budget.

Each step takes a batch of normal training images, flips them at random,
pastes simulated defects into a share of them
(:func:`~aetool.training.defects.simulate_defects`) and teaches the network
the defect masks (focal loss; plus MSE and SSIM on the reconstruction when
the model has its reconstructive subnetwork). The learning rate warms up over
50 steps and then follows a cosine towards 0 over the run's *progress*:
the larger of steps done / step limit and seconds spent / time budget, so a
run always anneals and ends in time on a shared or slow machine.

Progress is reported per "epoch" of :data:`STEPS_PER_EPOCH` steps through the
usual :class:`~aetool.training.callbacks.TrainCallback` hooks; each epoch's
validation loss is the focal loss on the held-out images with defects from a
fixed seed. The final weights are kept (no early stopping: the schedule
anneals), and the model file records the validation scores and pixel
quantiles of the held-out normal images like any other model.

:func:`choose_arch` is the rule behind ``aetool train --arch auto``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from aetool.data.cache import ImageSet
from aetool.devices import place, resolve_device
from aetool.errors import TrainingError
from aetool.models.draem import DraemModel
from aetool.models.registry import ModelConfig
from aetool.training.callbacks import EpochRecord, TrainCallback
from aetool.training.config import TrainConfig
from aetool.training.defects import simulate_defects
from aetool.training.feeder import split_indices
from aetool.training.loop import EarlyStopping
from aetool.training.record import RunRecord, TrainResult, data_roots, validation_record

__all__ = [
    "DRAEM_BATCH",
    "DRAEM_MIN_SIDE",
    "DRAEM_TIME_BUDGET",
    "DRAEM_WORK_SIZE",
    "DEFAULT_STEPS",
    "STEPS_PER_EPOCH",
    "choose_arch",
    "focal_loss",
    "train_draem",
]

#: Steps per reported "epoch".
STEPS_PER_EPOCH = 50
#: Steps when --epochs is not given (about 32,000 images at batch 16; about 9 minutes
#: of an unloaded 2-core CPU at 128x128): the time budget only cuts it short on a
#: slower or busier machine, so the model does not depend on the load otherwise.
DEFAULT_STEPS = 2000
#: Images whose short side is at least this train ``draem`` under ``--arch auto``: on
#: 300 px solar cells it beat the conv autoencoder and PCA, on 64 px texture crops it
#: was no better than conv on validation crops and below PCA (BENCHMARKS.md, issue 17).
DRAEM_MIN_SIDE = 128
#: ``draem`` working size: larger images are resized to this square.
DRAEM_WORK_SIZE = 128
#: ``draem`` batch size when --batch-size is left at its default.
DRAEM_BATCH = 16
WARMUP_STEPS = 50
#: Seconds ``aetool train`` gives draem unless --time-budget says otherwise.
DRAEM_TIME_BUDGET = 600.0


def choose_arch(sizes: Sequence[tuple[int, int]]) -> tuple[str, tuple[int, int] | None]:
    """The ``--arch auto`` rule: architecture and working size ``(H, W)`` for image sizes.

    Images with a short side under :data:`DRAEM_MIN_SIDE` (digits, icons, small crops) keep
    the ``conv`` autoencoder at their common size (``None``: the usual rule);
    larger ones train ``draem``: at their common size when it is at most
    :data:`DRAEM_WORK_SIZE` on the long side, else resized to
    :data:`DRAEM_WORK_SIZE` square.

    Example:
        >>> choose_arch([(8, 8)]), choose_arch([(300, 300)]), choose_arch([(128, 128)])
        (('conv', None), ('draem', (128, 128)), ('draem', (128, 128)))
    """
    if not sizes or min(min(s) for s in sizes) < DRAEM_MIN_SIDE:
        return "conv", None
    if len(set(sizes)) == 1 and max(sizes[0]) <= DRAEM_WORK_SIZE:
        return "draem", sizes[0]
    return "draem", (DRAEM_WORK_SIZE, DRAEM_WORK_SIZE)


def focal_loss(logits: Tensor, target: Tensor, gamma: float = 2.0) -> Tensor:
    """Mean focal loss (Lin et al., 2017) of defect logits against 0/1 masks."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    pt = p * target + (1 - p) * (1 - target)
    return (ce * (1 - pt) ** gamma).mean()


def _ssim_loss(a: Tensor, b: Tensor, win: int = 7) -> Tensor:
    def pool(t: Tensor) -> Tensor:
        return F.avg_pool2d(t, win, 1, win // 2, count_include_pad=False)

    ma, mb = pool(a), pool(b)
    va, vb, cab = pool(a * a) - ma**2, pool(b * b) - mb**2, pool(a * b) - ma * mb
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * ma * mb + c1) * (2 * cab + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
    return 1 - s.mean()


def _as_float(data: np.ndarray) -> np.ndarray:
    return data.astype(np.float32) / 255.0


class _DraemRun:
    """One run's model, optimizer, data split and random state."""

    def __init__(self, images: ImageSet, mcfg: ModelConfig, cfg: TrainConfig,
                 sources: Sequence[np.ndarray]) -> None:  # fmt: skip
        if images.size is None:
            raise TrainingError("draem trains on images of one size (give --image-size)")
        self.images, self.mcfg, self.cfg, self.sources = images, mcfg, cfg, list(sources)
        self.device = resolve_device(cfg.device)
        mcfg.channels = images.channels
        mcfg.height, mcfg.width = images.size
        mcfg.extra = {"flip_average": True, "centred_score": True, **(mcfg.extra or {})}
        torch.manual_seed(cfg.seed)
        self.model = DraemModel(
            channels=images.channels, height=mcfg.height, width=mcfg.width,
            latent_dim=mcfg.latent_dim, **(mcfg.extra or {}),
        )  # fmt: skip
        place(self.model, self.device)
        gen = torch.Generator().manual_seed(cfg.seed)
        self.train_idx, self.val_idx = split_indices(len(images), cfg.val_split, gen)
        self.rng = np.random.default_rng(cfg.seed)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        val = self.val_idx if len(self.val_idx) else self.train_idx[:64]
        clean = _as_float(np.asarray(images.data)[val.numpy()])
        self.val_clean = clean
        self.val_x, self.val_m = simulate_defects(clean, cfg.seed + 7, p_anomaly=0.6,
                                                  sources=self.sources)  # fmt: skip

    def _tensor(self, a: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

    def step(self, lr: float) -> float:
        cfg, data = self.cfg, self.images.data
        pick = self.train_idx[self.rng.integers(0, len(self.train_idx), cfg.batch_size)]
        x = _as_float(np.asarray(data)[np.sort(pick.numpy())])
        if self.rng.random() < 0.5:
            x = x[:, :, ::-1]
        if self.rng.random() < 0.5:
            x = x[:, :, :, ::-1]
        xa, masks = simulate_defects(np.ascontiguousarray(x), self.rng, sources=self.sources)
        for group in self.opt.param_groups:
            group["lr"] = lr
        recon, logits = self.model.outputs(self._tensor(xa))
        loss = focal_loss(logits.float(), self._tensor(masks))
        if self.model.rec is not None:
            clean = self._tensor(x)
            loss = loss + F.mse_loss(recon.float(), clean) + _ssim_loss(recon.float(), clean)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    @torch.no_grad()
    def val_loss(self) -> float:
        self.model.eval()
        total = 0.0
        for i in range(0, len(self.val_x), 64):
            _, logits = self.model.outputs(self._tensor(self.val_x[i : i + 64]))
            total += float(focal_loss(logits.float(), self._tensor(self.val_m[i : i + 64])))
        self.model.train()
        return total / max(1, math.ceil(len(self.val_x) / 64))

    @torch.no_grad()
    def samples(self, n: int = 8) -> dict[str, np.ndarray]:
        """Validation images with simulated defects and the predicted maps."""
        self.model.eval()
        x = self.val_x[:n]
        maps = self.model.anomaly_map(self._tensor(x)).cpu().numpy()
        self.model.train()
        return {"inputs": x, "recons": np.repeat(maps, x.shape[1], axis=1)}


def _lr(cfg: TrainConfig, step: int, progress: float) -> float:
    warm = min(1.0, (step + 1) / WARMUP_STEPS)
    return cfg.lr * warm * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def train_draem(
    images: ImageSet,
    model_config: ModelConfig | None = None,
    config: TrainConfig | None = None,
    callbacks: Sequence[TrainCallback] = (),
    *,
    sources: Sequence[np.ndarray] = (),
    data_sources: Sequence[str | Path] | None = None,
) -> TrainResult:
    """Train a :class:`~aetool.models.draem.DraemModel` on normal images.

    Args:
        images: decoded normal images, all of one size.
        model_config: ``extra`` holds :class:`DraemModel` arguments
            (``base_channels``, ``reconstructive``, ...; ``flip_average`` and
            ``centred_score`` are on unless given).
        config: training settings; ``epochs`` counts :data:`STEPS_PER_EPOCH`
            steps (default :data:`DEFAULT_STEPS` steps in all), ``time_budget``
            (seconds) ends the run earlier when time runs out.
        callbacks: progress hooks.
        sources: extra ``(C, H, W)`` float images for simulated defects.
        data_sources: how the run record names the training data.

    Raises:
        TrainingError: the loss became NaN, or the images differ in size.
    """
    mcfg = ModelConfig(**vars(model_config)) if model_config else ModelConfig(arch="draem")
    mcfg.arch = "draem"
    cfg = config or TrainConfig(batch_size=DRAEM_BATCH)
    cfg.validate()
    run = _DraemRun(images, mcfg, cfg, sources)
    max_steps = cfg.epochs * STEPS_PER_EPOCH if cfg.epochs is not None else DEFAULT_STEPS
    budget = cfg.time_budget
    epochs = math.ceil(max_steps / STEPS_PER_EPOCH)
    info = {
        "images": len(images), "train": len(run.train_idx), "val": len(run.val_idx),
        "skipped": len(images.skipped), "device": str(run.device), "arch": "draem",
        "params": sum(p.numel() for p in run.model.parameters()),
        "batches_per_epoch": STEPS_PER_EPOCH, "start_epoch": 1, "epochs": epochs,
        "world_size": 1,
    }  # fmt: skip
    for cb in callbacks:
        cb.on_train_start(info)
    history: list[EpochRecord] = []
    t0 = time.perf_counter()
    step, interrupted = 0, False
    run.model.train()
    try:
        while True:
            epoch = len(history) + 1
            for cb in callbacks:
                cb.on_epoch_start(epoch, STEPS_PER_EPOCH)
            te, total, n = time.perf_counter(), 0.0, 0
            done = False
            while n < STEPS_PER_EPOCH:
                elapsed = time.perf_counter() - t0
                progress = max(step / max_steps, elapsed / budget if budget else 0.0)
                if progress >= 1:
                    done = True
                    break
                loss = run.step(_lr(cfg, step, progress))
                if not math.isfinite(loss):
                    raise TrainingError(
                        f"the loss became {loss} at step {step + 1}; try a lower --lr"
                    )
                step, n, total = step + 1, n + 1, total + loss
                for cb in callbacks:
                    cb.on_batch_end(epoch, n, loss, cfg.batch_size)
            if n:
                secs = time.perf_counter() - te
                rec = EpochRecord(epoch, total / n, run.val_loss(), secs,
                                  n * cfg.batch_size / max(secs, 1e-9), True,
                                  run.opt.param_groups[0]["lr"])  # fmt: skip
                history.append(rec)
                for cb in callbacks:
                    cb.on_epoch_end(rec, run.samples() if callbacks else {})
            if done or n < STEPS_PER_EPOCH:
                break
    except KeyboardInterrupt:
        interrupted = True
    seconds = time.perf_counter() - t0
    result = _finish(run, history, step, interrupted, seconds, epochs, data_sources)
    for cb in callbacks:
        cb.on_train_end(result)
    return result


def _finish(run: _DraemRun, history: list[EpochRecord], steps: int, interrupted: bool,
            seconds: float, epochs: int, data_sources: Sequence[str | Path] | None,
            ) -> TrainResult:  # fmt: skip
    model, cfg = run.model, run.cfg
    model.eval()
    stopping = EarlyStopping(0, {})
    stopping.epoch = len(history)
    record = RunRecord(
        data=[str(s) for s in (data_sources if data_sources is not None else data_roots(run.images))],
        images=run.images, train_count=len(run.train_idx), val_count=len(run.val_idx),
        config=cfg, model_config=run.mcfg, epochs_requested=epochs, patience=0,
        history=history, best_epoch=len(history), stale=0, last_epoch=len(history),
        interrupted=interrupted, noise=None, device=run.device, world_size=1,
        distributed=None, seconds=seconds,
    ).to_dict()  # fmt: skip
    record["loss"] = "focal" + ("+mse+ssim" if model.rec is not None else "")
    record["steps"] = steps
    record["time_budget"] = cfg.time_budget
    record["defect_sources"] = len(run.sources)
    source = "validation" if len(run.val_idx) else "training"
    chunks = (
        torch.from_numpy(run.val_clean[i : i + 64]).to(run.device)
        for i in range(0, len(run.val_clean), 64)
    )
    validation = validation_record(model, chunks, source)
    metadata: dict[str, Any] = {
        "preprocessing": run.images.preprocessing() | {"patch_size": None},
        "training": record, "validation": validation,
    }  # fmt: skip
    samples = run.samples()
    model.eval()
    return TrainResult(model.cpu(), metadata, history, interrupted, {}, samples)
