"""Latent codes: encode images to vectors, walk between two codes, map the codes in 2-D.

Images are prepared exactly as the model saw them in training (the
``preprocessing`` record of the model file: channels, size, resize mode,
alpha background), decoded in parallel a batch at a time, so memory stays
flat whatever the image count. Only models with a vector latent
(``has_vector_latent``: ``dense``, ``conv``) have codes to export.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import torch
from PIL import Image

from aetool.data.cache import decode_processes, iter_batches
from aetool.data.decode import prepare_image
from aetool.data.inputs import ImageRef, find_images
from aetool.devices import resolve_device
from aetool.errors import ConfigError, ImageError
from aetool.models.file import LoadedModel
from aetool.models.registry import AutoEncoder

__all__ = [
    "encode_latents",
    "folder_labels",
    "interpolate",
    "interpolation_strip",
    "latent_map",
    "model_preprocessing",
    "require_vector_latent",
    "strip_image",
]


def _unwrap(model: AutoEncoder | LoadedModel) -> AutoEncoder:
    return model.model if isinstance(model, LoadedModel) else model


def model_preprocessing(model: AutoEncoder | LoadedModel) -> dict[str, Any]:
    """How to prepare images for a model: channels, ``(H, W)`` size, resize, alpha background.

    Taken from the model file's preprocessing record, else from the
    architecture arguments (stretch resize, black background).
    """
    pre = dict(model.preprocessing) if isinstance(model, LoadedModel) else {}
    args = _unwrap(model).arch_args()
    channels = int(pre.get("channels") or args.get("channels", 1))
    h = pre.get("height") or args.get("height")
    w = pre.get("width") or args.get("width")
    return {
        "channels": channels,
        "size": (int(h), int(w)) if h and w else None,
        "resize": pre.get("resize") or "stretch",
        "alpha_background": pre.get("alpha_background") or "black",
    }


def require_vector_latent(model: AutoEncoder | LoadedModel, what: str = "this command") -> None:
    """Raise ConfigError unless the model encodes each image to one vector."""
    net = _unwrap(model)
    if not net.has_vector_latent:
        arch = getattr(type(net), "arch_name", type(net).__name__)
        raise ConfigError(
            f"{what} needs a model with a vector latent code, but {arch!r} has none; "
            "use a model trained with --arch conv or --arch dense"
        )


def _device_of(net: AutoEncoder) -> torch.device:
    for p in net.parameters():
        return p.device
    return torch.device("cpu")


def encode_latents(
    model: AutoEncoder | LoadedModel,
    inputs: Iterable[str | os.PathLike[str]] | Iterable[ImageRef],
    *,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    strict: bool = False,
    on_error: Callable[[ImageRef, str], None] | None = None,
) -> Iterator[tuple[ImageRef, np.ndarray]]:
    """Encode images to latent codes, streaming one ``(ref, code)`` pair per image.

    Args:
        model: a model with a vector latent (or its loaded file, whose
            preprocessing record is then followed).
        inputs: files and folders, or image refs (for example one shard).
        batch_size: images per forward pass (and per decoding batch).
        device: where to run; default the model's device.
        strict: raise on the first unreadable image.
        on_error: called with ``(ref, reason)`` for each unreadable image
            that is skipped.

    Yields:
        The image ref and its float32 code of shape ``(k,)``, in input order.

    Raises:
        ConfigError: the model has no vector latent.
        ImageError: with ``strict``, the first unreadable image.
    """
    require_vector_latent(model, "encoding to latent codes")
    pre = model_preprocessing(model)
    if pre["size"] is None:
        raise ConfigError("the model records no input size; cannot prepare images for it")
    net = _unwrap(model)
    dev = resolve_device(device) if device is not None else _device_of(net)
    items = list(inputs)
    if items and all(isinstance(i, ImageRef) for i in items):
        refs: list[ImageRef] = items  # type: ignore[assignment]
    else:
        refs, _ = find_images(items)  # type: ignore[arg-type]
    processes = decode_processes(len(refs))  # a bad AETOOL_DECODE_PROCESSES fails here
    return _encode(net, refs, pre, batch_size, dev, strict, on_error, processes)


@torch.no_grad()
def _encode(
    net: AutoEncoder,
    refs: list[ImageRef],
    pre: dict[str, Any],
    batch_size: int,
    dev: torch.device,
    strict: bool,
    on_error: Callable[[ImageRef, str], None] | None,
    processes: int,
) -> Iterator[tuple[ImageRef, np.ndarray]]:
    was = net.training
    net.eval()
    try:
        for batch in iter_batches(
            refs, channels=pre["channels"], size=pre["size"], resize=pre["resize"],
            alpha_background=pre["alpha_background"], batch_size=batch_size,
            processes=processes,
        ):  # fmt: skip
            for ref, reason in batch.failed:
                if strict:
                    raise ImageError(f"{ref.path}: {reason}")
                if on_error is not None:
                    on_error(ref, reason)
            if not batch.refs:
                continue
            x = torch.from_numpy(batch.data).to(dev).float().div_(255.0)
            z = net.encode(x).float().flatten(1).cpu().numpy()
            yield from zip(batch.refs, z, strict=True)
    finally:
        net.train(was)


def prepare_for_model(model: AutoEncoder | LoadedModel, image: Any) -> torch.Tensor:
    """One image (path or array) as a ``(1, C, H, W)`` float batch, prepared as the model records."""
    pre = model_preprocessing(model)
    if isinstance(image, (str, os.PathLike)):
        arr = prepare_image(
            image, channels=pre["channels"], size=pre["size"], resize=pre["resize"],
            alpha_background=pre["alpha_background"],
        ).astype(np.float32) / 255.0  # fmt: skip
    else:
        arr = np.asarray(image, dtype=np.float32)
        if arr.ndim == 2:
            arr = arr[None]
    expected = (pre["channels"], *pre["size"]) if pre["size"] else None
    if expected and arr.shape != expected:
        raise ConfigError(f"image array has shape {arr.shape}; the model expects {expected}")
    return torch.from_numpy(np.ascontiguousarray(arr))[None]


@torch.no_grad()
def interpolate(
    model: AutoEncoder | LoadedModel,
    a: str | os.PathLike[str] | np.ndarray,
    b: str | os.PathLike[str] | np.ndarray,
    steps: int = 7,
) -> np.ndarray:
    """Decode evenly spaced points on the straight line between two images' codes.

    Args:
        model: a model with a vector latent.
        a, b: image files (prepared as in training) or float ``(C, H, W)`` arrays in [0, 1].
        steps: number of frames, endpoints included (at least 2).

    Returns:
        float32 ``(steps, C, H, W)``; the first frame is the reconstruction of
        ``a`` and the last that of ``b``.
    """
    require_vector_latent(model, "interpolation")
    if steps < 2:
        raise ConfigError(f"--steps must be at least 2 (the two endpoints), not {steps}")
    net = _unwrap(model)
    dev = _device_of(net)
    was = net.training
    net.eval()
    try:
        x = torch.cat([prepare_for_model(model, a), prepare_for_model(model, b)]).to(dev)
        z = net.encode(x)
        t = torch.linspace(0, 1, steps, device=dev, dtype=z.dtype).view(-1, *[1] * (z.ndim - 1))
        frames = net.decode(z[:1] * (1 - t) + z[1:] * t)
    finally:
        net.train(was)
    return frames.float().cpu().numpy()


def strip_image(
    frames: np.ndarray,
    min_height: int = 64,
    gap: int = 1,
    ends: np.ndarray | None = None,
    end_gap: int = 6,
) -> Image.Image:
    """Lay frames side by side in one image, scaled up (nearest neighbour) to ``min_height``.

    Args:
        frames: ``(N, C, H, W)`` floats in [0, 1], C 1 or 3.
        min_height: tiny images are enlarged by an integer factor to at least this height.
        gap: white pixels between frames (after scaling).
        ends: optional ``(2, C, H, W)`` images drawn first and last, apart from the
            frames by ``end_gap`` grey pixels (the real A and B of an interpolation).
        end_gap: width of the grey separators around the frames when ``ends`` is given.
    """
    f = np.clip(np.asarray(frames, dtype=np.float32), 0, 1)
    if f.ndim != 4 or f.shape[1] not in (1, 3):
        raise ValueError(f"frames must be (N, C, H, W) with C 1 or 3, got {f.shape}")
    n, c, h, w = f.shape
    tiles = list(f)
    seps = [gap] * (n - 1)
    if ends is not None:
        e = np.clip(np.asarray(ends, dtype=np.float32), 0, 1)
        if e.shape != (2, c, h, w):
            raise ValueError(f"ends must be (2, {c}, {h}, {w}), got {e.shape}")
        tiles = [e[0], *tiles, e[1]]
        seps = [end_gap, *seps, end_gap]
    scale = max(1, math.ceil(min_height / h))
    u8 = np.round(np.stack(tiles) * 255).astype(np.uint8)
    u8 = u8.repeat(scale, axis=2).repeat(scale, axis=3)
    hs, ws = h * scale, w * scale
    canvas = np.full((c, hs, len(tiles) * ws + sum(seps)), 255, np.uint8)
    x0 = 0
    for i, tile in enumerate(u8):
        canvas[:, :, x0 : x0 + ws] = tile
        x0 += ws
        if i < len(seps):
            if ends is not None and i in (0, len(seps) - 1):
                canvas[:, :, x0 : x0 + seps[i]] = 128
            x0 += seps[i]
    if c == 1:
        return Image.fromarray(canvas[0])
    return Image.fromarray(np.ascontiguousarray(canvas.transpose(1, 2, 0)))


def interpolation_strip(
    model: AutoEncoder | LoadedModel,
    a: str | os.PathLike[str] | np.ndarray,
    b: str | os.PathLike[str] | np.ndarray,
    steps: int = 7,
    min_height: int = 64,
) -> Image.Image:
    """The real A, the decoded frames from A's code to B's, and the real B, in one strip.

    A and B are shown as the model sees them (its channels and size), apart
    from the frames by grey separators; the first and last frames are their
    reconstructions.
    """
    frames = interpolate(model, a, b, steps)
    ends = torch.cat([prepare_for_model(model, a), prepare_for_model(model, b)]).numpy()
    return strip_image(frames, min_height=min_height, ends=ends)


def folder_labels(relpaths: Sequence[str]) -> list[Any]:
    """Colour labels for a latent map: anomaly labels from the folder layout, else class folders.

    Uses :func:`aetool.anomaly.labels.infer_labels` (0 under ``good``/``normal``/``ok``,
    1 under its sibling folders). When that labels nothing, the first folder of
    each relative path is its class (``digits/3/0001.png`` under ``digits`` is
    ``"3"``); images directly in the root get None.
    """
    from aetool.anomaly.labels import infer_labels

    labels: list[Any] = list(infer_labels(list(relpaths)))
    if any(v is not None for v in labels):
        return ["normal" if v == 0 else "anomaly" if v == 1 else None for v in labels]
    out: list[Any] = []
    for rel in relpaths:
        parts = PurePosixPath(str(rel).replace("\\", "/")).parts
        out.append(parts[0] if len(parts) > 1 and parts[0] not in ("..", "/") else None)
    return out


def latent_map(codes: np.ndarray, labels: Sequence[Any] | None = None, title: str = "") -> bytes:
    """PNG scatter plot of codes (2-D as they are, wider ones by PCA), coloured by label."""
    from aetool.report.plots import latent_map_png

    return latent_map_png(codes, labels, title or "Latent space")
