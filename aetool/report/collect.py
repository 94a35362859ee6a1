"""Assemble everything ``aetool report`` shows from a model and a set of images.

Scores stream through :func:`aetool.anomaly.pipeline.score_images` (only floats are kept
per image); the few images the report pictures (samples, most anomalous, most
normal) are decoded again afterwards, so memory stays bounded by N, not by the
image count.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from aetool.anomaly.options import ScoreOptions
from aetool.anomaly.pipeline import score_images
from aetool.anomaly.scores import anomaly_maps, resolve_score_kind
from aetool.data.inputs import ImageRef
from aetool.devices import place, resolve_device
from aetool.errors import ImageError
from aetool.latents import encode_latents, folder_labels, prepare_for_model
from aetool.models.file import LoadedModel, load_model
from aetool.report.data import ExtremeItem, ReportData
from aetool.training.noise import parse_noise

__all__ = ["build_report"]


def _decode_for(model: LoadedModel, path: str) -> np.ndarray:
    return prepare_for_model(model, path)[0].numpy()


@torch.no_grad()
def _reconstruct(model: LoadedModel, x: np.ndarray, device: torch.device) -> np.ndarray:
    net = place(model.model, device).eval()
    return net(torch.from_numpy(x).to(device)).float().cpu().numpy()


def _extremes(
    model: LoadedModel,
    picks: Sequence[tuple[str, float, int | None]],
    score_kind: str,
    device: torch.device,
) -> list[ExtremeItem]:
    items = []
    for path, score, label in picks:
        try:
            x = _decode_for(model, path)[None]
        except ImageError:
            continue
        net = place(model.model, device).eval()
        with torch.no_grad():
            emap = anomaly_maps(net, torch.from_numpy(x).to(device), score_kind)[0].cpu().numpy()
        items.append(ExtremeItem(path, score, x[0], emap, label))
    return items


def build_report(
    inputs: Iterable[str | os.PathLike[str] | ImageRef],
    model: LoadedModel | str | os.PathLike[str],
    *,
    score_kind: str = "auto",
    threshold: str = "auto",
    labels: dict[str, int] | None = None,
    infer_labels: bool = True,
    masks_dir: str | os.PathLike[str] | None = None,
    top_n: int = 8,
    samples: int = 8,
    batch_size: int = 64,
    device: str = "auto",
    progress: Callable[[int, int], None] | None = None,
    warn: Callable[[str, str], None] | None = None,
) -> ReportData:
    """Score ``inputs`` and gather the report's data (see :func:`aetool.report.html.write_report`).

    Args:
        inputs: files and folders to score and picture.
        model: a loaded model or a model file.
        score_kind: ``auto``, ``model``, ``mse``, ``ssim`` or ``max-local``.
        threshold: as for ``aetool score``.
        labels: path -> 0/1 overriding labels from the folder layout.
        infer_labels: take labels from folder names when ``labels`` is None.
        masks_dir: ground-truth masks mirroring the images (default: MVTec's
            ``ground_truth`` folders), for the pixel ROC AUC.
        top_n: how many most-anomalous and most-normal images to show.
        samples: how many images in the reconstruction grid.
        batch_size: images per forward pass.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        progress: ``progress(done, total)`` while scoring.
        warn: ``warn(path, reason)`` for unreadable files.
    """
    if not isinstance(model, LoadedModel):
        model = load_model(model)
    dev = resolve_device(device)
    score_kind = resolve_score_kind(score_kind, model.model)
    inputs = list(inputs)
    options = ScoreOptions(
        score_kind=score_kind, threshold=threshold, labels=labels, infer=infer_labels,
        batch_size=batch_size, device=dev, masks_dir=masks_dir, progress=progress, warn=warn,
    )  # fmt: skip
    run = score_images(inputs, model, options)
    paths: list[str] = []
    scores: list[float] = []
    row_labels: list[int | None] = []
    for row in run:
        if row.score is None:
            continue
        paths.append(row.path)
        scores.append(float(row.score))
        row_labels.append(row.label)
    summary = run.summary.report()
    score_arr = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-score_arr, kind="stable")
    n = min(top_n, len(order))
    top = [(paths[i], scores[i], row_labels[i]) for i in order[:n]]
    low = [(paths[i], scores[i], row_labels[i]) for i in order[::-1][:n]]

    # Reconstruction grid: evenly spread images, with the training corruption for denoisers.
    picks = np.linspace(0, len(paths) - 1, min(samples, len(paths))).round().astype(int)
    x = np.stack([_decode_for(model, paths[i]) for i in np.unique(picks)]) if paths else None
    noisy = None
    recon = None
    if x is not None:
        spec = parse_noise(model.metadata.get("training", {}).get("noise"))
        fed = x
        if spec is not None:
            g = torch.Generator().manual_seed(0)
            fed = spec.apply(torch.from_numpy(x), g).numpy()
            noisy = np.clip(fed, 0, 1)
        recon = _reconstruct(model, fed, dev)

    codes = latent_labels = None
    if model.model.has_vector_latent and paths:
        refs = [ImageRef(Path(p), p) for p in paths]
        pairs = list(encode_latents(model, refs, batch_size=batch_size, device=dev))
        if pairs:
            codes = np.stack([c for _, c in pairs])
            latent_labels = folder_labels(_relative([r.relpath for r, _ in pairs]))

    labelled = any(v is not None for v in row_labels)
    threshold_info = summary.get("threshold", {})
    return ReportData(
        metadata=model.metadata,
        model_path=str(model.path),
        inputs=x,
        recons=recon,
        noisy=noisy,
        scores=score_arr,
        labels=row_labels if labelled else None,
        paths=paths,
        threshold=float(threshold_info.get("value", run.threshold.value)),
        threshold_rule=str(threshold_info.get("rule", run.threshold.rule)),
        score_kind=score_kind,
        top_anomalous=_extremes(model, top, score_kind, dev),
        top_normal=_extremes(model, low, score_kind, dev),
        latent_codes=codes,
        latent_labels=latent_labels,
        metrics=summary.get("metrics"),
        best_f1=summary.get("best_f1"),
        pixel=summary.get("pixel"),
        counts=summary.get("counts"),
    )


def _relative(paths: Sequence[str]) -> list[str]:
    """Paths relative to their common folder, so folder labels see ``3/0001.png``."""
    if not paths:
        return []
    common = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
    return [os.path.relpath(os.path.abspath(p), common) for p in paths]
