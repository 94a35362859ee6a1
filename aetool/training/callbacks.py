"""Progress hooks: :class:`TrainCallback`, the :class:`EpochRecord` each epoch reports,
and :class:`SampleGrids`, which draws a reconstruction grid per epoch.

The loop calls these and nothing else to report progress, so the CLI can draw
rich bars while Python users pass their own callbacks (or none).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from aetool.training.record import TrainResult

__all__ = ["EpochRecord", "SampleGrids", "TrainCallback"]


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
