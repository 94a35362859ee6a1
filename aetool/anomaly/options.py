"""The options of a scoring run, as one dataclass (``aetool score``'s options).

Field names mirror the command's options (``--score`` -> ``score_kind``,
``--threshold``, ``--batch-size``, ``--shard``, ``--masks`` -> ``masks_dir``,
``--strict``, ``--device``); ``--heatmaps`` is ``heatmap_dir`` and
``--labels`` arrives already read, as a mapping. Callbacks for progress and
warnings travel here too, so :func:`~aetool.anomaly.pipeline.score_images`
keeps a short signature.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from aetool.anomaly.scores import SCORE_KIND_CHOICES
from aetool.anomaly.thresholds import Threshold, ThresholdSpec
from aetool.errors import ConfigError

__all__ = ["ScoreOptions"]


@dataclass
class ScoreOptions:
    """How to score: score kind, threshold, labels, batching, outputs and callbacks.

    Attributes:
        score_kind: ``auto`` (``model`` for models with their own anomaly
            map, else ``mse``), ``model`` (the model's map, mean of its top 1%,
            less the map's mean for models with ``centred_score``),
            ``mse`` (mean squared error, [0, 1] pixel units),
            ``ssim`` (1 - mean SSIM) or ``max-local`` (max of the 5x5-smoothed
            squared-error map).
        threshold: ``auto``, a number, ``pQ``, ``Ksigma`` (see
            :func:`~aetool.anomaly.thresholds.fit_threshold`) or a ready
            :class:`~aetool.anomaly.thresholds.Threshold`.
        labels: path -> 0/1, matched against relative path, path as given or
            resolved path; replaces the folder-layout labels.
        infer: infer labels from the folder layout when ``labels`` is None.
        batch_size: images decoded and scored at a time.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        shard: ``"I/N"`` or ``(I, N)``: score only that shard of the inputs
            (by relative path; labels are inferred from the whole set first).
        overwrite: replace existing heatmaps (the CLI passes ``--overwrite``);
            without it an existing heatmap is an :class:`~aetool.errors.OutputError`.
        heatmap_dir: write an error-map overlay PNG per image here, at the
            image's size, mirroring relative paths (``.png`` appended to
            non-PNG names; with several scored roots, under each root's name).
        masks: look for ground-truth masks and report pixel ROC AUC.
        masks_dir: a folder of masks mirroring the image paths, instead of
            the MVTec ``ground_truth`` layout.
        masks_out: write a predicted binary defect mask PNG per image here
            (image size, mirroring relative paths like heatmaps), the map
            cut at the model's pixel threshold
            (:func:`~aetool.anomaly.masks.pixel_threshold`).
        strict: raise :class:`~aetool.errors.ImageError` on the first
            unreadable or missing file instead of emitting an error row.
        progress: called as ``progress(done, total)`` after each batch.
        warn: called as ``warn(path, reason)`` for each unreadable file.
    """

    score_kind: str = "auto"
    threshold: str | ThresholdSpec | Threshold | float = "auto"
    labels: Mapping[str, int] | None = None
    infer: bool = True
    batch_size: int = 64
    device: str | torch.device = "auto"
    shard: str | tuple[int, int] | None = None
    heatmap_dir: str | os.PathLike[str] | None = None
    overwrite: bool = True
    masks: bool = True
    masks_dir: str | os.PathLike[str] | None = None
    masks_out: str | os.PathLike[str] | None = None
    strict: bool = False
    progress: Callable[[int, int], None] | None = None
    warn: Callable[[str, str], None] | None = None

    def check(self) -> None:
        """Reject an unknown score kind or a batch size below 1.

        Raises:
            ConfigError: either is invalid.
        """
        if self.score_kind not in SCORE_KIND_CHOICES:
            choices = ", ".join(SCORE_KIND_CHOICES)
            raise ConfigError(f"unknown score {self.score_kind!r}; choose one of: {choices}")
        if self.batch_size < 1:
            raise ConfigError("batch size must be at least 1")
