"""Denoise images of any size with an autoencoder, and write them back as they came.

Pipeline (:func:`denoise_images`): images are decoded ahead in worker threads
at full precision, denoised on the model's device in one compute thread, then
encoded and written in worker threads; one :class:`DenoiseResult` per image is
yielded in input order as soon as its file is written (while the next image is
being denoised), and at most a few images are in flight, so memory stays flat
whatever the image count. Closing the iterator (or an interrupt) stops the
compute thread before its next forward pass.

Sizes. Fully convolutional models run on the whole image when it has no more
pixels than one batch of tiles (``batch_size * tile**2``: 8 tiles of 256 px by
default, so up to 724x724), else on overlapping ``tile`` x ``tile`` tiles.
Fixed-size models (``conv``, ``dense``) always run on tiles of their training
size. Tiles overlap by ``overlap`` pixels (at most half a tile)
and are blended with a separable window that is zero for the outer quarter of
the overlap (where zero padding makes a tile's output unreliable) and rises
smoothly (raised cosine) to one; each pixel is the weighted mean of the tiles
covering it, so there are no seams and peak memory depends on the tile size,
not on the image size (apart from the image itself and one float32 output).
Images smaller than a fixed model's input are reflect-padded and cropped back.

Refinement. With ``refine`` (:func:`denoise_images`'s ``auto`` turns it on
for models whose file records Gaussian training noise, such as the bundled
denoiser, except on JPEGs with subsampled colour, whose noise is correlated)
each plane the model denoised is refined by collaborative Wiener filtering of
the noisy plane guided by the model's output (:mod:`aetool.denoise.refine`, BM3D's
second stage), at the plane's estimated noise level (that of the noisy plane
minus the model's output, :func:`refine_sigma`), blended with the model's output
and skipped for planes whose estimated sigma is 30/255 or more: +0.2 dB PSNR on
average on held-out photos at sigma 15 (+0.02 to +0.35), up to +1 dB on
fine texture, at about 2.4x the time of the model alone. It runs on the CPU, in
510 px tiles of its own on large images.

Channels. A grayscale model denoises an RGB image in an opponent colour space
(``color="opponent"``, the default): luminance (R+G+B)/3 and two colour
differences (R-B)/2 and (R-2G+B)/4, offset into [0, 1]. The three are
orthogonal, so independent noise of equal sigma in R, G and B stays
independent, while the colour differences of natural images are smooth and
the luminance carries a third of the noise variance; the model then removes
more noise than on R, G and B one by one (+1.1 to +1.7 dB PSNR on held-out
colour pictures with the bundled model, ``benchmarks/denoise_color.py``).
``color="channels"`` denoises R, G and B separately, for images whose channels
are unrelated measurements (fluorescence stains, multispectral bands), and
for JPEGs stored with subsampled colour (4:2:0, 4:2:2; most encoders' default):
the subsampling averages the colour noise away, so what is left is shared by R,
G and B, and there the opponent space loses 0.3-1.5 dB. ``color="auto"`` (the
default of :func:`denoise_images` and ``aetool denoise``) picks ``channels``
for such JPEGs and ``opponent`` otherwise; :func:`denoise_array`, which sees
only pixels, defaults to ``opponent``. An RGB
model denoises a grayscale image replicated to three channels and the result
is averaged back to one. Alpha is never passed to the model: it is
written back untouched.

Formats and modes are kept: 8-bit gray (``L``) and RGB stay so; 16-bit gray
(``I;16``) keeps 16 bits, and so do 16-bit colour, colour+alpha and gray+alpha
PNGs (read and written with pypng, since Pillow holds them in 8 bits); float
(``F``) and 32-bit integer (``I``) images stay so, and when their values leave
[0, 1] (0..65535 for integers) they are mapped from their own range to [0, 1]
for the model and back (NaN and inf pixels are written back unchanged);
``RGBA``/``LA`` keep their alpha channel; palette images are written as RGB
(or RGBA with transparency, L when the palette is gray); bilevel (``1``) as L;
CMYK/YCbCr as RGB. JPEG and lossy WebP are written at quality 95, lossless WebP
lossless; ICC profiles, DPI, EXIF (of JPEG, WebP and PNG files; a TIFF's tags
are not copied) and PNG text chunks (byte for byte) are kept. EXIF orientation
is applied, so the pixels are written upright (and the kept EXIF and XMP say
so); 16-bit colour PNGs are the exception: their pixels and EXIF stay as stored. Refused, with the reason in the error
row, rather than degraded: images with several frames (animated GIFs,
multi-page TIFFs; an MPO photo's extra views and a TIFF's thumbnail pages do
not count, the main picture is denoised) and 16-bit colour TIFFs.

Noise estimate: ``sigma_est`` is the standard deviation of Gaussian noise in
[0, 1] units (multiply by 255 for 8-bit levels), from the median absolute
finest-scale diagonal Haar wavelet coefficient (Donoho's MAD estimator),
averaged over colour channels (for float and 32-bit images mapped from their
own value range, a fraction of that range).
"""

from __future__ import annotations

import os
import queue
import re
import struct
import threading
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, JpegImagePlugin, PngImagePlugin

from aetool.data.decode import decode_image
from aetool.data.inputs import ImageRef, find_images
from aetool.denoise.refine import PATCH, refine_weight
from aetool.denoise.refine import refine as refine_plane
from aetool.devices import fast_layout, place, resolve_device
from aetool.errors import ConfigError, ImageError, ModelFileError, OutputError
from aetool.files import (
    UMASK,
    _inside,
    _real,
    atomic_path,
    check_output_dir,
)
from aetool.metrics import (
    psnr,
    ssim,
)
from aetool.models.file import LoadedModel, load_model
from aetool.models.registry import AutoEncoder

__all__ = [
    "DEFAULT_DENOISER",
    "DEFAULT_OVERLAP",
    "DEFAULT_TILE",
    "COLOR_MODES",
    "ENSEMBLE_SIZES",
    "DenoiseResult",
    "DenoiseSummary",
    "SourceImage",
    "bundled_model_path",
    "check_output_dir",
    "denoise_array",
    "denoise_images",
    "estimate_sigma",
    "refine_sigma",
    "output_path",
    "psnr",
    "read_image",
    "ssim",
    "write_image",
]

#: File name of the bundled pretrained grayscale denoiser (in ``aetool/models/pretrained``).
DEFAULT_DENOISER = "denoiser-gray.safetensors"
DEFAULT_TILE = 256
DEFAULT_OVERLAP = 32
_MAD_TO_SIGMA = 1 / 0.6744897501960817
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_SAVE_FORMAT_BY_EXT = {ext.lower(): fmt for ext, fmt in Image.registered_extensions().items()}


# ---------------------------------------------------------------------------
# the bundled model


def bundled_model_path(name: str = DEFAULT_DENOISER) -> Path:
    """Path of a model file shipped in the ``aetool/models/pretrained`` package data folder.

    Raises:
        ModelFileError: the file is not part of this installation.
    """
    res = resources.files("aetool.models").joinpath("pretrained", name)
    path = Path(str(res))
    if not res.is_file():
        raise ModelFileError(
            f"the bundled model {name} is missing from this installation ({path}); "
            "pass --model FILE, for example one trained with `aetool train DIR --arch denoiser "
            "--noise gaussian:0.02-0.2 --patch-size 64`"
        )
    return path


