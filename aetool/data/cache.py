"""Decoded images in memory: one ``uint8`` cache per training run, and batches for inference.

Training decodes every image once, in parallel, into one array (memory-mapped
above a budget, so a large data set does not need the RAM); each image is
opened first to learn its size and mode, so a bad file is reported before any
decoding and the common size can be chosen. Inference decodes batches on a
pool while the model works on the previous one, so memory holds two batches.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from aetool.data.decode import (
    DEFAULT_SIZE,
    RESIZE_MODES,
    _is_gray,
    _reason,
    parse_size,
    prepare_image,
)
from aetool.data.inputs import (
    ImageRef,
    Skipped,
    find_images,
)
from aetool.errors import ConfigError, ImageError, NoImagesError

#: Above this many bytes the decoded cache lives in a memory-mapped temp file.
DEFAULT_MEMORY_BUDGET = 2 * 1024**3


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
        if not ref.path.is_file():  # a FIFO or device would block: never opened
            return _Probe(ref, None, True, "not a regular file")
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
    except Exception as exc:  # noqa: BLE001 - any failure on a malformed file is its row's error
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
    _check_options(channels, resize, alpha_background)
    refs, where = _refs_of(inputs)
    skipped = _Skips(strict)
    good = _probe_all(refs, skipped)
    if not good:
        raise NoImagesError(f"none of the {len(refs)} files in {where} could be read as an image")
    if channels is None:
        channels = 1 if all(p.gray for p in good) else 3
    target = _target_size(good, size, native_size)
    data, tmp = _allocate(len(good), channels, target, memory_budget)
    decode = _Decoder(good, data, channels, target, resize, alpha_background)
    decode.run(strict, progress)
    for pr, error in zip(good, decode.errors, strict=True):
        if error:
            skipped.add(pr.ref.path, error or "unreadable")
    skipped.items.sort(key=lambda s: s.path)
    kept = decode.kept
    if not kept.any():
        raise NoImagesError(f"none of the {len(refs)} files in {where} could be decoded")
    if not kept.all():
        data = _keep_rows(data, kept, tmp is not None)
    return ImageSet(
        refs=[g.ref for g, k in zip(good, kept, strict=True) if k],
        data=data,
        channels=channels,
        size=target,
        skipped=skipped.items,
        resize=resize,
        alpha_background=alpha_background,
        _tmp=tmp,
    )


def _check_options(channels: int | None, resize: str, alpha_background: str) -> None:
    if channels not in (None, 1, 3):
        raise ConfigError(f"channels must be 1 or 3, not {channels}")
    if resize not in RESIZE_MODES:
        raise ConfigError(f"resize mode {resize!r} is not one of: {', '.join(RESIZE_MODES)}")
    if alpha_background not in ("black", "white"):
        raise ConfigError("alpha background must be 'black' or 'white'")


def _refs_of(
    inputs: Iterable[str | os.PathLike[str]] | Sequence[ImageRef],
) -> tuple[list[ImageRef], str]:
    """The image refs of ``inputs`` and how to name the inputs in a message."""
    items: list[Any] = list(inputs)
    if items and all(isinstance(i, ImageRef) for i in items):
        refs: list[ImageRef] = items
    else:
        refs, _ = find_images(items)
    where = (
        ", ".join(str(i) for i in items[:3])
        if items and not isinstance(items[0], ImageRef)
        else "the input"
    )
    if not refs:
        raise NoImagesError(f"no image files found in {where}")
    return refs, where


@dataclass
class _Skips:
    """Unreadable files: collected, or with ``strict`` the first one raised."""

    strict: bool
    items: list[Skipped] = field(default_factory=list)

    def add(self, path: Path, reason: str) -> None:
        if self.strict:
            raise ImageError(f"{path}: {reason}")
        self.items.append(Skipped(str(path), reason))


def _probe_all(refs: list[ImageRef], skipped: _Skips) -> list[_Probe]:
    """Open every file's header in parallel; the readable ones, in order."""
    with ThreadPoolExecutor(_workers()) as pool:
        probes = list(pool.map(_probe, refs))
    good: list[_Probe] = []
    for pr in probes:
        if pr.error:
            skipped.add(pr.ref.path, pr.error)
        else:
            good.append(pr)
    return good


def _target_size(
    good: list[_Probe], size: str | int | tuple[int, int] | None, native_size: bool
) -> tuple[int, int] | None:
    """None for native sizes, else the requested size, the images' common size or
    :data:`DEFAULT_SIZE`."""
    target = parse_size(size)  # checked even when native sizes make it moot
    if native_size:
        return None
    if target is None:
        sizes = {p.size for p in good}
        target = sizes.pop() if len(sizes) == 1 else DEFAULT_SIZE
    return target


def _allocate(
    n: int, channels: int, target: tuple[int, int] | None, memory_budget: int
) -> tuple[np.ndarray | list[np.ndarray], Any]:
    """The cache: a list for native sizes, else an array, memory-mapped above the budget."""
    if target is None:
        return [np.empty(0, np.uint8)] * n, None
    if n * channels * target[0] * target[1] > memory_budget:
        tmp = tempfile.TemporaryFile(prefix="aetool-cache-")
        return np.memmap(tmp, dtype=np.uint8, mode="w+", shape=(n, channels, *target)), tmp
    return np.empty((n, channels, *target), dtype=np.uint8), None


class _Decoder:
    """Decodes the probed images into the cache in parallel, 256 at a time."""

    CHUNK = 256

    def __init__(
        self,
        good: list[_Probe],
        data: np.ndarray | list[np.ndarray],
        channels: int,
        target: tuple[int, int] | None,
        resize: str,
        alpha_background: str,
    ) -> None:
        self.good, self.data = good, data
        self.options: dict[str, Any] = dict(
            channels=channels, size=target, resize=resize, alpha_background=alpha_background
        )
        self.kept = np.zeros(len(good), dtype=bool)
        self.errors: list[str | None] = [None] * len(good)

    def work(self, i: int) -> None:
        try:
            arr = prepare_image(self.good[i].ref.path, **self.options)
        except ImageError as exc:
            self.errors[i] = str(exc).split(": ", 1)[-1]
            return
        self.data[i] = arr
        self.kept[i] = True

    def run(self, strict: bool, progress: Callable[[int, int], None] | None) -> None:
        n = len(self.good)
        with ThreadPoolExecutor(_workers()) as pool:
            for start in range(0, n, self.CHUNK):
                list(pool.map(self.work, range(start, min(n, start + self.CHUNK))))
                done = min(n, start + self.CHUNK)
                if progress:
                    progress(done, n)
                if strict:
                    for i in range(start, done):
                        if self.errors[i]:
                            raise ImageError(f"{self.good[i].ref.path}: {self.errors[i]}")


def _keep_rows(
    data: np.ndarray | list[np.ndarray], kept: np.ndarray, mapped: bool
) -> np.ndarray | list[np.ndarray]:
    """The cache without the rows that failed to decode."""
    if isinstance(data, list):
        return [d for d, k in zip(data, kept, strict=True) if k]
    return _compact(data, kept) if mapped else data[kept]


def _compact(data: np.ndarray, kept: np.ndarray) -> np.ndarray:
    # Move kept rows forward in place so a memory-mapped cache is not copied to RAM.
    j = 0
    for i in np.flatnonzero(kept):
        if i != j:
            data[j] = data[i]
        j += 1
    return data[:j]


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
