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


#: ``iter_batches`` decodes in worker processes from this many images on: below it,
#: starting the processes costs more than they save (benchmarks/decode_pool.py: on
#: 2 cores, 28x28 PNGs, 300 images 0.4-0.5x the threads' speed, 1,000 images 1.1x,
#: 10,000 images 3.7x).
PROCESS_MIN_IMAGES = 2048
#: Environment variable that sets the number of decoding processes (0: threads).
PROCESSES_ENV = "AETOOL_DECODE_PROCESSES"


def decode_processes(count: int) -> int:
    """Worker processes :func:`iter_batches` uses for ``count`` images (0: threads).

    One per core (at most 16) from :data:`PROCESS_MIN_IMAGES` images on, unless
    the environment variable ``AETOOL_DECODE_PROCESSES`` gives the number.

    Raises:
        ConfigError: that variable is not a whole number from 0 to 256.
    """
    env = os.environ.get(PROCESSES_ENV, "").strip()
    if env:
        if not env.isdigit() or int(env) > 256:
            raise ConfigError(f"{PROCESSES_ENV} must be a whole number from 0 to 256, not {env!r}")
        return int(env)
    if count < PROCESS_MIN_IMAGES:
        return 0
    return min(os.cpu_count() or 1, 16)


def decode_file(
    path: Path, channels: int, size: tuple[int, int] | None, resize: str, alpha_background: str
) -> tuple[np.ndarray | None, str | None]:
    """One file as ``(uint8 (C, H, W), None)``, or ``(None, reason)`` when it cannot be
    decoded (any decoder failure is that file's reason, never a crashed run).
    ``size`` None keeps the native size."""
    try:
        if path.is_file() and path.stat().st_size == 0:
            return None, "empty file (0 bytes)"
        arr = prepare_image(
            path, channels=channels, size=size, resize=resize, alpha_background=alpha_background
        )
        return arr, None
    except ImageError as exc:
        return None, str(exc).split(": ", 1)[-1]
    except Exception as exc:  # any decoder failure is one bad file, never a crashed run
        return None, _reason(exc)


def _decode_many(
    paths: list[str], channels: int, size: tuple[int, int], resize: str, alpha_background: str
) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """A worker process's task: the decoded images stacked, and (index, reason) failures."""
    ok, failed = [], []
    for i, p in enumerate(paths):
        arr, err = decode_file(Path(p), channels, size, resize, alpha_background)
        if arr is None:
            failed.append((i, err or ""))
        else:
            ok.append(arr)
    data = np.stack(ok) if ok else np.empty((0, channels, *size), np.uint8)
    return data, failed


def _quiet_worker() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle


def iter_batches(
    refs: Iterable[ImageRef],
    *,
    channels: int,
    size: tuple[int, int],
    resize: str = "stretch",
    alpha_background: str = "black",
    batch_size: int = 64,
    processes: int | None = None,
) -> Iterator[Batch]:
    """Decode images in parallel, ``batch_size`` at a time, preserving input order.

    Threads decode by default; with ``processes`` > 0 (``None``: chosen by
    :func:`decode_processes` when ``refs`` is a sequence) worker processes do,
    which scales past the interpreter lock on many cores for many small images.
    Memory holds the current batch and the ones decoding ahead: one with
    threads, two per worker process. Results are the same either way.
    """
    if processes is None:
        processes = decode_processes(len(refs)) if isinstance(refs, Sequence) else 0
    args = (channels, size, resize, alpha_background)
    if processes > 0:
        yield from _iter_batches_processes(refs, args, batch_size, processes)
        return

    def decode(ref: ImageRef) -> tuple[ImageRef, np.ndarray | None, str | None]:
        return (ref, *decode_file(ref.path, *args))

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


def _iter_batches_processes(
    refs: Iterable[ImageRef], args: tuple[Any, ...], batch_size: int, processes: int
) -> Iterator[Batch]:
    import multiprocessing
    from collections import deque
    from concurrent.futures import Future, ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    it = iter(refs)
    ahead: deque[tuple[list[ImageRef], Future[Any]]] = deque()
    try:
        ctx = multiprocessing.get_context("forkserver")
        pool = ProcessPoolExecutor(processes, mp_context=ctx, initializer=_quiet_worker)
    except (OSError, ImportError, ValueError):  # no process support here (no /dev/shm, ...)
        yield from iter_batches(it, channels=args[0], size=args[1], resize=args[2],
                                alpha_background=args[3], batch_size=batch_size,
                                processes=0)  # fmt: skip
        return
    try:
        while True:
            while len(ahead) < 2 * processes and (chunk := list(islice(it, batch_size))):
                paths = [str(r.path) for r in chunk]
                try:
                    fut = pool.submit(_decode_many, paths, *args)
                except (BrokenProcessPool, RuntimeError, OSError):  # the pool could not start
                    fut = Future()
                    fut.set_exception(BrokenProcessPool("the worker processes did not start"))
                ahead.append((chunk, fut))
            if not ahead:
                break
            chunk, fut = ahead.popleft()
            try:
                data, failed = fut.result()
            except (BrokenProcessPool, OSError):  # a worker died or never started: go on here
                pool.shutdown(wait=False, cancel_futures=True)
                for rest in [chunk, *(c for c, _ in ahead)]:
                    yield _batch(rest, *_decode_many([str(r.path) for r in rest], *args))
                ahead.clear()
                yield from iter_batches(it, channels=args[0], size=args[1], resize=args[2],
                                        alpha_background=args[3], batch_size=batch_size,
                                        processes=0)  # fmt: skip
                return
            yield _batch(chunk, data, failed)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _batch(chunk: list[ImageRef], data: np.ndarray, failed: list[tuple[int, str]]) -> Batch:
    bad = dict(failed)
    return Batch([r for i, r in enumerate(chunk) if i not in bad], data,
                 [(chunk[i], reason) for i, reason in failed])  # fmt: skip