# ---------------------------------------------------------------------------
# numbers: noise estimate, PSNR, SSIM


def estimate_sigma(image: np.ndarray) -> float:
    """Estimate the Gaussian noise level of an image in [0, 1] units.

    Donoho's estimator: the median absolute value of the finest diagonal Haar
    wavelet coefficients divided by 0.6745, averaged over channels.

    Args:
        image: ``(C, H, W)`` or ``(H, W)`` float array in [0, 1].
    """
    x = np.asarray(image, dtype=np.float32)
    if x.ndim == 2:
        x = x[None]
    h, w = (x.shape[1] // 2) * 2, (x.shape[2] // 2) * 2
    if h == 0 or w == 0:
        return 0.0
    x = x[:, :h, :w]
    hh = (x[:, 0::2, 0::2] - x[:, 0::2, 1::2] - x[:, 1::2, 0::2] + x[:, 1::2, 1::2]) * 0.5
    per_channel = np.median(np.abs(hh).reshape(len(hh), -1), axis=1) * _MAD_TO_SIGMA
    return float(per_channel.mean())


def refine_sigma(noisy: np.ndarray, pilot: np.ndarray) -> float:
    """The noise level the refinement runs at: :func:`estimate_sigma` of ``noisy - pilot``.

    The wavelet estimate of the noisy plane itself counts fine texture as noise
    (+33% on scikit-image's grass, +24% on scikit-learn's china at sigma 15); with
    the denoiser's output taken away first, little texture is left in the
    residual (grass -17%, china +11%), and the refinement scored +0.025 dB higher
    on the tuning pictures (``aetool/refine.py``) than with the plain estimate.

    Args:
        noisy: ``(H, W)`` plane with its noise, in [0, 1].
        pilot: ``(H, W)`` the denoiser's output for it.
    """
    return estimate_sigma(np.asarray(noisy, np.float32) - np.asarray(pilot, np.float32))


# ---------------------------------------------------------------------------
# reading and writing, keeping the format and mode


@dataclass
class SourceImage:
    """An image decoded for denoising, with what is needed to write it back as it was.

    Attributes:
        pixels: float32 ``(C, H, W)`` colour channels in [0, 1] (C is 1 or 3),
            at full precision (16-bit values are not rounded to 8 bits).
        alpha: the alpha channel as stored (``uint8``, or ``uint16`` for 16-bit
            PNGs, ``(H, W)``), or None.
        mode: Pillow mode to write: ``L``, ``I;16``, ``F``, ``RGB``, ``LA`` or ``RGBA``;
            or ``RGB;16``, ``RGBA;16``, ``LA;16``: 16-bit colour or gray+alpha PNGs,
            which Pillow would cut to 8 bits, read and written with pypng.
        format: Pillow format name (``PNG``, ``JPEG``, ``TIFF``, ...).
        info: save options to keep (ICC profile, DPI, EXIF, PNG text chunks, TIFF
            compression, lossless WebP).
        value_range: for float (``F``) and 32-bit integer (``I``) images whose
            values leave [0, 1] (or 0..65535): the ``(low, high)`` mapped to
            [0, 1] for the model, and mapped back when writing.
        nonfinite: ``(flat indices, values)`` of NaN/inf pixels of a float
            image, written back as they were.
        chroma_subsampled: a JPEG whose colour was stored at reduced resolution
            (4:2:0, 4:2:2): its noise is no longer independent per channel.
    """

    pixels: np.ndarray
    alpha: np.ndarray | None
    mode: str
    format: str
    info: dict[str, Any] = field(default_factory=dict)
    value_range: tuple[float, float] | None = None
    nonfinite: tuple[np.ndarray, np.ndarray] | None = None
    chroma_subsampled: bool = False

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)``."""
        return self.pixels.shape[1], self.pixels.shape[2]


def _format_for(path: Path, fmt: str | None) -> str:
    if fmt:
        return fmt
    found = _SAVE_FORMAT_BY_EXT.get(path.suffix.lower())
    if not found:
        raise ImageError(f"{path}: cannot tell which image format to write")
    return found


def _kept_info(info: dict[str, Any], exif: Image.Exif | None = None) -> dict[str, Any]:
    # PNG text keywords share Pillow's info dict: only values of the expected type count.
    kept: dict[str, Any] = {}
    if isinstance(info.get("icc_profile"), bytes) and info["icc_profile"]:
        kept["icc_profile"] = info["icc_profile"]
    dpi = info.get("dpi")
    if isinstance(dpi, tuple) and len(dpi) == 2 and all(isinstance(d, (int, float)) for d in dpi):
        kept["dpi"] = dpi
    for key in ("png_text", "lossless"):
        if info.get(key):
            kept[key] = info[key]
    if exif is not None and len(exif):
        exif[0x0112] = 1  # the pixels are written upright
        try:
            kept["exif"] = exif.tobytes()
        except Exception:  # Pillow parsed it but cannot write it back: drop it  # noqa: BLE001
            pass
    if info.get("compression") in ("tiff_lzw", "tiff_adobe_deflate", "tiff_deflate", "packbits"):
        kept["compression"] = info["compression"]
    return kept


def read_image(path: str | os.PathLike[str]) -> SourceImage:
    """Decode an image for denoising (see the module notes for how modes map).

    Raises:
        ImageError: the file cannot be decoded.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageError(f"{path}: empty file (0 bytes)")
        with Image.open(path) as probe:
            mode, fmt, info = probe.mode, probe.format, dict(probe.info)
            frames = _frames(probe)
            if frames > 1:
                raise ImageError(
                    f"{path}: has {frames} frames; only single-frame images are denoised "
                    "(split it into one file per frame)"
                )
            raw = getattr(getattr(probe, "png", None), "im_rawmode", "")
            exif = _exif(info, fmt)
            if fmt == "PNG":
                info["png_text"] = _png_text_chunks(path)
            if fmt == "WEBP" and _webp_lossless(path):
                info["lossless"] = True
            subsampled = fmt in ("JPEG", "MPO") and JpegImagePlugin.get_sampling(probe) in (1, 2)
            if mode in ("F", "I"):
                return _read_wide(path, probe, fmt, _kept_info(info, exif))
            if fmt == "PNG" and raw in _PNG16_MODES:
                return _read_png16(path, info)  # pixels as stored: text and EXIF kept as they are
            if info.get("png_text") and probe.getexif().get(0x0112, 1) in range(2, 9):
                info["png_text"] = _upright_text(info["png_text"])  # pixels are turned upright
            bits = _tiff_bits(probe) if fmt == "TIFF" else 8
            if mode in ("RGB", "RGBA") and bits > 8:
                raise ImageError(
                    f"{path}: {bits}-bit colour TIFF is not supported (it would be "
                    "written back with 8 bits); save it as a 16-bit PNG or split the channels"
                )
            has_alpha = mode in _ALPHA_MODES or (mode == "P" and "transparency" in info)
            gray_palette = mode in ("P", "PA") and _gray_palette(probe)
            if has_alpha:
                img = ImageOps.exif_transpose(probe) or probe
                img.load()
                rgba = img.convert("LA" if gray_palette or mode in ("LA", "La") else "RGBA")
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        # Pillow's guard stays on: images over twice Image.MAX_IMAGE_PIXELS are refused.
        raise ImageError(f"{path}: refused as a possible decompression bomb ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: cannot decode image ({_reason(exc)})") from None
    fmt = _format_for(path, fmt)
    if has_alpha:
        arr = np.asarray(rgba)
        color = arr[..., :-1].astype(np.float32).transpose(2, 0, 1) / 255.0
        return SourceImage(
            np.ascontiguousarray(color), arr[..., -1].copy(), rgba.mode, fmt,
            _kept_info(info, exif),
        )  # fmt: skip
    pixels = decode_image(path)  # full precision, EXIF orientation applied
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        out_mode = "I;16"
    elif pixels.shape[0] == 1:
        out_mode = "L"
    else:
        out_mode = "RGB"
    return SourceImage(
        pixels, None, out_mode, fmt, _kept_info(info, exif), chroma_subsampled=subsampled
    )


