"""File metadata kept through denoising: EXIF, ICC, DPI, PNG text chunks, WebP losslessness.

ICC profiles, DPI, EXIF (of JPEG, WebP and PNG files; a TIFF's "EXIF" is its
own first directory, whose pixel-layout tags must not be copied) and PNG text
chunks (byte for byte, found by walking the file's chunk headers) are kept.
The pixels are written upright, so the kept EXIF orientation is reset and the
XMP orientation removed; ImageMagick's raw EXIF profiles in PNG text, which
hold it too, are dropped. A WebP file's lossless flag comes from its chunks.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image


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
    out: list[tuple[bytes, bytes]] = []
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
