"""Image I/O for denoising: decode at full precision, write back in the same format and mode.

Formats and modes are kept: 8-bit gray (``L``) and RGB stay so; 16-bit gray
(``I;16``) keeps 16 bits, and so do 16-bit colour, colour+alpha and gray+alpha
PNGs (read and written with pypng, since Pillow holds them in 8 bits); float
(``F``) and 32-bit integer (``I``) images stay so, and when their values leave
[0, 1] (0..65535 for integers) they are mapped from their own range to [0, 1]
for the model and back (NaN and inf pixels are written back unchanged);
``RGBA``/``LA`` keep their alpha channel; palette images are written as RGB
(or RGBA with transparency, L when the palette is gray); bilevel (``1``) as L;
CMYK/YCbCr as RGB. JPEG and lossy WebP are written at quality 95, lossless WebP
lossless; metadata is kept as :mod:`aetool.denoise.metadata` says. EXIF
orientation is applied, so the pixels are written upright; 16-bit colour PNGs
are the exception: their pixels and EXIF stay as stored. Refused, with the
reason in the error row, rather than degraded: images with several frames
(animated GIFs, multi-page TIFFs; an MPO photo's extra views and a TIFF's
thumbnail pages do not count, the main picture is denoised) and 16-bit colour
TIFFs.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin, PngImagePlugin

from aetool.data.decode import decode_image
from aetool.denoise.metadata import (
    _exif,
    _insert_png_chunks,
    _kept_info,
    _png_text_chunks,
    _upright_text,
    _webp_lossless,
)
from aetool.errors import ImageError
from aetool.files import (
    UMASK,
    atomic_path,
)

__all__ = ["SourceImage", "read_image", "write_image"]

_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}


_SAVE_FORMAT_BY_EXT = {ext.lower(): fmt for ext, fmt in Image.registered_extensions().items()}


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
        converted_from: the input's mode when it cannot be written back as such
            (palette, bilevel, CMYK, YCbCr, LAB: written as L/RGB/RGBA), else None.
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
    converted_from: str | None = None

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)``."""
        return self.pixels.shape[1], self.pixels.shape[2]


#: Modes written back in another one (the denoised values are not palette indices or ink).
_CONVERTED_MODES = frozenset({"P", "PA", "1", "CMYK", "YCbCr", "LAB", "HSV"})


def _format_for(path: Path, fmt: str | None) -> str:
    if fmt:
        return fmt
    found = _SAVE_FORMAT_BY_EXT.get(path.suffix.lower())
    if not found:
        raise ImageError(f"{path}: cannot tell which image format to write")
    return found


def read_image(path: str | os.PathLike[str]) -> SourceImage:
    """Decode an image for denoising (see the module notes for how modes map).

    Raises:
        ImageError: the file cannot be decoded.
    """
    path = Path(path)
    try:
        if not path.is_file():  # a FIFO or device would block: never opened
            raise ImageError(f"{path}: not a regular file")
        if path.stat().st_size == 0:
            raise ImageError(f"{path}: empty file (0 bytes)")
        with Image.open(path) as probe:
            mode, fmt = probe.mode, probe.format
            _refuse_frames(path, probe)
            raw = getattr(getattr(probe, "png", None), "im_rawmode", "")
            info = _file_info(path, probe)
            exif = _exif(info, fmt)
            subsampled = fmt in ("JPEG", "MPO") and JpegImagePlugin.get_sampling(probe) in (1, 2)
            if mode in ("F", "I"):
                return _read_wide(path, probe, fmt, _kept_info(info, exif))
            if fmt == "PNG" and raw in _PNG16_MODES:
                return _read_png16(path, info)  # pixels as stored: text and EXIF kept as they are
            if info.get("png_text") and probe.getexif().get(0x0112, 1) in range(2, 9):
                info["png_text"] = _upright_text(info["png_text"])  # pixels are turned upright
            _refuse_deep_colour_tiff(path, probe)
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
    except Exception as exc:  # noqa: BLE001 - any failure on a malformed file is its row's error
        raise ImageError(f"{path}: cannot decode image ({_reason(exc)})") from None
    fmt = _format_for(path, fmt)
    if has_alpha:
        arr = np.asarray(rgba)
        color = arr[..., :-1].astype(np.float32).transpose(2, 0, 1) / 255.0
        return SourceImage(
            np.ascontiguousarray(color), arr[..., -1].copy(), rgba.mode, fmt,
            _kept_info(info, exif), converted_from=mode if mode in _CONVERTED_MODES else None,
        )  # fmt: skip
    pixels = decode_image(path)  # full precision, EXIF orientation applied
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        out_mode = "I;16"
    else:
        out_mode = "L" if pixels.shape[0] == 1 else "RGB"
    return SourceImage(
        pixels, None, out_mode, fmt, _kept_info(info, exif), chroma_subsampled=subsampled,
        converted_from=mode if mode in _CONVERTED_MODES else None,
    )  # fmt: skip


def _refuse_frames(path: Path, probe: Image.Image) -> None:
    frames = _frames(probe)
    if frames > 1:
        raise ImageError(
            f"{path}: has {frames} frames; only single-frame images are denoised "
            "(split it into one file per frame)"
        )


def _file_info(path: Path, probe: Image.Image) -> dict[str, Any]:
    """Pillow's ``info``, plus the file's PNG text chunks and whether a WebP is lossless."""
    info: dict[Any, Any] = dict(probe.info)  # keys are str, and (int, int) for some TIFF tags
    if probe.format == "PNG":
        info["png_text"] = _png_text_chunks(path)
    if probe.format == "WEBP" and _webp_lossless(path):
        info["lossless"] = True
    return info


def _refuse_deep_colour_tiff(path: Path, probe: Image.Image) -> None:
    bits = _tiff_bits(probe) if probe.format == "TIFF" else 8
    if probe.mode in ("RGB", "RGBA") and bits > 8:
        raise ImageError(
            f"{path}: {bits}-bit colour TIFF is not supported (it would be "
            "written back with 8 bits); save it as a 16-bit PNG or split the channels"
        )


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
            if not int(getattr(img, "tag_v2", {}).get(254, 0)) & 1:
                pages += 1
    finally:
        img.seek(0)
    return pages


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


def _stored_range(image: SourceImage) -> tuple[float, float]:
    """The stored values that ``image.pixels`` 0 and 1 stand for."""
    if image.value_range is not None:
        return image.value_range
    if image.mode == "F":
        return 0.0, 1.0
    return (0.0, 65535.0) if "16" in image.mode or image.mode == "I" else (0.0, 255.0)
