"""Finding, decoding, converting and caching images.

Pipeline: :func:`find_images` walks files and folders (sorted, hidden entries
skipped, symlink loops cut); :func:`load_images` probes headers, decides the
channel count and size, then decodes every image once, in parallel, into a
``uint8`` cache of shape ``(N, C, H, W)`` (in memory, or a memory-mapped
temporary file when it would exceed the memory budget). Training and scoring
read batches from that cache.

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
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from aetool.errors import ConfigError, ImageError, NoImagesError

__all__ = [
    "Batch",
    "DEFAULT_SIZE",
    "IMAGE_EXTENSIONS",
    "ImageRef",
    "ImageSet",
    "Skipped",
    "decode_image",
    "find_images",
    "iter_batches",
    "load_images",
    "parse_size",
    "prepare_image",
    "read_path_list",
]

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif",
     ".pnm", ".pgm", ".ppm", ".pbm"}
)  # fmt: skip
#: Size used when the images do not all share one size and none is given.
DEFAULT_SIZE = (64, 64)
#: Above this many bytes the decoded cache lives in a memory-mapped temp file.
DEFAULT_MEMORY_BUDGET = 2 * 1024**3
RESIZE_MODES = ("stretch", "crop")
_GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


@dataclass(frozen=True)
class ImageRef:
    """One image file and its path relative to the folder it was found in.

    ``root`` is that folder, or None for a file named explicitly (its
    ``relpath`` is then the path as given, or the bare name if absolute).
    """

    path: Path
    relpath: str
    root: Path | None = None


@dataclass(frozen=True)
class Skipped:
    """A file that could not be used, and why."""

    path: str
    reason: str


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def find_images(
    inputs: Iterable[str | os.PathLike[str]], *, missing_ok: bool = False
) -> tuple[list[ImageRef], list[Skipped]]:
    """Expand files and folders into a sorted, de-duplicated list of image files.

    Folders are walked recursively in sorted order; hidden files and folders
    are skipped, symlinked folders are followed once (loops are cut) and files
    without an image extension are ignored. Files named explicitly are kept
    whatever their extension (decoding decides).

    Args:
        inputs: files and folders.
        missing_ok: report a missing path as skipped instead of raising.

    Returns:
        The image references, and what was skipped: the explicitly named paths
        that do not exist (only with ``missing_ok``) and folders under the
        inputs that could not be read.

    Raises:
        ImageError: a path does not exist (without ``missing_ok``).
    """
    refs: list[ImageRef] = []
    missing: list[Skipped] = []
    seen: set[str] = set()
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for ref in _walk(p, missing):
                key = os.path.realpath(ref.path)
                if key not in seen:
                    seen.add(key)
                    refs.append(ref)
        elif p.exists():
            key = os.path.realpath(p)
            if key not in seen:
                seen.add(key)
                refs.append(ImageRef(p, p.name if p.is_absolute() else str(p)))
        elif missing_ok:
            missing.append(Skipped(str(p), "no such file or folder"))
        else:
            raise ImageError(f"{p} does not exist")
    return refs, missing


def _walk(root: Path, unreadable: list[Skipped]) -> list[ImageRef]:
    out: list[ImageRef] = []
    visited: set[tuple[int, int]] = set()

    def onerror(exc: OSError) -> None:
        unreadable.append(Skipped(str(exc.filename), f"cannot read folder ({exc.strerror})"))

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=onerror):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in visited:  # symlink loop or repeated target
            dirnames[:] = []
            continue
        visited.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        for name in sorted(filenames):
            if _is_hidden(name) or Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            full = Path(dirpath) / name
            out.append(ImageRef(full, full.relative_to(root).as_posix(), root))
    return out


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
    img = Image.open(path)
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
    except (OSError, SyntaxError, ValueError, Image.UnidentifiedImageError) as exc:
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


@dataclass
class ImageSet:
    """Decoded images ready for a model.

    Attributes:
        refs: the images kept, in order.
        data: ``uint8 (N, C, H, W)`` (possibly memory-mapped) when every image
            was resized to one size; a list of ``(C, H_i, W_i)`` arrays when
            native sizes were kept (patch training).
        channels: 1 or 3.
        size: ``(H, W)``, or None for native sizes.
        skipped: files that could not be decoded, with reasons.
        resize: the resize mode used.
        alpha_background: background used to composite transparency.
    """

    refs: list[ImageRef]
    data: np.ndarray | list[np.ndarray]
    channels: int
    size: tuple[int, int] | None
    skipped: list[Skipped] = field(default_factory=list)
    resize: str = "stretch"
    alpha_background: str = "black"
    _tmp: object | None = None

    def __len__(self) -> int:
        return len(self.refs)

    @property
    def paths(self) -> list[Path]:
        return [r.path for r in self.refs]

    def preprocessing(self) -> dict[str, object]:
        """The preprocessing record stored in model files."""
        return {
            "channels": self.channels,
            "height": self.size[0] if self.size else None,
            "width": self.size[1] if self.size else None,
            "resize": self.resize,
            "alpha_background": self.alpha_background,
            "value_range": [0.0, 1.0],
        }


@dataclass(frozen=True)
class _Probe:
    ref: ImageRef
    size: tuple[int, int] | None  # (H, W) after EXIF orientation
    gray: bool
    error: str | None


def _probe(ref: ImageRef) -> _Probe:
    try:
        if ref.path.stat().st_size == 0:
            return _Probe(ref, None, True, "empty file (0 bytes)")
        with Image.open(ref.path) as img:
            w, h = img.size
            try:
                if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                    w, h = h, w
            except Exception:  # a broken EXIF block is not worth a skipped image
                pass
            return _Probe(ref, (h, w), _is_gray(img), None)
    except Image.DecompressionBombError as exc:
        return _Probe(ref, None, True, f"refused as a possible decompression bomb ({exc})")
    except (OSError, SyntaxError, ValueError) as exc:
        return _Probe(ref, None, True, _reason(exc))


def _workers() -> int:
    return max(1, min(8, (os.cpu_count() or 1)))


def load_images(
    inputs: Iterable[str | os.PathLike[str]] | Sequence[ImageRef],
    *,
    channels: int | None = None,
    size: str | int | tuple[int, int] | None = None,
    native_size: bool = False,
    resize: str = "stretch",
    alpha_background: str = "black",
    strict: bool = False,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    progress: Callable[[int, int], None] | None = None,
) -> ImageSet:
    """Find and decode images into a ``uint8`` cache, each decoded once, in parallel.

    Args:
        inputs: files and folders, or refs from :func:`find_images`.
        channels: 1 or 3; None decides from the data.
        size: ``(H, W)``, ``N`` or ``"HxW"``; None uses the common size or
            :data:`DEFAULT_SIZE`.
        native_size: keep every image at its own size (for patch training).
        resize: ``"stretch"`` or ``"crop"``.
        alpha_background: ``"black"`` or ``"white"``.
        strict: raise on the first unreadable file instead of skipping it.
        memory_budget: bytes above which the cache is memory-mapped.
        progress: called as ``progress(done, total)`` while decoding.

    Raises:
        NoImagesError: no image was found, or none could be decoded.
        ImageError: with ``strict``, the first unreadable file.
    """
    if channels not in (None, 1, 3):
        raise ConfigError(f"channels must be 1 or 3, not {channels}")
    if resize not in RESIZE_MODES:
        raise ConfigError(f"resize mode {resize!r} is not one of: {', '.join(RESIZE_MODES)}")
    if alpha_background not in ("black", "white"):
        raise ConfigError("alpha background must be 'black' or 'white'")
    inputs = list(inputs)
    if inputs and all(isinstance(i, ImageRef) for i in inputs):
        refs = list(inputs)  # type: ignore[arg-type]
    else:
        refs, _ = find_images(inputs)  # type: ignore[arg-type]
    where = (
        ", ".join(str(i) for i in inputs[:3])
        if inputs and not isinstance(inputs[0], ImageRef)
        else "the input"
    )
    if not refs:
        raise NoImagesError(f"no image files found in {where}")

    skipped: list[Skipped] = []

    def fail(path: Path, reason: str) -> None:
        if strict:
            raise ImageError(f"{path}: {reason}")
        skipped.append(Skipped(str(path), reason))

    with ThreadPoolExecutor(_workers()) as pool:
        probes = list(pool.map(_probe, refs))
    good: list[_Probe] = []
    for pr in probes:
        if pr.error:
            fail(pr.ref.path, pr.error)
        else:
            good.append(pr)
    if not good:
        raise NoImagesError(f"none of the {len(refs)} files in {where} could be read as an image")

    if channels is None:
        channels = 1 if all(p.gray for p in good) else 3
    target = parse_size(size)
    if native_size:
        target = None
    elif target is None:
        sizes = {p.size for p in good}
        target = sizes.pop() if len(sizes) == 1 else DEFAULT_SIZE

    n = len(good)
    kept = np.zeros(n, dtype=bool)
    tmp = None
    data: np.ndarray | list[np.ndarray]
    if target is None:
        data = [np.empty(0, np.uint8)] * n
    else:
        nbytes = n * channels * target[0] * target[1]
        if nbytes > memory_budget:
            tmp = tempfile.TemporaryFile(prefix="aetool-cache-")
            data = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=(n, channels, *target))
        else:
            data = np.empty((n, channels, *target), dtype=np.uint8)

    errors: list[str | None] = [None] * n

    def work(i: int) -> None:
        try:
            arr = prepare_image(
                good[i].ref.path, channels=channels, size=target, resize=resize,
                alpha_background=alpha_background,
            )  # fmt: skip
        except ImageError as exc:
            errors[i] = str(exc).split(": ", 1)[-1]
            return
        data[i] = arr
        kept[i] = True

    done = 0
    chunk = 256
    with ThreadPoolExecutor(_workers()) as pool:
        for start in range(0, n, chunk):
            list(pool.map(work, range(start, min(n, start + chunk))))
            done = min(n, start + chunk)
            if progress:
                progress(done, n)
            if strict:
                for i in range(start, done):
                    if errors[i]:
                        raise ImageError(f"{good[i].ref.path}: {errors[i]}")
    for i in range(n):
        if errors[i]:
            fail(good[i].ref.path, errors[i] or "unreadable")
    skipped.sort(key=lambda s: s.path)
    if not kept.any():
        raise NoImagesError(f"none of the {len(refs)} files in {where} could be decoded")
    kept_refs = [g.ref for g, k in zip(good, kept, strict=True) if k]
    if not kept.all():
        if isinstance(data, list):
            data = [d for d, k in zip(data, kept, strict=True) if k]
        else:
            data = data[kept] if tmp is None else _compact(data, kept)
    return ImageSet(
        refs=kept_refs,
        data=data,
        channels=channels,
        size=target,
        skipped=skipped,
        resize=resize,
        alpha_background=alpha_background,
        _tmp=tmp,
    )


def _compact(data: np.ndarray, kept: np.ndarray) -> np.ndarray:
    # Move kept rows forward in place so a memory-mapped cache is not copied to RAM.
    j = 0
    for i in np.flatnonzero(kept):
        if i != j:
            data[j] = data[i]
        j += 1
    return data[:j]


# ---------------------------------------------------------------------------
# streaming (score, export): bounded memory whatever the image count


@dataclass
class Batch:
    """A chunk of images decoded for a model.

    Attributes:
        refs: the images that decoded, in input order.
        data: ``uint8 (len(refs), C, H, W)``.
        failed: images that could not be decoded, with reasons.
    """

    refs: list[ImageRef]
    data: np.ndarray
    failed: list[tuple[ImageRef, str]]


def iter_batches(
    refs: Iterable[ImageRef],
    *,
    channels: int,
    size: tuple[int, int],
    resize: str = "stretch",
    alpha_background: str = "black",
    batch_size: int = 64,
) -> Iterator[Batch]:
    """Decode images in parallel, ``batch_size`` at a time, preserving input order.

    Memory holds at most two batches: the next one decodes while the caller
    works on the current one.
    """

    def decode(ref: ImageRef) -> tuple[ImageRef, np.ndarray | None, str | None]:
        try:
            if ref.path.is_file() and ref.path.stat().st_size == 0:
                return ref, None, "empty file (0 bytes)"
            arr = prepare_image(
                ref.path, channels=channels, size=size, resize=resize,
                alpha_background=alpha_background,
            )  # fmt: skip
            return ref, arr, None
        except ImageError as exc:
            return ref, None, str(exc).split(": ", 1)[-1]
        except Exception as exc:  # any decoder failure is one bad file, never a crashed run
            return ref, None, _reason(exc)

    def assemble(results: list[tuple[ImageRef, np.ndarray | None, str | None]]) -> Batch:
        ok = [(r, a) for r, a, e in results if a is not None]
        data = np.stack([a for _, a in ok]) if ok else np.empty((0, channels, *size), np.uint8)
        return Batch([r for r, _ in ok], data, [(r, e or "") for r, a, e in results if a is None])

    it = iter(refs)
    with ThreadPoolExecutor(_workers()) as pool:
        pending = None
        while True:
            chunk = list(islice(it, batch_size))
            nxt = [pool.submit(decode, r) for r in chunk] if chunk else None
            if pending is not None:
                yield assemble([f.result() for f in pending])
            if nxt is None:
                break
            pending = nxt


def read_path_list(stream: Iterable[str]) -> list[str]:
    """Newline-separated paths (blank lines and surrounding whitespace ignored)."""
    return [line.strip() for line in stream if line.strip()]
