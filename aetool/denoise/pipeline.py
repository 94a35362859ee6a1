"""Denoise folders of images with an autoencoder, and write them back as they came.

Pipeline (:func:`denoise_images`): images are decoded ahead in worker threads
at full precision (:mod:`aetool.denoise.imageio`), denoised on the model's
device in one compute thread (:func:`~aetool.denoise.array.denoise_array`),
then their noise is estimated, their scores against a reference computed and
their files encoded and written in worker threads; one :class:`DenoiseResult`
per image is yielded in input order as soon as its file is written (while the
next images are being denoised), and at most a few images are in flight (the
worker count twice, and a batch more for small images), so memory stays flat
whatever the image count. For a one-channel model (the bundled denoiser),
consecutive images of one height and width are denoised together, their planes
sharing forward passes (up to ``batch_size`` images and ``batch_size * tile**2``
pixels a batch), with the same result as one at a time: every plane is an input
of its own, large images are tiled as before. Closing the iterator (or an interrupt)
stops the compute thread before its next forward pass
(:mod:`aetool.denoise.cancel`).

Choices per image. ``refine="auto"`` turns the refinement on for models whose
file records Gaussian training noise, such as the bundled denoiser, except on
JPEGs with subsampled colour, whose noise is correlated; ``color="auto"``
denoises such JPEGs channel by channel and other RGB images in the opponent
colour space (:mod:`aetool.denoise.color`).
"""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Generator, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from aetool.data.inputs import ImageRef, find_images
from aetool.denoise.array import ENSEMBLE_SIZES, _denoise_arrays
from aetool.denoise.cancel import _CANCEL, _Cancelled
from aetool.denoise.color import COLOR_MODES
from aetool.denoise.imageio import SourceImage, _reason, _stored_range, read_image, write_image
from aetool.denoise.noise_level import estimate_sigma
from aetool.denoise.outputs import _input_roots, output_path
from aetool.denoise.tiling import DEFAULT_OVERLAP, DEFAULT_TILE, _model_channels
from aetool.devices import place, resolve_device
from aetool.errors import ConfigError, ImageError, OutputError
from aetool.files import check_output_dir, is_inside
from aetool.metrics import psnr, ssim
from aetool.models.bundled import bundled_model_path
from aetool.models.file import LoadedModel, load_model
from aetool.models.registry import AutoEncoder

__all__ = [
    "DenoiseOptions",
    "DenoiseResult",
    "DenoiseSummary",
    "denoise_images",
    "gaussian_trained",
]


