"""Decoding one image file into a ``float``/``uint8`` array a model can take.

Where images come from is :mod:`aetool.data.inputs` (:func:`~aetool.data.inputs.find_images`
walks files and folders); :mod:`aetool.data.cache` decodes many at once
(:func:`~aetool.data.cache.load_images`). This module holds the rules for one file.

Conversion rules (documented in the README):

* Channels: 1 when every image is stored as grayscale (L, 1, I;16, I, F, LA,
  grayscale palettes), else 3; ``channels=`` forces it. RGB to gray uses the
  ITU-R 601-2 luma transform; gray to RGB repeats the plane.
* Alpha (RGBA, LA, palettes with transparency) is composited onto a black
  background by default (``alpha_background="white"`` for white).
* 16-bit images are scaled by 1/65535 (never clipped); 32-bit integer images
  by 1/65535 when they fit in 16 bits, else by their maximum; float images
  are clipped to [0, 1]. CMYK, YCbCr, LAB and HSV are converted to RGB.
* EXIF orientation is applied before anything else.
* Size: ``size=(H, W)``; by default the images' common size when they all
  share one, else :data:`DEFAULT_SIZE`. ``resize="stretch"`` (default) resizes
  the whole image to H x W with Pillow's antialiased bilinear filter;
  ``resize="crop"`` scales the short side to fit, then centre-crops.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from aetool.errors import ConfigError, ImageError

__all__ = ["DEFAULT_SIZE", "RESIZE_MODES", "decode_image", "parse_size", "prepare_image"]

#: Size used when the images do not all share one size and none is given.
DEFAULT_SIZE = (64, 64)
RESIZE_MODES = ("stretch", "crop")
_GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def parse_size(value: str | int | Sequence[int] | None) -> tuple[int, int] | None:
    """Parse ``N`` or ``HxW`` (or an int / pair) into ``(H, W)``."""
    if value is None:
        return None
    if isinstance(value, int):
        h = w = value
    elif isinstance(value, str):
        parts = value.lower().split("x")
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            raise ConfigError(
                f"image size {value!r} is not N or HxW (for example 64 or 48x64)"
            ) from None
        if len(nums) == 1:
            h = w = nums[0]
        elif len(nums) == 2:
            h, w = nums
        else:
            raise ConfigError(f"image size {value!r} is not N or HxW (for example 64 or 48x64)")
    else:
        h, w = (int(v) for v in value)
    if h < 1 or w < 1 or h > 16384 or w > 16384:
        raise ConfigError(f"image size {h}x{w} is out of range (1..16384)")
    return h, w


# ---------------------------------------------------------------------------
# decoding


def _open(path: Path) -> Image.Image:
    if not path.is_file():  # a FIFO or device would block: never opened
        raise OSError(f"{path} is not a regular file" if path.exists() else "no such file")
    img: Image.Image = Image.open(path)
    img.load()
    if "exif" in img.info or hasattr(img, "getexif"):
        img = ImageOps.exif_transpose(img)
    return img


def _composite(img: Image.Image, background: str) -> Image.Image:
    bg = (255, 255, 255) if background == "white" else (0, 0, 0)
    rgba = img.convert("RGBA")
    base = Image.new("RGBA", rgba.size, bg + (255,))
    return Image.alpha_composite(base, rgba).convert("RGB")


def _standardise(img: Image.Image, background: str) -> Image.Image:
    """Convert any Pillow mode to 'L', 'RGB' or 'F' (float gray in [0, 1])."""
    mode = img.mode
    if mode in ("L", "RGB"):
        return img
    if mode == "1":
        return img.convert("L")
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img).astype(np.float32)
        top = 65535.0 if mode != "I" or arr.max(initial=0) <= 65535 else float(arr.max())
        return Image.fromarray(np.clip(arr / top, 0, 1).astype(np.float32), "F")
    if mode == "F":
        arr = np.nan_to_num(np.asarray(img, dtype=np.float32))
        return Image.fromarray(np.clip(arr, 0, 1), "F")
    if mode == "P":
        if "transparency" in img.info:
            return _composite(img, background)
        return img.convert("L" if _is_gray(img) else "RGB")
    if mode in ("RGBA", "RGBa", "LA", "La", "PA"):
        out = _composite(img, background)
        return out.convert("L") if mode in ("LA", "La") else out
    return img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX


def _is_gray(img: Image.Image) -> bool:
    if img.mode in _GRAY_MODES:
        return True
    if img.mode == "P":
        pal = img.getpalette() or []
        rgb = np.asarray(pal[: len(pal) // 3 * 3]).reshape(-1, 3)
        return bool(len(rgb)) and bool((rgb == rgb[:, :1]).all())
    return False


def _resize(img: Image.Image, size: tuple[int, int], mode: str) -> Image.Image:
    h, w = size
    if img.size == (w, h):
        return img
    if mode == "crop":
        scale = max(w / img.width, h / img.height)
        nw, nh = max(w, round(img.width * scale)), max(h, round(img.height * scale))
        img = img.resize((nw, nh), Image.Resampling.BILINEAR)
        left, top = (nw - w) // 2, (nh - h) // 2
        return img.crop((left, top, left + w, top + h))
    return img.resize((w, h), Image.Resampling.BILINEAR)


def decode_image(
    path: str | os.PathLike[str],
    *,
    channels: int | None = None,
    size: tuple[int, int] | None = None,
    resize: str = "stretch",
    alpha_background: str = "black",
) -> np.ndarray:
    """Decode one image to float32 ``(C, H, W)`` in [0, 1], full precision.

    Args:
        path: image file.
        channels: 1 or 3 to convert; None keeps grayscale as 1 and colour as 3.
        size: ``(H, W)`` to resize to; None keeps the native size.
        resize: ``"stretch"`` or ``"crop"``.
        alpha_background: ``"black"`` or ``"white"``.

    Raises:
        ImageError: the file cannot be decoded.
    """
    img = _decode_pil(Path(path), channels, size, resize, alpha_background)
    arr = np.asarray(img)
    if img.mode == "F":
        arr = arr.astype(np.float32)
    else:
        arr = arr.astype(np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[None]
        if channels == 3:
            arr = np.repeat(arr, 3, axis=0)
    else:
        arr = arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr)


def _decode_pil(
    path: Path, channels: int | None, size: tuple[int, int] | None, resize: str, background: str
) -> Image.Image:
    try:
        img = _standardise(_open(path), background)
    except Image.DecompressionBombError as exc:
        # Pillow's guard stays on: images over twice Image.MAX_IMAGE_PIXELS are refused.
        raise ImageError(f"{path}: refused as a possible decompression bomb ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - any failure on a malformed file is its row's error
        raise ImageError(f"{path}: cannot decode image ({_reason(exc)})") from None
    if channels == 1 and img.mode == "RGB":
        img = img.convert("L")
    elif channels == 3 and img.mode == "L":
        img = img.convert("RGB")
    if size is not None:
        img = _resize(img, size, resize)
    return img


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if "cannot identify image file" in text:
        return "not an image or unsupported format"
    return text.splitlines()[0]


def prepare_image(
    path: str | os.PathLike[str],
    *,
    channels: int,
    size: tuple[int, int] | None,
    resize: str = "stretch",
    alpha_background: str = "black",
) -> np.ndarray:
    """Decode one image to ``uint8 (C, H, W)``, converted as the cache stores it."""
    img = _decode_pil(Path(path), channels, size, resize, alpha_background)
    if img.mode == "F":
        arr = np.round(np.asarray(img, dtype=np.float32) * 255).astype(np.uint8)
    else:
        arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[None], channels, axis=0) if channels == 3 else arr[None]
    else:
        arr = arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr)


# ---------------------------------------------------------------------------
# the cache


# ---------------------------------------------------------------------------
# streaming (score, export): bounded memory whatever the image count