def _webp_lossless(path: Path) -> bool:
    """Whether a WebP file's picture is stored lossless (a ``VP8L`` chunk, not ``VP8 ``)."""
    with open(path, "rb") as f:
        if f.read(12)[8:] != b"WEBP":
            return False
        while len(head := f.read(8)) == 8:
            kind, size = head[:4], struct.unpack("<I", head[4:])[0]
            if kind in (b"VP8L", b"VP8 "):
                return kind == b"VP8L"
            if kind == b"ANMF":  # an animation frame: its image chunks follow a 16-byte header
                f.seek(16, os.SEEK_CUR)
                continue
            f.seek(size + (size & 1), os.SEEK_CUR)
    return False


#: PNG text chunk types, copied to the output as they are (compression, language, order).
_PNG_TEXT = (b"tEXt", b"zTXt", b"iTXt")


def _png_text_chunks(path: Path) -> list[tuple[bytes, bytes]]:
    """Every text chunk of a PNG file, before and after the pixel data, as (type, data).

    Read by walking the chunk headers (pixel data is skipped, not read), so
    repeated keywords, compression and iTXt languages survive unchanged.
    """
    out = []
    with open(path, "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            return out
        end = os.fstat(f.fileno()).st_size
        while len(head := f.read(8)) == 8:
            size, kind = struct.unpack(">I", head[:4])[0], head[4:]
            if kind == b"IEND" or size > end - f.tell():  # the end, or a truncated file
                break
            if kind in _PNG_TEXT:
                data = f.read(size)
                if len(data) < size:
                    break
                out.append((kind, data))
                f.seek(4, os.SEEK_CUR)  # CRC
            else:
                f.seek(size + 4, os.SEEK_CUR)
    return out


#: XMP orientation, removed (as Pillow's ``ImageOps.exif_transpose`` does) once pixels are upright.
_XMP_ORIENTATION = re.compile(
    rb'tiff:Orientation="[0-9]"|<tiff:Orientation>[0-9]</tiff:Orientation>'
)


def _upright_text(chunks: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Text chunks for pixels that were turned upright: the orientation is removed from
    XMP, and ImageMagick's raw EXIF/APP1 profiles (which hold it too) are dropped."""
    out = []
    for kind, data in chunks:
        key, _, rest = data.partition(b"\0")
        if key.lower() in (b"raw profile type exif", b"raw profile type app1"):
            continue
        if key == b"XML:com.adobe.xmp":
            try:
                data = key + b"\0" + _edit_text(kind, rest, lambda t: _XMP_ORIENTATION.sub(b"", t))
            except (ValueError, zlib.error):  # unreadable or oversized: not copied
                continue
        out.append((kind, data))
    return out


def _edit_text(kind: bytes, rest: bytes, edit: Callable[[bytes], bytes]) -> bytes:
    """A text chunk's data after its keyword, with its text edited (compression kept)."""

    def inflate(raw: bytes) -> bytes:
        d = zlib.decompressobj()
        text = d.decompress(raw, 64 << 20)
        if d.unconsumed_tail:
            raise ValueError("text over 64 MB")
        return text

    if kind == b"tEXt":
        return edit(rest)
    if kind == b"zTXt":
        return rest[:1] + zlib.compress(edit(inflate(rest[1:])))
    flag, method, tail = rest[:1], rest[1:2], rest[2:]
    lang, _, tail = tail.partition(b"\0")
    tkey, _, text = tail.partition(b"\0")
    text = zlib.compress(edit(inflate(text))) if flag == b"\x01" else edit(text)
    return flag + method + lang + b"\0" + tkey + b"\0" + text


def _frames(img: Image.Image) -> int:
    """Frames that are pictures of their own: an MPO's extra views and a TIFF's
    reduced-resolution pages (thumbnails, NewSubfileType bit 0) do not count."""
    n = int(getattr(img, "n_frames", 1))
    if n <= 1 or img.format == "MPO":
        return 1
    if img.format != "TIFF":
        return n
    pages = 0
    try:
        for i in range(n):
            img.seek(i)
            if not int(img.tag_v2.get(254, 0)) & 1:
                pages += 1
    finally:
        img.seek(0)
    return pages


def _exif(info: dict[str, Any], fmt: str | None) -> Image.Exif | None:
    """The file's EXIF block (JPEG, WebP, PNG eXIf), parsed; None for TIFF, whose "EXIF"
    is its own first directory (pixel layout tags that must not be copied)."""
    raw = info.get("exif")
    if fmt == "TIFF" or not raw or not isinstance(raw, bytes):
        return None
    try:
        exif = Image.Exif()
        exif.load(raw)
    except Exception:  # a broken EXIF block is not worth a failed image  # noqa: BLE001
        return None
    return exif if len(exif) else None


def _read_wide(path: Path, probe: Image.Image, fmt: str | None, kept: dict[str, Any]):
    """A float (``F``) or 32-bit integer (``I``) image. Values in [0, 1] (0..65535 for
    integers) are taken as they are, and integers then written back as 16-bit; otherwise
    they are mapped from the image's own value range to [0, 1] and back when written."""
    img = ImageOps.exif_transpose(probe) or probe
    arr = np.asarray(img, dtype=np.float64)
    finite = np.isfinite(arr)
    if not finite.any():
        raise ImageError(f"{path}: no finite pixel values")
    lo, hi = float(arr[finite].min()), float(arr[finite].max())
    top = 1.0 if probe.mode == "F" else 65535.0
    if lo >= 0 and hi <= top:
        if finite.all():
            pixels = np.ascontiguousarray((arr / top).astype(np.float32)[None])
            mode = "F" if probe.mode == "F" else "I;16"
            return SourceImage(pixels, None, mode, _format_for(path, fmt), kept)
        lo, hi = 0.0, top  # same scale, only the NaN/inf pixels need keeping
    span = hi - lo or 1.0
    pixels = ((np.where(finite, arr, lo) - lo) / span).astype(np.float32)[None]
    bad = np.flatnonzero(~finite)
    nonfinite = (bad, arr.reshape(-1)[bad].astype(np.float32)) if len(bad) else None
    return SourceImage(
        np.ascontiguousarray(pixels), None, probe.mode, _format_for(path, fmt), kept,
        value_range=(lo, hi), nonfinite=nonfinite,
    )  # fmt: skip


#: Pillow's raw modes of 16-bit PNGs it decodes to 8 bits -> the mode aetool writes back.
_PNG16_MODES = {"RGB;16B": "RGB;16", "RGBA;16B": "RGBA;16", "LA;16B": "LA;16"}


def _tiff_bits(img: Image.Image) -> int:
    bits = getattr(img, "tag_v2", {}).get(258, 8)  # BitsPerSample
    return int(max(bits) if isinstance(bits, tuple) else bits)


def _read_png16(path: Path, info: dict[str, Any]) -> SourceImage:
    """A 16-bit colour or gray+alpha PNG at full precision (pypng; Pillow keeps 8 bits)."""
    import png

    try:
        # read(), not asDirect(): the stored 16-bit values, not shifted down to an sBIT depth
        width, height, rows, meta = png.Reader(filename=str(path)).read()
        arr = np.vstack([np.asarray(r, dtype=np.uint16) for r in rows])
    except (png.Error, OSError, ValueError) as exc:
        raise ImageError(f"{path}: cannot decode image ({_reason(exc)})") from None
    planes = int(meta["planes"])
    arr = arr.reshape(height, width, planes)
    color_planes = planes - 1 if meta["alpha"] else planes
    pixels = arr[..., :color_planes].astype(np.float32).transpose(2, 0, 1) / 65535.0
    alpha = arr[..., -1].copy() if meta["alpha"] else None
    mode = {(3, True): "RGBA;16", (3, False): "RGB;16", (1, True): "LA;16"}.get(
        (color_planes, alpha is not None), "I;16"
    )
    kept = _kept_info(info)
    if isinstance(info.get("exif"), bytes):  # as stored: pypng does not turn the pixels upright
        kept["exif"] = info["exif"]
    return SourceImage(np.ascontiguousarray(pixels), alpha, mode, "PNG", kept)


def _write_png16(path: Path, image: SourceImage, pixels: np.ndarray) -> None:
    import png

    u16 = _quantise(pixels, 65535, np.uint16)
    if image.alpha is not None:
        u16 = np.concatenate([u16, image.alpha.astype(np.uint16)[None]], axis=0)
    c, h, w = u16.shape
    writer = png.Writer(
        w, h, greyscale=c <= 2, alpha=image.alpha is not None, bitdepth=16, compression=6
    )
    with open(path, "wb") as f:
        writer.write_array(f, u16.transpose(1, 2, 0).reshape(-1))
    chunks = []
    if image.info.get("icc_profile"):
        chunks.append((b"iCCP", b"icc\x00\x00" + zlib.compress(image.info["icc_profile"])))
    if image.info.get("dpi"):
        ppm = [min(max(round(float(d) / 0.0254), 0), 2**31 - 1) for d in image.info["dpi"]]
        chunks.append((b"pHYs", struct.pack(">IIB", ppm[0], ppm[1], 1)))
    if image.info.get("exif"):
        exif = image.info["exif"]
        chunks.append((b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif))
    _insert_png_chunks(path, chunks + list(image.info.get("png_text", [])))


def _insert_png_chunks(path: Path, chunks: list[tuple[bytes, bytes]]) -> None:
    """Put ancillary chunks, in order, right after IHDR (pypng writes no metadata)."""
    if not chunks:
        return
    raw = path.read_bytes()
    ihdr_end = 8 + 8 + 13 + 4  # signature, IHDR length+type, IHDR data, CRC
    new = b"".join(
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        for kind, data in chunks
    )
    path.write_bytes(raw[:ihdr_end] + new + raw[ihdr_end:])


def _gray_palette(img: Image.Image) -> bool:
    pal = img.getpalette() or []
    rgb = np.asarray(pal[: len(pal) // 3 * 3]).reshape(-1, 3)
    return bool(len(rgb)) and bool((rgb == rgb[:, :1]).all())


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if "cannot identify image file" in text:
        return "not an image or unsupported format"
    return text.splitlines()[0]


def _quantise(pixels: np.ndarray, top: int, dtype: type) -> np.ndarray:
    # One float copy, modified in place: the write path must not multiply memory.
    x = np.nan_to_num(np.asarray(pixels, dtype=np.float32), copy=True)
    np.clip(x, 0.0, 1.0, out=x)
    x *= top
    np.rint(x, out=x)
    return x.astype(dtype)


def _to_pil(image: SourceImage, pixels: np.ndarray) -> Image.Image:
    # Pillow infers the mode from dtype and shape: uint16 -> I;16, float32 -> F,
    # uint8 with 1/2/3/4 channels -> L/LA/RGB/RGBA.
    if image.mode == "I;16":
        return Image.fromarray(_quantise(pixels[0], 65535, np.uint16))
    if image.value_range is not None:  # F or I beyond [0, 1]: back to the image's own range
        lo, hi = image.value_range
        x = np.clip(np.nan_to_num(pixels[0].astype(np.float64)), 0.0, 1.0) * (hi - lo) + lo
        if image.mode == "I":
            return Image.fromarray(np.rint(x).astype(np.int32), "I")
        x = x.astype(np.float32)
        if image.nonfinite is not None:
            x.reshape(-1)[image.nonfinite[0]] = image.nonfinite[1]
        return Image.fromarray(x, "F")
    if image.mode == "F":
        return Image.fromarray(np.clip(np.nan_to_num(pixels[0]), 0.0, 1.0).astype(np.float32))
    u8 = _quantise(pixels, 255, np.uint8)
    if image.alpha is not None:
        u8 = np.concatenate([u8, image.alpha[None]], axis=0)
    if u8.shape[0] == 1:
        return Image.fromarray(u8[0])
    return Image.fromarray(np.ascontiguousarray(u8.transpose(1, 2, 0)))


def write_image(path: str | os.PathLike[str], image: SourceImage, pixels: np.ndarray) -> Path:
    """Write denoised ``pixels`` in ``image``'s format and mode, atomically (temp + rename).

    Args:
        path: destination file.
        image: the source image (mode, format, alpha, save options).
        pixels: float ``(C, H, W)`` in [0, 1], the shape of ``image.pixels``.
    """
    if image.mode in _PNG16_MODES.values():
        target = Path(path)
        with atomic_path(target) as tmp:
            _write_png16(Path(tmp), image, pixels)
            os.chmod(tmp, 0o666 & ~UMASK)
        return target
    pil = _to_pil(image, pixels)
    opts: dict[str, Any] = dict(image.info)
    if "png_text" in opts:
        opts["pnginfo"] = PngImagePlugin.PngInfo()
        for kind, data in opts.pop("png_text"):
            opts["pnginfo"].add(kind, data)
    if image.format in ("JPEG", "WEBP") and not opts.get("lossless"):
        opts["quality"] = 95
    if opts.get("lossless"):
        opts["exact"] = True  # keep the colour under transparent pixels, as the input had it
    if image.format == "JPEG" and pil.mode not in ("L", "RGB", "CMYK"):
        pil = pil.convert("RGB")
    target = Path(path)
    with atomic_path(target) as tmp:
        # Metadata the encoder refuses (an EXIF block over JPEG's 64 KB, say) is dropped
        # first; the encoding options (quality, compression) go only if that is not enough.
        essential = {
            k: v for k, v in opts.items() if k in ("quality", "compression", "lossless", "exact")
        }
        attempts = [opts] + ([essential] if essential != opts else []) + ([{}] if essential else [])
        for n, attempt in enumerate(attempts):
            try:
                pil.save(tmp, format=image.format, **attempt)
                break
            except (OSError, ValueError, TypeError):
                if n == len(attempts) - 1:
                    raise
        os.chmod(tmp, 0o666 & ~UMASK)  # temp files are created 0600; outputs are ordinary files
    return target


# ---------------------------------------------------------------------------
# tiling


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    stride = tile - overlap
    return list(range(0, length - tile, stride)) + [length - tile]


def _window(n: int, length: int, overlap: int, first: bool, last: bool) -> np.ndarray:
    """1-D blending weights for one tile: zero margin, raised-cosine ramp, flat middle."""
    w = np.ones(length, dtype=np.float32)
    ov = min(overlap, length // 2)
    if n == 1 or ov < 1:
        return w
    margin = ov // 4
    ramp_len = ov - margin
    t = (np.arange(ramp_len, dtype=np.float32) + 0.5) / ramp_len
    ramp = np.sin(0.5 * np.pi * t) ** 2
    rising = np.concatenate([np.zeros(margin, np.float32), ramp])
    if not first:
        w[:ov] = rising
    if not last:
        w[length - ov :] = np.minimum(w[length - ov :], rising[::-1])
    return w


def _model_channels(model: AutoEncoder) -> int:
    return int(model.arch_args().get("channels", 1))


def _model_size(model: AutoEncoder) -> tuple[int, int]:
    args = model.arch_args()
    return int(args.get("height", 28)), int(args.get("width", 28))


@torch.no_grad()
def denoise_array(
    model: AutoEncoder | LoadedModel,
    image: np.ndarray,
    *,
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    ensemble: int = 1,
    color: str = "opponent",
    refine: bool = False,
) -> np.ndarray:
    """Denoise one image of any size.

    Args:
        model: a trained model (or loaded model file).
        image: float ``(C, H, W)`` in [0, 1] with C 1 or 3 (or ``(H, W)``).
        tile: tile side for fully convolutional models (fixed-size models use
            their training size).
        overlap: overlap between neighbouring tiles, in pixels (at most half a tile).
        batch_size: tiles per forward pass; for fully convolutional models it
            sets a pixel budget per pass, ``batch_size * tile**2``: an image (each
            plane) that fits runs whole, and narrow edge tiles pack more per pass.
        device: where to run; default the model's device. The model's
            weights are laid out in place the fastest way for the device it is
            on (channels-last on the CPU, for aetool's ``conv`` and
            ``denoiser``: :func:`~aetool.devices.fast_layout`); values are
            unchanged and the model stays trainable.
        ensemble: 1, 2, 4 or 8: average the model's outputs over that many
            rotations/flips of the image (undone before averaging), N times
            the work and two more image-sized buffers. It helps models trained
            on flipped/rotated patches (the bundled denoiser and ``--patch-size``
            training); a model that never saw rotated images may get worse.
        color: for a grayscale model on an RGB image, ``opponent`` (denoise
            luminance and two colour differences) or ``channels`` (R, G and B
            one by one); see the module notes.
        refine: follow the model with collaborative Wiener filtering of the
            noisy image, the model's output as pilot (:func:`aetool.denoise.refine.refine`:
            BM3D's second stage, blended with the pilot), each plane at its own
            estimated noise level (:func:`refine_sigma`: the estimate of what the
            model took away), skipped for planes whose estimate is 30/255 or more
            (the luminance of a colour picture carries 0.58 of its sigma). For
            Gaussian-like noise, with the bundled denoiser on held-out photos:
            +0.2 / +0.1 dB PSNR at sigma 15 / 25 (+0.12 / +0.03 when the noise
            was clipped, as in 8-bit files), up to +1 dB on fine texture; about
            2-2.5 times the time of the model alone on the CPU, where it always
            runs.

    Returns:
        float32 array of the input's shape, in [0, 1].
    """
    return _denoise_array(
        model, image, tile=tile, overlap=overlap, batch_size=batch_size, device=device,
        ensemble=ensemble, color=color, refine=refine,
    )[0]  # fmt: skip


@torch.no_grad()
def _denoise_array(
    model: AutoEncoder | LoadedModel,
    image: np.ndarray,
    *,
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    ensemble: int = 1,
    color: str = "opponent",
    refine: bool = False,
) -> tuple[np.ndarray, bool]:
    """:func:`denoise_array`, and whether the refinement changed any plane."""
    if isinstance(model, LoadedModel):
        model = model.model
    x = np.asarray(image, dtype=np.float32)
    squeeze = x.ndim == 2
    if squeeze:
        x = x[None]
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ConfigError(f"expected a (C, H, W) image with 1 or 3 channels, got {x.shape}")
    if tile < 8:
        raise ConfigError(f"tile size must be at least 8 pixels, not {tile}")
    if overlap < 0:
        raise ConfigError(f"tile overlap must be >= 0, not {overlap}")
    if ensemble not in ENSEMBLE_SIZES:
        raise ConfigError(f"ensemble must be one of 1, 2, 4, 8, not {ensemble}")
    if color not in COLOR_MODES:
        raise ConfigError(f"color must be one of {', '.join(COLOR_MODES)}, not {color!r}")
    if not isinstance(refine, (bool, np.bool_)):
        raise ConfigError(f"refine must be True or False, not {refine!r}")
    dev = resolve_device(device) if device is not None else _model_device(model)
    fast_layout(model, _model_device(model))
    opponent = color == "opponent" and x.shape[0] == 3 and _model_channels(model) == 1
    if opponent:
        x = _to_opponent(x)
    result = _denoise_one(model, x, tile, overlap, batch_size, dev)
    if ensemble > 1:
        for k in range(1, ensemble):
            view = _denoise_one(model, _orient(x, k), tile, overlap, batch_size, dev)
            result += _orient(view, k, inverse=True)
        result /= ensemble
    refined = False
    if refine:
        for c in range(len(result)):
            sigma = refine_sigma(x[c], result[c])
            if refine_weight(sigma) > 0 and min(x.shape[1:]) >= 2 * PATCH:
                plane = refine_plane(x[c], result[c], sigma, check=_check_cancel)
                result[c] = np.clip(plane, 0.0, 1.0)
                refined = True
    if opponent:
        result = np.clip(_from_opponent(result), 0.0, 1.0)
    return np.ascontiguousarray(result[0] if squeeze else result), refined


#: ``color`` choices: how a grayscale model treats an RGB image.
COLOR_MODES = ("opponent", "channels")
#: RGB -> (luminance, R-B, R-2G+B) scaled so each lies in [0, 1] after :data:`_OPP_OFFSET`.
_OPP = np.array([[1 / 3, 1 / 3, 1 / 3], [1 / 2, 0, -1 / 2], [1 / 4, -1 / 2, 1 / 4]])
_OPP_INV = np.linalg.inv(_OPP)
_OPP_OFFSET = np.array([0.0, 0.5, 0.5])


def _to_opponent(x: np.ndarray) -> np.ndarray:
    """(3, H, W) RGB in [0, 1] -> opponent planes, each in [0, 1]."""
    z = np.tensordot(_OPP.astype(np.float32), x, axes=1)
    z += _OPP_OFFSET.astype(np.float32)[:, None, None]
    return z


def _from_opponent(z: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_to_opponent` (not clipped)."""
    z = z - _OPP_OFFSET.astype(np.float32)[:, None, None]
    return np.tensordot(_OPP_INV.astype(np.float32), z, axes=1)


#: Accepted ``ensemble`` sizes (the first N of :data:`_ORIENTATIONS`).
ENSEMBLE_SIZES = (1, 2, 4, 8)
#: (quarter turns, flip) of each ensemble member, in order: the first N are used.
_ORIENTATIONS = [(0, False), (0, True), (2, False), (2, True), (1, False), (1, True),
                 (3, False), (3, True)]  # fmt: skip


def _orient(x: np.ndarray, k: int, inverse: bool = False) -> np.ndarray:
    """Ensemble member ``k``'s view of a (C, H, W) array, or (``inverse``) its undoing."""
    turns, flip = _ORIENTATIONS[k]
    if not inverse:
        y = np.rot90(x, turns, axes=(1, 2))
        return np.ascontiguousarray(y[:, :, ::-1] if flip else y)
    y = x[:, :, ::-1] if flip else x
    return np.rot90(y, -turns, axes=(1, 2))


class _Cancelled(Exception):
    """The pipeline's consumer went away (closed the results, or was interrupted)."""


#: Per thread: an Event that, once set, stops :func:`_denoise_one` before its next pass.
_CANCEL = threading.local()


def _check_cancel() -> None:
    cancel = getattr(_CANCEL, "event", None)
    if cancel is not None and cancel.is_set():
        raise _Cancelled


def _denoise_one(
    model: AutoEncoder,
    x: np.ndarray,
    tile: int,
    overlap: int,
    batch_size: int,
    dev: torch.device,
) -> np.ndarray:
    """The tiled (or whole-image) pass of :func:`denoise_array` on a (C, H, W) array."""
    c_img, h, w = x.shape
    c_mod = _model_channels(model)
    # Stack of model inputs (G, c_mod, H, W): one per channel, or the gray plane replicated.
    if c_img == c_mod:
        stack = x[None]
    elif c_mod == 1:
        stack = x[:, None]
    elif c_img == 1:
        stack = np.repeat(x[None], c_mod, axis=1)
    else:
        raise ConfigError(f"cannot denoise a {c_img}-channel image with a {c_mod}-channel model")

    # One forward pass holds at most `budget` pixels per plane: a batch of tiles, or whole
    # images when one fits (a 512x512 picture in one pass rather than nine 256 px tiles).
    budget = max(1, batch_size) * tile * tile
    if model.fully_convolutional:
        th, tw = (h, w) if h * w <= budget else (min(tile, h), min(tile, w))
        per_pass = max(1, budget // (th * tw))
    else:
        th, tw = _model_size(model)
        per_pass = max(1, batch_size)
    pad_h, pad_w = max(0, th - h), max(0, tw - w)
    if pad_h or pad_w:  # smaller than a fixed-size model's input: pad, run, crop
        mode = "reflect" if h > 1 and w > 1 else "edge"
        stack = np.pad(stack, ((0, 0), (0, 0), (0, pad_h), (0, pad_w)), mode=mode)
    hp, wp = stack.shape[2:]
    ov_h, ov_w = min(overlap, th // 2), min(overlap, tw // 2)
    ys, xs = _starts(hp, th, ov_h), _starts(wp, tw, ov_w)
    wy = [_window(len(ys), th, ov_h, i == 0, i == len(ys) - 1) for i in range(len(ys))]
    wx = [_window(len(xs), tw, ov_w, j == 0, j == len(xs) - 1) for j in range(len(xs))]

    out = np.zeros(stack.shape, dtype=np.float32)
    jobs = [(g, i, j) for g in range(len(stack)) for i in range(len(ys)) for j in range(len(xs))]
    was_training = model.training
    model.eval()
    try:
        for k in range(0, len(jobs), per_pass):
            _check_cancel()
            chunk = jobs[k : k + per_pass]
            batch = np.stack(
                [stack[g, :, ys[i] : ys[i] + th, xs[j] : xs[j] + tw] for g, i, j in chunk]
            )
            pred = model(torch.from_numpy(batch).to(dev)).float().cpu().numpy()
            for (g, i, j), p in zip(chunk, pred, strict=True):
                weight = wy[i][:, None] * wx[j][None, :]
                out[g, :, ys[i] : ys[i] + th, xs[j] : xs[j] + tw] += p * weight
    finally:
        model.train(was_training)
    # The window is separable and each row (column) of tiles shares its y (x) weights,
    # so the weight sum is the outer product of the 1-D sums: no full-size weight map.
    sy = np.zeros(hp, np.float32)
    sx = np.zeros(wp, np.float32)
    for i, y0 in enumerate(ys):
        sy[y0 : y0 + th] += wy[i]
    for j, x0 in enumerate(xs):
        sx[x0 : x0 + tw] += wx[j]
    out /= sy[:, None] * sx[None, :]
    np.clip(out, 0.0, 1.0, out=out)
    out = out[:, :, :h, :w]
    if c_img == c_mod:
        return out[0]
    if c_mod == 1:
        return out[:, 0]
    return out[0].mean(axis=0, keepdims=True)


def _model_device(model: AutoEncoder) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


# ---------------------------------------------------------------------------
# output paths and safety


def _input_roots(refs: Sequence[ImageRef]) -> list[Path]:
    """The folders the images were found in (files named one by one have none: an output
    can only land on such a file itself, which the pipeline refuses image by image)."""
    return sorted({ref.root for ref in refs if ref.root is not None})


def output_path(out_dir: str | os.PathLike[str], relpath: str) -> Path:
    """Where the output for an image with ``relpath`` goes, refusing any escape from OUT.

    Raises:
        OutputError: the relative path is absolute, has ``..`` parts, or goes
            through a symlinked folder that points outside OUT.
    """
    rel = PurePosixPath(relpath.replace("\\", "/"))
    parts = [p for p in rel.parts if p not in ("", ".")]
    if rel.is_absolute() or ".." in parts or not parts:
        raise OutputError(
            f"output path for {relpath!r} would leave the output folder; pass the image's "
            "folder as input instead of a path with '..' or an absolute path"
        )
    out = Path(out_dir)
    dst = out.joinpath(*parts)
    # realpath resolves symlinks in the parts that exist; parts not yet created cannot be links.
    if not _inside(_real(dst.parent), _real(out)):
        raise OutputError(
            f"output path {dst} goes through a symlink that points outside the output folder"
        )
    return dst


# ---------------------------------------------------------------------------
# the pipeline


@dataclass
class DenoiseResult:
    """What happened to one image.

    Attributes:
        ref: the input image.
        dst: the output path (None when it could not be decided).
        status: ``written``, ``exists`` (output present, not overwritten) or ``error``.
        sigma_est: noise estimate of the input in [0, 1] units.
        psnr_in, psnr_out, ssim_in, ssim_out: against the reference image,
            before and after denoising (None without a reference).
        error: why the image failed, or why the reference was not used.
        seconds: time spent denoising.
        refined: whether the collaborative Wiener refinement changed it
            (:func:`aetool.denoise.refine.refine`: not at an estimated sigma of 30/255 or
            more, nor on planes under 16 px, which it leaves to the model).
    """

    ref: ImageRef
    dst: Path | None
    status: str
    sigma_est: float | None = None
    psnr_in: float | None = None
    psnr_out: float | None = None
    ssim_in: float | None = None
    ssim_out: float | None = None
    error: str | None = None
    seconds: float = 0.0
    refined: bool = False


@dataclass
class DenoiseSummary:
    """Running totals over :class:`DenoiseResult` objects, for the CLI summary."""

    written: int = 0
    exists: int = 0
    errors: int = 0
    missing_reference: int = 0
    refined: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, r: DenoiseResult) -> None:
        if r.status == "written":
            self.written += 1
        elif r.status == "exists":
            self.exists += 1
        else:
            self.errors += 1
        if r.status == "written" and r.error:
            self.missing_reference += 1
        if r.status == "written" and r.refined:
            self.refined += 1
        for key in ("sigma_est", "psnr_in", "psnr_out", "ssim_in", "ssim_out"):
            v = getattr(r, key)
            if v is not None:
                self.sums[key] = self.sums.get(key, 0.0) + v
                self.counts[key] = self.counts.get(key, 0) + 1

    def mean(self, key: str) -> float | None:
        n = self.counts.get(key, 0)
        return self.sums[key] / n if n else None


def _as_model(
    model: AutoEncoder | LoadedModel | str | os.PathLike[str] | None, device: Any
) -> tuple[AutoEncoder, str | None]:
    """The model placed on ``device``, and the training noise its file records (if any)."""
    if model is None:
        model = bundled_model_path()
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model, device=device)
    if isinstance(model, LoadedModel):
        training = model.metadata.get("training")
        noise = training.get("noise") if isinstance(training, dict) else None
        return place(model.model, device), noise if isinstance(noise, str) else None
    return place(model, device), None


def gaussian_trained(noise: str | None) -> bool:
    """Whether a model file's recorded training noise (``training.noise``) is Gaussian:
    ``refine="auto"`` refines such models' output (:mod:`aetool.denoise.refine` assumes it)."""
    return isinstance(noise, str) and noise.strip().lower().startswith("gaussian")


def _color_for(src: SourceImage, color: str) -> str:
    """``auto``: R, G, B one by one for a JPEG with subsampled colour, whose noise is mostly
    shared by the three channels (the opponent space wins only on independent noise)."""
    if color != "auto":
        return color
    return "channels" if src.chroma_subsampled else "opponent"


def _refine_for(src: SourceImage, refine: bool | str) -> bool:
    """``auto`` (for a model trained on Gaussian noise): refine, except JPEGs with
    subsampled colour, whose noise the subsampling has made correlated and shared by
    the channels, not the independent white noise the Wiener rule assumes."""
    if refine == "auto":
        return not src.chroma_subsampled
    return bool(refine)


def _stored_range(image: SourceImage) -> tuple[float, float]:
    """The stored values that ``image.pixels`` 0 and 1 stand for."""
    if image.value_range is not None:
        return image.value_range
    if image.mode == "F":
        return 0.0, 1.0
    return (0.0, 65535.0) if "16" in image.mode or image.mode == "I" else (0.0, 255.0)


def _reference_for(ref_dir: Path, relpath: str, src: SourceImage) -> np.ndarray:
    path = output_path(ref_dir, relpath)
    if not path.exists():
        raise ImageError(f"no reference image {path}")
    clean = read_image(path)
    px = clean.pixels
    if clean.value_range is not None or src.value_range is not None:
        # compare in the noisy image's mapping of its own value range to [0, 1]
        lo_c, hi_c = _stored_range(clean)
        lo, hi = _stored_range(src)
        px = ((px * (hi_c - lo_c) + lo_c - lo) / ((hi - lo) or 1.0)).astype(np.float32)
    if px.shape[0] != src.pixels.shape[0]:
        px = (
            px.mean(axis=0, keepdims=True)
            if src.pixels.shape[0] == 1
            else np.repeat(px, src.pixels.shape[0], axis=0)
        )
    if px.shape != src.pixels.shape:
        raise ImageError(
            f"reference {path} is {px.shape[2]}x{px.shape[1]}, the image is "
            f"{src.pixels.shape[2]}x{src.pixels.shape[1]}"
        )
    return px


def denoise_images(
    inputs: Iterable[str | os.PathLike[str]] | Sequence[ImageRef],
    out_dir: str | os.PathLike[str],
    model: AutoEncoder | LoadedModel | str | os.PathLike[str] | None = None,
    *,
    overwrite: bool = False,
    reference: str | os.PathLike[str] | None = None,
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    batch_size: int = 8,
    device: str | torch.device = "auto",
    strict: bool = False,
    workers: int | None = None,
    ensemble: int = 1,
    color: str = "auto",
    refine: bool | str = "auto",
) -> Iterator[DenoiseResult]:
    """Denoise images and write each to ``out_dir`` at its relative path, same format and mode.

    Inputs and the output folder are checked before this returns; the images
    are processed as the returned iterator is consumed (one result per image,
    in input order). Outputs are written atomically (temp file + rename) and
    never outside ``out_dir``.

    Args:
        inputs: files and folders, or refs from :func:`~aetool.data.inputs.find_images`
            (for example one shard).
        out_dir: output folder (created as needed); it may not be, contain or
            lie inside an input folder.
        model: a model, loaded model file, or path; None uses the bundled
            grayscale denoiser (:data:`DEFAULT_DENOISER`).
        overwrite: replace existing output files (else they are left alone and
            reported with status ``exists``).
        reference: folder of clean originals at the same relative paths; adds
            PSNR and SSIM before and after denoising.
        tile: tile side for fully convolutional models.
        overlap: tile overlap in pixels.
        batch_size: tiles per forward pass.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        strict: raise on the first image that cannot be read or written.
        workers: decoding/encoding threads (default: CPU count, at most 4).
        ensemble: average over 1, 2, 4 or 8 rotations/flips of each image
            (see :func:`denoise_array`).
        color: ``auto``, ``opponent`` or ``channels``: how a grayscale model treats RGB
            images (see :func:`denoise_array`).
        refine: collaborative Wiener refinement of the model's output (see
            :func:`denoise_array`): True, False, or ``auto``: on when the model
            file records Gaussian training noise (the bundled denoiser does),
            except for JPEGs with subsampled colour (correlated noise).

    Raises:
        OutputError: unsafe output folder.
        ModelFileError: the model file (or the bundled one) is missing or invalid.
        ImageError: with ``strict``, the first unreadable image.
    """
    items = list(inputs)
    if items and all(isinstance(i, ImageRef) for i in items):
        refs: list[ImageRef] = list(items)  # type: ignore[arg-type]
        roots: list[str | os.PathLike[str]] = list(_input_roots(refs))
    else:
        refs, _ = find_images(items)  # type: ignore[arg-type]
        roots = list(items)  # type: ignore[arg-type]
    check_output_dir(out_dir, roots)
    if tile < 8:
        raise ConfigError(f"--tile must be at least 8 pixels, not {tile}")
    if not 0 <= overlap < tile:
        raise ConfigError(f"--overlap must be in [0, tile), not {overlap}")
    if ensemble not in ENSEMBLE_SIZES:
        raise ConfigError(f"--ensemble must be one of 1, 2, 4, 8, not {ensemble}")
    if color not in (*COLOR_MODES, "auto"):
        raise ConfigError(f"--color must be auto, {', '.join(COLOR_MODES)}, not {color!r}")
    refine = {"on": True, "off": False}.get(refine, refine) if isinstance(refine, str) else refine
    if not (refine == "auto" or isinstance(refine, (bool, np.bool_))):
        raise ConfigError(f"refine must be True, False or 'auto' ('on', 'off'), not {refine!r}")
    ref_dir = Path(reference) if reference is not None else None
    if ref_dir is not None and not ref_dir.is_dir():
        raise ImageError(f"reference folder {ref_dir} does not exist")
    dev = resolve_device(device)
    net, noise = _as_model(model, dev)
    if refine == "auto" and not gaussian_trained(noise):
        refine = False
    n_workers = workers or max(1, min(4, os.cpu_count() or 1))
    return _pipeline(
        refs, Path(out_dir), net, dev, overwrite, ref_dir, tile, overlap, batch_size, strict,
        n_workers, ensemble, color, refine,
    )  # fmt: skip


def _pipeline(
    refs: list[ImageRef],
    out: Path,
    net: AutoEncoder,
    dev: torch.device,
    overwrite: bool,
    ref_dir: Path | None,
    tile: int,
    overlap: int,
    batch_size: int,
    strict: bool,
    workers: int,
    ensemble: int,
    color: str,
    refine: bool | str,
) -> Iterator[DenoiseResult]:
    import time

    input_keys = {os.path.realpath(r.path) for r in refs}
    claimed: set[str] = set()
    real_out = _real(out)

    def plan(ref: ImageRef) -> DenoiseResult | Path:
        if _inside(_real(ref.path), real_out):  # a symlink in an input folder leads into OUT
            return DenoiseResult(ref, None, "error", error=f"is inside the output folder {out}")
        rel = ref.relpath
        if ref.root is None and ".." in PurePosixPath(rel).parts:
            rel = PurePosixPath(rel).name  # a named file outside the working folder, as absolute
        try:
            dst = output_path(out, rel)
        except OutputError as exc:
            return DenoiseResult(ref, None, "error", error=str(exc))
        key = os.path.realpath(dst)
        if key in input_keys:
            return DenoiseResult(ref, dst, "error", error=f"{dst} is an input image")
        if key in claimed:
            return DenoiseResult(ref, dst, "error", error=f"{dst} is the output of another input")
        claimed.add(key)
        if (dst.exists() or dst.is_symlink()) and not overwrite:
            return DenoiseResult(ref, dst, "exists", error="output exists (use --overwrite)")
        if dst.is_dir():
            return DenoiseResult(ref, dst, "error", error=f"{dst} is a folder")
        return dst

    def decode(ref: ImageRef) -> SourceImage:
        return read_image(ref.path)

    def write(dst: Path, src: SourceImage, pixels: np.ndarray) -> None:
        if not _inside(_real(dst.parent), _real(out)):  # re-check: folders may have changed
            raise OutputError(f"output path {dst} goes through a symlink out of {out}")
        write_image(dst, src, pixels)

    ahead = 2 * workers
    # The model runs in one compute thread; this generator hands out each image's result as
    # soon as its file is written (rows stream while the next image is being denoised).
    done: queue.Queue[tuple[DenoiseResult, Future[None] | None] | BaseException | None]
    done = queue.Queue()
    slots = threading.Semaphore(ahead + 1)  # results not yet handed out: bounds the memory
    stop = threading.Event()

    def compute(pool: ThreadPoolExecutor) -> None:
        _CANCEL.event = stop  # checked between forward passes (see _denoise_one)
        try:
            if dev.type == "cuda":
                torch.cuda.set_device(dev)  # a new thread starts on device 0
            _compute(pool)
        except _Cancelled:
            pass
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consuming thread
            done.put(exc)
        finally:
            done.put(None)

    def emit(item: tuple[DenoiseResult, Future[None] | None]) -> bool:
        while not slots.acquire(timeout=0.1):
            if stop.is_set():
                return False
        done.put(item)
        return True

    def _compute(pool: ThreadPoolExecutor) -> None:
        todo = iter(refs)
        decoding: deque[tuple[ImageRef, DenoiseResult | tuple[Path, Future[SourceImage]]]]
        decoding = deque()

        def refill() -> None:
            while len(decoding) < ahead:
                ref = next(todo, None)
                if ref is None:
                    return
                p = plan(ref)
                decoding.append(
                    (ref, p if isinstance(p, DenoiseResult) else (p, pool.submit(decode, ref)))
                )

        refill()
        while decoding and not stop.is_set():
            ref, job = decoding.popleft()
            refill()
            if isinstance(job, DenoiseResult):
                if strict and job.status == "error":
                    raise OutputError(f"{ref.path}: {job.error}")
                item: tuple[DenoiseResult, Future[None] | None] = (job, None)
            else:
                dst, fut = job
                try:
                    src = fut.result()
                except ImageError as exc:
                    if strict:
                        raise
                    msg = str(exc).removeprefix(f"{ref.path}: ")
                    item = (DenoiseResult(ref, dst, "error", error=msg), None)
                else:
                    t0 = time.perf_counter()
                    den, refined = _denoise_array(
                        net, src.pixels, tile=tile, overlap=overlap, batch_size=batch_size,
                        device=dev, ensemble=ensemble, color=_color_for(src, color),
                        refine=_refine_for(src, refine),
                    )  # fmt: skip
                    res = DenoiseResult(
                        ref, dst, "written", sigma_est=estimate_sigma(src.pixels),
                        seconds=time.perf_counter() - t0, refined=refined,
                    )  # fmt: skip
                    if ref_dir is not None:
                        try:
                            clean = _reference_for(ref_dir, ref.relpath, src)
                        except (ImageError, OutputError) as exc:
                            res.error = f"reference not used: {exc}"
                        else:
                            res.psnr_in, res.psnr_out = psnr(clean, src.pixels), psnr(clean, den)
                            res.ssim_in, res.ssim_out = ssim(clean, src.pixels), ssim(clean, den)
                    item = (res, pool.submit(write, dst, src, den))
            if not emit(item):
                return

    with ThreadPoolExecutor(workers) as pool:
        worker = threading.Thread(target=compute, args=(pool,), name="aetool-denoise", daemon=True)
        worker.start()
        try:
            while (got := done.get()) is not None:
                if isinstance(got, BaseException):
                    raise got
                res, fut = got
                if fut is not None:
                    try:
                        fut.result()
                    except (OSError, ValueError, ImageError, OutputError) as exc:
                        if strict:
                            raise ImageError(
                                f"{res.ref.path}: cannot write {res.dst}: {exc}"
                            ) from None
                        res.status, res.error = "error", f"cannot write {res.dst}: {_reason(exc)}"
                        res.psnr_in = res.psnr_out = res.ssim_in = res.ssim_out = None
                slots.release()
                yield res
        finally:
            stop.set()  # the compute thread stops at its next forward pass
            worker.join()
