"""How to train: :class:`TrainConfig`, its checks, and the automatic epoch and patience rules.

Field names mirror the ``aetool train`` options, so the CLI builds a config
with ``TrainConfig(**options)`` and the run record stores it as it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from aetool.errors import ConfigError
from aetool.training.noise import parse_noise

__all__ = [
    "LOSSES",
    "LR_SCHEDULES",
    "MIN_STEPS",
    "PATIENCE_STEPS",
    "TrainConfig",
    "auto_epochs",
    "auto_patience",
    "parse_sparsity",
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
    #: Seconds of training after which the run ends (None: no limit); checked per
    #: epoch by the autoencoder loop, per step by the draem trainer.
    time_budget: float | None = None

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first option out of range."""
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
        if self.time_budget is not None and not self.time_budget > 0:
            raise ConfigError("--time-budget must be a positive number of seconds")
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
