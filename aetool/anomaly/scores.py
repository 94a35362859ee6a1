"""Reconstruction error maps and per-image anomaly scores.

A score is higher for more anomalous images. Three kinds are offered
(:data:`SCORE_KINDS`): the mean squared error, one minus the mean SSIM, and
the maximum of the smoothed squared-error map, which keeps a small defect
that a mean over the whole image would wash out. Inputs and reconstructions
are ``(N, C, H, W)`` tensors in [0, 1].

Models that predict their own anomaly map (``anomaly_map(x) -> (N, 1, H, W)``,
such as :mod:`~aetool.models.draem`) add a fourth kind, ``model``: that map,
reduced to the mean of its highest :data:`TOP_SHARE` of pixels (a defect
of a few hundred pixels decides the score, one stray pixel does not). A model
whose ``centred_score`` is true (what ``aetool train`` builds for draem) then
subtracts the mean of its map: a defect stands out against the image's own
background, so a normal image that is busy all over (the grain of
multicrystalline solar cells) is not taken for one (BENCHMARKS.md, issue 17);
models without the attribute keep the plain top share (their stored
validation scores were computed that way).
``auto`` means ``model`` for such models and ``mse`` for the others
(:func:`resolve_score_kind`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from aetool.errors import ConfigError
from aetool.metrics import gaussian_blur, ssim_map

__all__ = [
    "SCORE_KINDS",
    "SCORE_KIND_CHOICES",
    "TOP_SHARE",
    "anomaly_maps",
    "centred_score",
    "error_maps",
    "has_anomaly_map",
    "image_scores",
    "reduce_maps",
    "resolve_score_kind",
]

#: Score kinds: per-image mean squared error, 1 - mean SSIM, and the maximum
#: of the smoothed squared-error map (small defects a mean washes out).
SCORE_KINDS = ("mse", "ssim", "max-local")
#: What ``--score`` accepts: the reconstruction kinds, the model's own map, ``auto``.
SCORE_KIND_CHOICES = ("auto", "model", *SCORE_KINDS)
#: The ``model`` score: mean of this share of the map's highest pixels.
TOP_SHARE = 0.01


def has_anomaly_map(model: nn.Module) -> bool:
    """True when the model predicts its own anomaly map."""
    return callable(getattr(model, "anomaly_map", None))


def resolve_score_kind(kind: str, model: nn.Module) -> str:
    """``auto`` -> ``model`` for models with their own map, else ``mse``; others checked.

    Raises:
        ConfigError: unknown kind, or ``model`` for a model without a map.
    """
    if kind == "auto":
        return "model" if has_anomaly_map(model) else "mse"
    if kind == "model" and not has_anomaly_map(model):
        raise ConfigError(
            "--score model needs a model that predicts anomaly maps (arch draem); "
            f"use one of: {', '.join(SCORE_KINDS)}"
        )
    if kind not in SCORE_KIND_CHOICES:
        raise ConfigError(f"unknown score {kind!r}; choose one of: {', '.join(SCORE_KIND_CHOICES)}")
    return kind


def centred_score(model: nn.Module) -> bool:
    """Whether the model's ``model`` score subtracts the mean of its map."""
    return bool(getattr(model, "centred_score", False))


def anomaly_maps(model: nn.Module, x: Tensor, kind: str) -> Tensor:
    """Per-pixel maps ``(N, H, W)`` of a model for a resolved score kind."""
    if kind == "model":
        return model.anomaly_map(x)[:, 0].float()  # type: ignore[operator]
    return error_maps(x, model(x).float(), kind)


def error_maps(x: Tensor, recon: Tensor, kind: str = "mse") -> Tensor:
    """Per-pixel error maps ``(N, H, W)`` for a score kind (higher = more anomalous).

    Inputs are ``(N, C, H, W)`` in [0, 1]; they are compared in float32 so
    half-precision reconstructions do not lose the small SSIM constants.
    """
    if x.shape != recon.shape:
        raise ValueError(f"inputs {tuple(x.shape)} and reconstructions {tuple(recon.shape)} differ")
    x, recon = x.float(), recon.float()
    if kind == "mse":
        return ((x - recon) ** 2).mean(dim=1)
    if kind == "ssim":
        return 1 - ssim_map(x, recon)
    if kind == "max-local":
        sq = ((x - recon) ** 2).mean(dim=1, keepdim=True)
        return gaussian_blur(sq, 5, 1.0)[:, 0]
    raise ConfigError(f"unknown score {kind!r}; choose one of: {', '.join(SCORE_KINDS)}")


def reduce_maps(maps: Tensor, kind: str = "mse", centred: bool = False) -> Tensor:
    """One score per error map ``(N,)``: the maximum for ``max-local``, the mean of the
    top :data:`TOP_SHARE` for ``model`` (less the map's mean when ``centred``, see
    :func:`centred_score`), else the mean."""
    if kind == "max-local":
        return maps.flatten(1).amax(dim=1)
    if kind == "model":
        flat = maps.flatten(1)
        k = max(1, math.ceil(flat.shape[1] * TOP_SHARE))
        top = torch.topk(flat, k, dim=1).values.mean(dim=1)
        return top - flat.mean(dim=1) if centred else top
    return maps.flatten(1).mean(dim=1)


def image_scores(x: Tensor, recon: Tensor, kind: str = "mse") -> Tensor:
    """One anomaly score per image ``(N,)`` from inputs and reconstructions.

    ``mse`` and ``ssim`` average their error map; ``max-local`` takes the
    maximum of the 5x5-smoothed squared-error map.
    """
    return reduce_maps(error_maps(x, recon, kind), kind)