@dataclass
class DenoiseOptions:
    """How :func:`denoise_images` runs; the fields mirror ``aetool denoise``'s options.

    Attributes:
        overwrite: replace existing output files (else they are left alone and
            reported with status ``exists``).
        reference: folder of clean originals at the same relative paths; adds
            PSNR and SSIM before and after denoising.
        tile: tile side for fully convolutional models.
        overlap: tile overlap in pixels.
        batch_size: tiles per forward pass, or small images of one size denoised together
            (up to this many, and ``batch_size * tile**2`` pixels).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        strict: raise on the first image that cannot be read or written.
        workers: decoding/encoding threads (default: CPU count, at most 16).
        ensemble: average over 1, 2, 4 or 8 rotations/flips of each image
            (see :func:`~aetool.denoise.array.denoise_array`).
        color: ``auto``, ``opponent`` or ``channels``: how a grayscale model treats RGB
            images (see :func:`~aetool.denoise.array.denoise_array`).
        refine: collaborative Wiener refinement of the model's output (see
            :func:`~aetool.denoise.array.denoise_array`): True, False, or ``auto``:
            on when the model file records Gaussian training noise (the bundled
            denoiser does), except for JPEGs with subsampled colour (correlated
            noise); ``on`` and ``off`` are accepted too.
    """

    overwrite: bool = False
    reference: str | os.PathLike[str] | None = None
    tile: int = DEFAULT_TILE
    overlap: int = DEFAULT_OVERLAP
    batch_size: int = 8
    device: str | torch.device = "auto"
    strict: bool = False
    workers: int | None = None
    ensemble: int = 1
    color: str = "auto"
    refine: bool | str = "auto"

    def checked_refine(self) -> bool | str:
        """Check the options that need no file, and return ``refine`` as True, False or ``auto``.

        Raises:
            ConfigError: an option is out of range.
        """
        if self.tile < 8:
            raise ConfigError(f"--tile must be at least 8 pixels, not {self.tile}")
        if not 0 <= self.overlap < self.tile:
            raise ConfigError(f"--overlap must be in [0, tile), not {self.overlap}")
        if self.ensemble not in ENSEMBLE_SIZES:
            raise ConfigError(f"--ensemble must be one of 1, 2, 4, 8, not {self.ensemble}")
        if self.color not in (*COLOR_MODES, "auto"):
            raise ConfigError(f"--color must be auto, {', '.join(COLOR_MODES)}, not {self.color!r}")
        refine = self.refine
        if isinstance(refine, str):
            refine = {"on": True, "off": False}.get(refine, refine)
        if not (refine == "auto" or isinstance(refine, (bool, np.bool_))):
            raise ConfigError(f"refine must be True, False or 'auto' ('on', 'off'), not {refine!r}")
        return refine


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
    options: DenoiseOptions | None = None,
    **overrides: Any,
) -> Generator[DenoiseResult, None, None]:
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
            grayscale denoiser (:data:`~aetool.models.bundled.DEFAULT_DENOISER`).
        options: how to run (:class:`DenoiseOptions`; default: its defaults).
        **overrides: :class:`DenoiseOptions` fields to set, for example
            ``overwrite=True, device="cpu"``.

    Raises:
        OutputError: unsafe output folder.
        ModelFileError: the model file (or the bundled one) is missing or invalid.
        ImageError: with ``strict``, the first unreadable image.
    """
    opts = dataclasses.replace(options or DenoiseOptions(), **overrides)
    items = list(inputs)
    if items and all(isinstance(i, ImageRef) for i in items):
        refs: list[ImageRef] = list(items)  # type: ignore[arg-type]
        roots: list[str | os.PathLike[str]] = list(_input_roots(refs))
    else:
        refs, _ = find_images(items)  # type: ignore[arg-type]
        roots = list(items)  # type: ignore[arg-type]
    check_output_dir(out_dir, roots)
    refine = opts.checked_refine()
    ref_dir = Path(opts.reference) if opts.reference is not None else None
    if ref_dir is not None and not ref_dir.is_dir():
        raise ImageError(f"reference folder {ref_dir} does not exist")
    dev = resolve_device(opts.device)
    net, noise = _as_model(model, dev)
    if refine == "auto" and not gaussian_trained(noise):
        refine = False
    workers = opts.workers or max(1, min(16, os.cpu_count() or 1))
    opts = dataclasses.replace(opts, refine=refine, workers=workers)
    return _Pipeline(refs, Path(out_dir), net, dev, opts, ref_dir).results()


#: What the compute thread hands to the consumer: a result, and the write still running.
_Item = tuple[DenoiseResult, Future[None] | None]
#: A planned image: refused or skipped (a result), or its output path and its decoding.
_Job = DenoiseResult | tuple[Path, Future[SourceImage]]
#: A decoded image: its ref, its output path and its pixels.
_Decoded = tuple[ImageRef, Path, SourceImage]


class _Pipeline:
    """One run of :func:`denoise_images`: plan, decode, denoise, write, hand out results.

    The model runs in one compute thread (:meth:`_compute`); :meth:`results`
    hands out each image's result as soon as its file is written, so rows stream
    while the next image is being denoised.
    """

    def __init__(
        self,
        refs: list[ImageRef],
        out: Path,
        net: AutoEncoder,
        dev: torch.device,
        opts: DenoiseOptions,
        ref_dir: Path | None,
    ) -> None:
        self.refs, self.out, self.net, self.dev = refs, out, net, dev
        self.opts, self.ref_dir = opts, ref_dir
        self.workers = opts.workers or 1
        self.ahead = 2 * self.workers
        self.input_keys = {os.path.realpath(r.path) for r in refs}
        self.claimed: set[str] = set()
        self.done: queue.Queue[_Item | BaseException | None] = queue.Queue()
        self.small = False  # the last images were small: decode a batch more ahead
        self.single_plane = _model_channels(net) == 1  # planes of several images go together
        # results not yet handed out: those decoded ahead, and a batch's
        self.slots = threading.Semaphore(self.ahead + opts.batch_size + 1)
        self.stop = threading.Event()

    # -- the consumer's side ---------------------------------------------------------

    def results(self) -> Generator[DenoiseResult, None, None]:
        with ThreadPoolExecutor(self.workers) as pool:
            worker = threading.Thread(
                target=self._compute, args=(pool,), name="aetool-denoise", daemon=True
            )
            worker.start()
            try:
                while (got := self.done.get()) is not None:
                    if isinstance(got, BaseException):
                        raise got
                    res, fut = got
                    if fut is not None:
                        self._written(res, fut)
                    self.slots.release()
                    yield res
            finally:
                self.stop.set()  # the compute thread stops at its next forward pass
                worker.join()

    def _written(self, res: DenoiseResult, fut: Future[None]) -> None:
        """Wait for ``res``'s file to be written; a failure turns it into an error row."""
        try:
            fut.result()
        except (OSError, ValueError, ImageError, OutputError) as exc:
            if self.opts.strict:
                raise ImageError(f"{res.ref.path}: cannot write {res.dst}: {exc}") from None
            res.status, res.error = "error", f"cannot write {res.dst}: {_reason(exc)}"
            res.psnr_in = res.psnr_out = res.ssim_in = res.ssim_out = None

    # -- the compute thread ------------------------------------------------------------

    def _compute(self, pool: ThreadPoolExecutor) -> None:
        _CANCEL.event = self.stop  # checked between forward passes (see tiling._denoise_one)
        try:
            if self.dev.type == "cuda":
                torch.cuda.set_device(self.dev)  # a new thread starts on device 0
            self._run(pool)
        except _Cancelled:
            pass
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consuming thread
            self.done.put(exc)
        finally:
            self.done.put(None)

    def _emit(self, item: _Item) -> bool:
        while not self.slots.acquire(timeout=0.1):
            if self.stop.is_set():
                return False
        self.done.put(item)
        return True

    def _run(self, pool: ThreadPoolExecutor) -> None:
        todo = iter(self.refs)
        decoding: deque[tuple[ImageRef, _Job]] = deque()

        def refill() -> None:
            while len(decoding) < self.ahead + (self.opts.batch_size if self.small else 0):
                ref = next(todo, None)
                if ref is None:
                    return
                p = self._plan(ref)
                job = p if isinstance(p, DenoiseResult) else (p, pool.submit(read_image, ref.path))
                decoding.append((ref, job))

        refill()
        while decoding and not self.stop.is_set():
            ref, job = decoding.popleft()
            refill()
            opened = self._open(ref, job)
            if not isinstance(opened, SourceImage) or not isinstance(job, tuple):
                if not self._emit(opened):  # type: ignore[arg-type]
                    return
                continue
            batch: list[_Decoded] = [(ref, job[0], opened)]
            while decoding and self._joins(batch, decoding[0][1]):
                ref, (dst, fut) = decoding.popleft()  # type: ignore[misc]
                refill()
                batch.append((ref, dst, fut.result()))
            for item in self._denoise(pool, batch):
                if not self._emit(item):
                    return

    def _open(self, ref: ImageRef, job: _Job) -> _Item | SourceImage:
        """The decoded image of ``job``, or the result that says why there is none."""
        if isinstance(job, DenoiseResult):
            if self.opts.strict and job.status == "error":
                raise OutputError(f"{ref.path}: {job.error}")
            return job, None
        dst, fut = job
        try:
            return fut.result()
        except ImageError as exc:
            if self.opts.strict:
                raise
            msg = str(exc).removeprefix(f"{ref.path}: ")
            return DenoiseResult(ref, dst, "error", error=msg), None

    def _joins(self, batch: list[_Decoded], job: _Job) -> bool:
        """Whether the image of ``job`` (waited for) shares the batch's forward passes: a
        one-channel model, the same height and width, and room in the pass's pixel budget
        (``batch_size * tile**2``) and in its count (``batch_size`` images)."""
        first = batch[0][2].pixels
        budget = max(1, self.opts.batch_size) * self.opts.tile**2
        pixels = sum(src.pixels.size for _, _, src in batch)
        self.small = 2 * first.size <= budget
        if not self.single_plane or isinstance(job, DenoiseResult):
            return False
        try:
            nxt = job[1].result()
        except ImageError:
            return False  # its error is reported in its turn
        same = nxt.pixels.shape[1:] == first.shape[1:]
        return same and pixels + nxt.pixels.size <= budget and len(batch) < self.opts.batch_size

    def _denoise(self, pool: ThreadPoolExecutor, batch: list[_Decoded]) -> list[_Item]:
        o = self.opts
        t0 = time.perf_counter()
        outs = _denoise_arrays(
            self.net, [src.pixels for _, _, src in batch], tile=o.tile, overlap=o.overlap,
            batch_size=o.batch_size, device=self.dev, ensemble=o.ensemble,
            colors=[_color_for(src, o.color) for _, _, src in batch],
            refines=[_refine_for(src, o.refine) for _, _, src in batch],
        )  # fmt: skip
        seconds = (time.perf_counter() - t0) / len(batch)
        items: list[_Item] = []
        for (ref, dst, src), (den, refined) in zip(batch, outs, strict=True):
            res = DenoiseResult(ref, dst, "written", seconds=seconds, refined=refined)
            items.append((res, pool.submit(self._finish, res, src, den)))
        return items

    def _finish(self, res: DenoiseResult, src: SourceImage, den: np.ndarray) -> None:
        """In a worker: the noise estimate, the scores against the reference, the file."""
        res.sigma_est = estimate_sigma(src.pixels)
        if src.converted_from:  # said in the row (and warned), never silent
            res.error = f"written as {src.mode}: a {src.converted_from} image cannot keep its mode"
        if self.ref_dir is not None:
            try:
                clean = _reference_for(self.ref_dir, res.ref.relpath, src)
            except (ImageError, OutputError) as exc:
                note = f"reference not used: {exc}"
                res.error = f"{res.error}; {note}" if res.error else note
            else:
                res.psnr_in, res.psnr_out = psnr(clean, src.pixels), psnr(clean, den)
                res.ssim_in, res.ssim_out = ssim(clean, src.pixels), ssim(clean, den)
        assert res.dst is not None
        self._write(res.dst, src, den)

    # -- where each output goes ----------------------------------------------------------

    def _plan(self, ref: ImageRef) -> DenoiseResult | Path:
        """The output path of ``ref``, or the result that says why it gets none."""
        out = self.out
        if is_inside(ref.path, out):  # a symlink in an input folder leads into OUT
            return DenoiseResult(ref, None, "error", error=f"is inside the output folder {out}")
        rel = ref.relpath
        if ref.root is None and ".." in PurePosixPath(rel).parts:
            rel = PurePosixPath(rel).name  # a named file outside the working folder, as absolute
        try:
            dst = output_path(out, rel)
        except OutputError as exc:
            return DenoiseResult(ref, None, "error", error=str(exc))
        key = os.path.realpath(dst)
        if key in self.input_keys:
            return DenoiseResult(ref, dst, "error", error=f"{dst} is an input image")
        if key in self.claimed:
            return DenoiseResult(ref, dst, "error", error=f"{dst} is the output of another input")
        self.claimed.add(key)
        if (dst.exists() or dst.is_symlink()) and not self.opts.overwrite:
            return DenoiseResult(ref, dst, "exists", error="output exists (use --overwrite)")
        if dst.is_dir():
            return DenoiseResult(ref, dst, "error", error=f"{dst} is a folder")
        return dst

    def _write(self, dst: Path, src: SourceImage, pixels: np.ndarray) -> None:
        if not is_inside(dst.parent, self.out):  # re-check: folders may have changed
            raise OutputError(f"output path {dst} goes through a symlink out of {self.out}")
        write_image(dst, src, pixels)
