"""What a training run leaves behind: :class:`TrainResult` and the records in its model file.

The model file's metadata holds three records written here, so a model
explains itself and ``score --threshold auto`` needs nothing else:

- ``preprocessing``: how images were decoded, so scoring decodes them alike;
- ``training``: the run record (data, settings, per-epoch history, how and why
  it stopped, versions), see :class:`RunRecord`;
- ``validation``: per-image scores of held-out normal images
  (:func:`validation_record`), from which thresholds are fitted.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from aetool import __version__
from aetool.anomaly.mapscale import MAP_SAMPLE, map_statistics
from aetool.anomaly.scores import (
    SCORE_KINDS,
    centred_score,
    error_maps,
    has_anomaly_map,
    reduce_maps,
)
from aetool.data.cache import ImageSet
from aetool.models.file import save_model
from aetool.models.registry import AutoEncoder, ModelConfig
from aetool.training.callbacks import EpochRecord
from aetool.training.config import TrainConfig
from aetool.training.noise import NoiseSpec

__all__ = [
    "MAX_STORED_SCORES",
    "RunRecord",
    "TrainResult",
    "data_roots",
    "sample_grid_path",
    "validation_record",
]

#: Keep every validation score up to this count; above it keep this many quantiles.
MAX_STORED_SCORES = 10_000


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

    def save(self, path: str | Path, *, overwrite: bool = True) -> Path:
        """Write the model file (with resume state when interrupted) atomically, and the
        final reconstruction grid beside it (:func:`sample_grid_path`).

        Without ``overwrite`` an existing file is an :class:`~aetool.errors.OutputError`
        (checked at the moment of writing, so two runs cannot replace each other)."""
        out = save_model(
            path, self.model, self.metadata, extra=self.resume_state or None, overwrite=overwrite
        )
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


def data_roots(data: ImageSet | str | Path | Sequence[str | Path]) -> list[Path]:
    """The training data as the run record names it by default: the given files and
    folders, resolved, or for an :class:`ImageSet` the folder that holds all its images."""
    if isinstance(data, ImageSet):
        if not data.refs:
            return []
        return [Path(os.path.commonpath([str(r.path.resolve().parent) for r in data.refs]))]
    if isinstance(data, (str, Path)):
        return [Path(data).resolve()]
    return [Path(p).resolve() for p in data]


@dataclass
class RunRecord:
    """What a finished (or interrupted) run did; :meth:`to_dict` is ``metadata["training"]``."""

    #: How the record names the training data (files, folders, or a description).
    data: list[str]
    images: ImageSet
    train_count: int
    val_count: int
    config: TrainConfig
    model_config: ModelConfig
    epochs_requested: int
    patience: int
    history: list[EpochRecord]
    best_epoch: int
    #: Epochs since the best one.
    stale: int
    #: The last epoch run (the one before the first when none ran).
    last_epoch: int
    interrupted: bool
    noise: NoiseSpec | None
    device: torch.device
    world_size: int
    #: Backend, world size and per-rank weight checksums of a distributed run; else None.
    distributed: dict[str, Any] | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """The record as stored in the model file (JSON-ready, keys in a fixed order)."""
        cfg, history = self.config, self.history
        patience, stale = self.patience, self.stale
        return {
            "data": self.data,
            "image_count": len(self.images),
            "train_count": self.train_count,
            "val_count": self.val_count,
            "skipped": [asdict(s) for s in self.images.skipped],
            "seed": cfg.seed,
            "config": asdict(cfg),
            "model_config": asdict(self.model_config),
            "epochs_requested": self.epochs_requested,
            "patience": patience,
            "epochs_run": len(history),
            "best_epoch": self.best_epoch,
            "stale": stale,
            "completed": not self.interrupted,
            "stopped_early": bool(
                patience and stale >= patience and self.last_epoch < self.epochs_requested
            ),
            "history": {
                "train_loss": [r.train_loss for r in history],
                "val_loss": [r.val_loss for r in history],
            },
            "epochs": [asdict(r) for r in history],
            "loss": cfg.loss,
            "noise": str(self.noise) if self.noise else None,
            "lr": cfg.lr,
            "batch_size": cfg.batch_size,
            "device": str(self.device),
            "world_size": self.world_size,
            "distributed": self.distributed,
            "seconds": self.seconds,
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "versions": {
                "aetool": __version__,
                "torch": torch.__version__,
                "numpy": np.__version__,
                "python": platform.python_version(),
            },
        }


@torch.no_grad()
def validation_record(model: AutoEncoder, chunks: Iterable[Tensor], source: str) -> dict[str, Any]:
    """Per-image scores of held-out normal images (clean input), for thresholds.

    Models with their own anomaly map record the ``model`` kind only; the others
    the reconstruction kinds. ``maps`` holds, per kind, statistics of the maps'
    pixels (:func:`~aetool.anomaly.mapscale.map_statistics`): the colour scale of
    heatmaps and the pixel threshold of ``--masks-out``.

    Args:
        model: the trained model, in eval mode on the device of ``chunks``.
        chunks: batches of clean images.
        source: ``validation``, or ``training`` when no image was held out.
    """
    kinds = ("model",) if has_anomaly_map(model) else SCORE_KINDS
    scores: dict[str, list[float]] = {k: [] for k in kinds}
    # A sample of each batch's map pixels (and its exact maximum): the colour scale and
    # pixel threshold of every heatmap and predicted mask of this model
    # (aetool.anomaly.mapscale).
    samples: dict[str, list[np.ndarray]] = {k: [] for k in kinds}
    maxima: dict[str, list[float]] = {k: [] for k in kinds}
    gen = torch.Generator().manual_seed(0)
    for clean in chunks:
        recon = None if kinds[0] == "model" else model(clean).float()
        for kind in kinds:
            if recon is None:
                maps = model.anomaly_map(clean)[:, 0].float()  # type: ignore[operator]
            else:
                maps = error_maps(clean, recon, kind)
            scores[kind].extend(reduce_maps(maps, kind, centred_score(model)).cpu().tolist())
            flat = maps.flatten().float().cpu()
            if flat.numel() > MAP_SAMPLE:
                flat = flat[torch.randperm(flat.numel(), generator=gen)[:MAP_SAMPLE]]
            samples[kind].append(flat.numpy())
            maxima[kind].append(float(maps.max()))
    out: dict[str, Any] = {
        "count": len(scores[kinds[0]]), "source": source, "quantiles_only": False,
    }  # fmt: skip
    stored: dict[str, list[float]] = {}
    for kind, vals in scores.items():
        arr = np.sort(np.asarray(vals, dtype=np.float64))
        if len(arr) > MAX_STORED_SCORES:
            arr = np.quantile(arr, np.linspace(0, 1, MAX_STORED_SCORES))
            out["quantiles_only"] = True
        stored[kind] = [float(v) for v in arr]
    out["scores"] = stored
    if scores[kinds[0]]:
        out["maps"] = {k: map_statistics(samples[k], maxima[k]) for k in kinds}
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
