"""The streaming scoring pipeline behind ``aetool score``.

:func:`score_images` finds the images (the file list is cheap and needed in
full to infer labels from the folder layout), fits the threshold, then decodes
and scores them batch by batch and yields one :class:`~aetool.anomaly.scores.ScoreRow`
per input, in input order. Only scores and labels (two numbers per image) are
kept for the report; error maps, images and rows are dropped once written, so
memory stays flat however many images are scored.

Per image:

* Preprocessing is the model's: channels, size, resize mode and alpha
  background from ``metadata["preprocessing"]``; an image of another size or
  channel count is converted the same way training converted it. Models
  trained on patches (native size, fully convolutional) score each image at
  its own size.
* The input is the clean image, also for denoising-trained models.
* An unreadable file yields a row with an empty score and the reason in
  ``error`` (``strict=True`` raises instead).

Labels: ``labels=None`` infers them from the folder layout of the whole set
(:func:`~aetool.anomaly.scores.infer_labels`: ``good``/``normal``/``ok`` folders are
0, their siblings 1); a mapping (for example from
:func:`~aetool.anomaly.scores.read_labels_csv`) replaces that inference.

Masks: MVTec-AD ``ground_truth/<defect>/<name>_mask.png`` files next to a
``test`` folder are found automatically (``masks_dir`` names another folder
mirroring the images); files under ``ground_truth/`` are never scored. Pixel
ROC AUC compares the error maps (at the model's resolution) with the masks
transformed like the images; normal images count as all-normal masks.
"""

from __future__ import annotations

import math
import os
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from aetool.anomaly.scores import (
    PIXEL_AUC_MAX_PIXELS,
    SCORE_KINDS,
    ScoreRow,
    Threshold,
    ThresholdSpec,
    best_f1_threshold,
    build_score_row,
    compute_metrics,
    error_maps,
    find_mask,
    fit_threshold,
    infer_labels,
    parse_threshold,
    pixel_roc_auc,
)
from aetool.data.cache import iter_batches
from aetool.data.decode import decode_image, prepare_image
from aetool.data.inputs import MASK_DIR_NAME, ImageRef, collect_images
from aetool.data.shards import in_shard, parse_shard, path_key
from aetool.devices import place, resolve_device
from aetool.errors import ConfigError, ImageError, NoImagesError, OutputError
from aetool.files import _check_heatmap_dir, atomic_path
from aetool.models.file import LoadedModel, load_model

__all__ = [
    "MASK_DIR_NAME",
    "ScoreRun",
    "ScoreSummary",
    "collect_images",
    "score_images",
]

# ---------------------------------------------------------------------------
# Summary


class ScoreSummary:
    """Collects rows (two numbers each) and computes the scoring report.

    Usable on its own: ``add`` every :class:`ScoreRow`, optionally
    ``add_pixels`` for pixel-level AUC, then ``report()``.

    Args:
        threshold: the threshold that decides ``is_anomaly``.
        score_kind: the score used (one of :data:`~aetool.anomaly.scores.SCORE_KINDS`).
        spec: the threshold rule as the user wrote it (``auto``, ``p99``, ...).
    """

    def __init__(self, threshold: Threshold, score_kind: str = "mse", spec: str = "auto") -> None:
        self.threshold = threshold
        self.score_kind = score_kind
        self.spec = spec
        self.scores = array("d")
        self.labels = array("b")  # -1 = unknown
        self.flagged = 0
        self.unreadable: list[dict[str, str]] = []
        self.info: dict[str, Any] = {}
        self._pix_values: list[np.ndarray] = []
        self._pix_truth: list[np.ndarray] = []
        self.pixel_images = 0
        self.pixel_masks = 0

    def add(self, row: ScoreRow) -> None:
        """Count one output row."""
        if row.score is None or row.error is not None:
            self.unreadable.append({"path": row.path, "error": row.error or "no score"})
            return
        self.scores.append(row.score)
        self.labels.append(-1 if row.label is None else int(row.label))
        self.flagged += bool(row.is_anomaly)

    def add_pixels(self, values: np.ndarray, truth: np.ndarray, has_mask: bool) -> None:
        """Add (already subsampled) error-map values and their mask truth for pixel AUC."""
        self._pix_values.append(np.asarray(values, dtype=np.float32).ravel())
        self._pix_truth.append(np.asarray(truth, dtype=bool).ravel())
        self.pixel_images += 1
        self.pixel_masks += bool(has_mask)

    @property
    def n_scored(self) -> int:
        return len(self.scores)

    def report(self) -> dict[str, Any]:
        """The report as plain JSON-serialisable data.

        Keys: ``score_kind``; ``counts`` (``rows``, ``scored``, ``unreadable``,
        ``anomalies``, ``normal``, plus any extra counts the pipeline set);
        ``threshold`` (``value``, ``rule``, ``spec``, ``decides_is_anomaly``);
        ``labels`` (``known``, ``normal``, ``anomalous``, ``source``);
        ``metrics`` (:func:`~aetool.anomaly.scores.compute_metrics` at the threshold,
        or ``None`` without labels); ``best_f1`` (the F1-optimal threshold, its
        rule and metrics, reported only, or ``None``); ``pixel`` (``roc_auc``,
        ``images``, ``images_with_masks``, ``pixels``, or ``None``);
        ``unreadable`` (path and error of every unreadable file); and
        whatever the pipeline put in ``info`` (model, shard, ...).
        """
        scores = np.frombuffer(self.scores, dtype=np.float64) if self.scores else np.empty(0)
        lab = np.frombuffer(self.labels, dtype=np.int8) if self.labels else np.empty(0, np.int8)
        known = lab >= 0
        labels: list[int | None] = [None if v < 0 else int(v) for v in lab]
        n_pos = int((lab == 1).sum())
        n_neg = int((lab == 0).sum())
        metrics = compute_metrics(scores, labels, self.threshold) if known.any() else None
        best = None
        if n_pos and n_neg:
            t = best_f1_threshold(scores, labels)
            best = {
                "value": t.value,
                "rule": t.rule,
                "decides_is_anomaly": False,
                "metrics": compute_metrics(scores, labels, t),
            }
        pixel = None
        if self.pixel_masks:
            auc = pixel_roc_auc(
                [v[None] for v in self._pix_values], [t[None] for t in self._pix_truth]
            )
            pixel = {
                "roc_auc": auc,
                "map": self.score_kind,
                "images": self.pixel_images,
                "images_with_masks": self.pixel_masks,
                "pixels": int(sum(v.size for v in self._pix_values)),
            }
        counts = {
            "rows": self.n_scored + len(self.unreadable),
            "scored": self.n_scored,
            "unreadable": len(self.unreadable),
            "anomalies": self.flagged,
            "normal": self.n_scored - self.flagged,
        }
        counts.update(self.info.get("counts", {}))
        out: dict[str, Any] = {
            "score_kind": self.score_kind,
            "counts": counts,
            "threshold": {
                "value": self.threshold.value,
                "rule": self.threshold.rule,
                "spec": self.spec,
                "decides_is_anomaly": True,
            },
            "labels": {
                "known": int(known.sum()),
                "normal": n_neg,
                "anomalous": n_pos,
                "source": self.info.get("label_source"),
            },
            "metrics": metrics,
            "best_f1": best,
            "pixel": pixel,
            "unreadable": list(self.unreadable),
        }
        out.update({k: v for k, v in self.info.items() if k not in ("label_source", "counts")})
        return out


# ---------------------------------------------------------------------------
# Finding images


def _label_key(ref: ImageRef) -> str:
    root = Path(_root_of(ref)).name
    return f"{root}/{ref.relpath}" if root else ref.relpath


def _match_labels(refs: Sequence[ImageRef], labels: Mapping[str, int]) -> list[int | None]:
    """Look each image up by relative path, path as given, then resolved path."""
    by_key = {path_key(k): int(v) for k, v in labels.items()}
    by_real: dict[str, int] | None = None
    out: list[int | None] = []
    for ref in refs:
        label = by_key.get(path_key(ref.relpath), by_key.get(path_key(str(ref.path))))
        if label is None:
            if by_real is None:
                by_real = {os.path.realpath(k): v for k, v in by_key.items()}
            label = by_real.get(os.path.realpath(ref.path))
        out.append(label)
    return out


# ---------------------------------------------------------------------------
# Heatmaps


def _root_of(ref: ImageRef) -> str:
    parts = PurePosixPath(ref.relpath).parts
    p = Path(os.path.abspath(ref.path))
    for _ in parts:
        p = p.parent
    return str(p)


def _heatmap_names(refs: Sequence[ImageRef]) -> Callable[[ImageRef], str]:
    """Mirror relative paths; with several scored roots, prefix each root's name."""
    roots: dict[str, str] = {}
    for ref in refs:
        r = _root_of(ref)
        if r not in roots:
            name = Path(r).name or "root"
            taken = set(roots.values())
            cand, k = name, 2
            while cand in taken:
                cand, k = f"{name}-{k}", k + 1
            roots[r] = cand
    prefix = len(roots) > 1

    def name(ref: ImageRef) -> str:
        rel = PurePosixPath(
            *[p for p in PurePosixPath(ref.relpath).parts if p not in ("..", ".", "/")]
        )
        # Keep the extension in the name of non-PNG inputs: a.jpg and a.png stay apart.
        out = rel.as_posix() if rel.suffix.lower() == ".png" else rel.as_posix() + ".png"
        return f"{roots[_root_of(ref)]}/{out}" if prefix else out

    return name


def _overlay(image: np.ndarray, emap: np.ndarray, vmax: float | None) -> Image.Image:
    try:
        from aetool.report.plots import heatmap_overlay
    except ImportError:  # pragma: no cover - plots ships with aetool
        g = np.clip(image.mean(axis=0), 0, 1)
        top = vmax or float(emap.max(initial=0)) or 1.0
        e = np.clip(emap / top, 0, 1)
        rgb = np.stack([np.maximum(g, e), g * (1 - e), g * (1 - e)], -1)
        return Image.fromarray((rgb * 255).round().astype(np.uint8), "RGB")
    return heatmap_overlay(image, emap, vmax)


def _crop_box(orig_hw: tuple[int, int], size: tuple[int, int]) -> tuple[float, ...]:
    """Where images.py's 'crop' mode takes its output from, in original pixels."""
    h0, w0 = orig_hw
    h, w = size
    scale = max(w / w0, h / h0)
    nw, nh = max(w, round(w0 * scale)), max(h, round(h0 * scale))
    left, top = (nw - w) // 2, (nh - h) // 2
    sx, sy = w0 / nw, h0 / nh
    return left * sx, top * sy, (left + w) * sx, (top + h) * sy


def _map_to_original(
    emap: np.ndarray, orig_hw: tuple[int, int], resize: str, size: tuple[int, int] | None
) -> np.ndarray:
    """Bring a model-resolution error map back onto the original pixel grid."""
    h0, w0 = orig_hw
    if emap.shape == (h0, w0):
        return emap
    t = torch.from_numpy(np.ascontiguousarray(emap, dtype=np.float32))[None, None]
    if resize != "crop" or size is None:
        return F.interpolate(t, size=(h0, w0), mode="bilinear", align_corners=False)[0, 0].numpy()
    x0, y0, x1, y1 = _crop_box(orig_hw, size)
    left, top = int(round(x0)), int(round(y0))
    bw, bh = max(1, min(w0, int(round(x1))) - left), max(1, min(h0, int(round(y1))) - top)
    out = np.zeros((h0, w0), dtype=np.float32)
    out[top : top + bh, left : left + bw] = F.interpolate(
        t, size=(bh, bw), mode="bilinear", align_corners=False
    )[0, 0].numpy()
    return out


def _load_mask(path: Path, map_hw: tuple[int, int], resize: str, fixed: bool) -> np.ndarray:
    """A mask as bool (H, W) on the error map's grid, transformed like its image."""
    with Image.open(path) as img:
        m = img.convert("L")
    h, w = map_hw
    if m.size != (w, h):
        if resize == "crop" and fixed:
            x0, y0, x1, y1 = _crop_box((m.height, m.width), (h, w))
            m = m.resize((w, h), Image.Resampling.NEAREST, box=(x0, y0, x1, y1))
        else:
            m = m.resize((w, h), Image.Resampling.NEAREST)
    return np.asarray(m) > 0


# ---------------------------------------------------------------------------
# The pipeline


@dataclass
class _Decoded:
    ref: ImageRef
    data: np.ndarray | None
    error: str | None


def _decode_native(
    refs: Sequence[ImageRef], channels: int, alpha_background: str, batch_size: int
) -> Iterator[list[_Decoded]]:
    def work(ref: ImageRef) -> _Decoded:
        try:
            if ref.path.is_file() and ref.path.stat().st_size == 0:
                return _Decoded(ref, None, "empty file (0 bytes)")
            arr = prepare_image(
                ref.path, channels=channels, size=None, alpha_background=alpha_background
            )
            return _Decoded(ref, arr, None)
        except ImageError as exc:
            return _Decoded(ref, None, str(exc).split(": ", 1)[-1])
        except OSError as exc:
            return _Decoded(ref, None, str(exc) or type(exc).__name__)

    it = iter(refs)
    with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as pool:
        while chunk := list(islice(it, batch_size)):
            yield list(pool.map(work, chunk))


class ScoreRun:
    """An iterator of :class:`ScoreRow`, one per input, with the run's facts attached.

    Attributes:
        refs: the images to score (after sharding), in output order.
        missing: named paths that do not exist (they become error rows first).
        labels: one label per ref (``None`` = unknown).
        threshold: the threshold deciding ``is_anomaly``.
        summary: the :class:`ScoreSummary`, filled as rows are produced.
        columns_with_label: whether rows carry a ``label`` column.
    """

    def __init__(
        self,
        refs: list[ImageRef],
        missing: list[str],
        labels: list[int | None],
        model: LoadedModel,
        *,
        score_kind: str,
        threshold: Threshold,
        summary: ScoreSummary,
        batch_size: int,
        device: torch.device,
        heatmap_dir: Path | None,
        masks: bool,
        masks_dir: Path | None,
        strict: bool,
        progress: Callable[[int, int], None] | None,
        warn: Callable[[str, str], None] | None,
    ) -> None:
        self.refs = refs
        self.missing = missing
        self.labels = labels
        self.model = model
        self.score_kind = score_kind
        self.threshold = threshold
        self.summary = summary
        self.batch_size = batch_size
        self.device = device
        self.heatmap_dir = heatmap_dir
        self.masks = masks
        self.masks_dir = masks_dir
        self.strict = strict
        self.progress = progress
        self.warn = warn
        self.columns_with_label = any(v is not None for v in labels)
        self.total = len(refs) + len(missing)
        val = np.asarray(model.validation_scores(score_kind), dtype=np.float64)
        self._val = np.sort(val[np.isfinite(val)])
        self._it = self._generate()

    def __iter__(self) -> Iterator[ScoreRow]:
        return self

    def __next__(self) -> ScoreRow:
        return next(self._it)

    def close(self) -> None:
        """Stop early and release the decoding threads."""
        self._it.close()

    # -- internals ----------------------------------------------------------

    def _row(
        self, path: str, score: float | None, label: int | None, error: str | None
    ) -> ScoreRow:
        row = build_score_row(
            path, score, self.threshold, None, score_kind=self.score_kind, label=label, error=error
        )
        if row.score is not None and math.isfinite(row.score) and self._val.size:
            # percentile_rank's definition, on the validation scores sorted once.
            rank = np.searchsorted(self._val, row.score, side="right")
            row.percentile = float(rank * (100.0 / self._val.size))
        return row

    def _fail(self, path: str, label: int | None, error: str) -> ScoreRow:
        if self.strict:
            raise ImageError(f"{path}: {error}")
        if self.warn:
            self.warn(path, error)
        return self._row(path, None, label, error)

    def _generate(self) -> Iterator[ScoreRow]:
        done = 0
        for path in self.missing:
            row = self._fail(path, None, "no such file or folder")
            self.summary.add(row)
            done += 1
            yield row
        pre = self.model.preprocessing
        channels = int(pre.get("channels") or 1)
        resize = pre.get("resize") or "stretch"
        alpha = pre.get("alpha_background") or "black"
        size = (int(pre["height"]), int(pre["width"])) if pre.get("height") else None
        label_of = dict(zip(self.refs, self.labels, strict=True))
        names = _heatmap_names(self.refs) if self.heatmap_dir is not None else None
        vmax = self._heatmap_vmax()
        pix_budget = max(64, PIXEL_AUC_MAX_PIXELS // max(1, len(self.refs)))
        rng = np.random.default_rng(0)
        chunks: Iterator[list[_Decoded]]
        if size is not None:
            chunks = (
                self._merge(chunk, batch)
                for chunk, batch in zip(
                    _chunked(self.refs, self.batch_size),
                    iter_batches(
                        self.refs,
                        channels=channels,
                        size=size,
                        resize=resize,
                        alpha_background=alpha,
                        batch_size=self.batch_size,
                    ),
                    strict=True,
                )
            )
        else:
            chunks = _decode_native(self.refs, channels, alpha, self.batch_size)
        model = self.model.model
        place(model, self.device).eval()
        for chunk in chunks:
            ok = [d for d in chunk if d.data is not None]
            scores: dict[ImageRef, tuple[float, np.ndarray]] = {}
            if ok:
                for d, s, m in self._score(model, ok, size is not None):
                    scores[d.ref] = (s, m)
            for d in chunk:
                label = label_of.get(d.ref)
                if d.data is None or d.ref not in scores:
                    row = self._fail(str(d.ref.path), label, d.error or "unreadable")
                else:
                    s, emap = scores[d.ref]
                    row = self._row(str(d.ref.path), s, label, None)
                    if names is not None:
                        self._write_heatmap(d.ref, emap, names(d.ref), channels, resize, size, alpha, vmax)  # fmt: skip
                    if self.masks:
                        self._add_pixels(d.ref, emap, label, resize, size is not None, pix_budget, rng)  # fmt: skip
                self.summary.add(row)
                yield row
            done += len(chunk)
            if self.progress:
                self.progress(done, self.total)

    @staticmethod
    def _merge(chunk: list[ImageRef], batch: Any) -> list[_Decoded]:
        index = {r: i for i, r in enumerate(batch.refs)}
        failed = dict(batch.failed)
        out = []
        for ref in chunk:
            if ref in index:
                out.append(_Decoded(ref, batch.data[index[ref]], None))
            else:
                out.append(_Decoded(ref, None, failed.get(ref) or "unreadable"))
        return out

    @torch.no_grad()
    def _score(
        self, model: torch.nn.Module, ok: list[_Decoded], fixed: bool
    ) -> Iterator[tuple[_Decoded, float, np.ndarray]]:
        groups = [ok] if fixed else [[d] for d in ok]
        for group in groups:
            x = torch.from_numpy(np.stack([d.data for d in group]))  # type: ignore[misc]
            x = x.to(self.device).float().div_(255.0)
            recon = model(x).float()
            maps = error_maps(x, recon, self.score_kind)
            if self.score_kind == "max-local":
                s = maps.flatten(1).amax(dim=1)
            else:
                s = maps.flatten(1).mean(dim=1)
            maps_np = maps.cpu().numpy()
            for d, score, emap in zip(group, s.cpu().tolist(), maps_np, strict=True):
                yield d, float(score), emap

    def _heatmap_vmax(self) -> float | None:
        # One colour scale for every image: full red at the largest smoothed local
        # error of any normal validation image (1.0 for 1 - SSIM maps).
        if self.score_kind == "ssim":
            return 1.0
        local = [v for v in self.model.validation_scores("max-local") if math.isfinite(v)]
        return max(local) if local and max(local) > 0 else None

    def _write_heatmap(
        self,
        ref: ImageRef,
        emap: np.ndarray,
        name: str,
        channels: int,
        resize: str,
        size: tuple[int, int] | None,
        alpha: str,
        vmax: float | None,
    ) -> None:
        assert self.heatmap_dir is not None
        target = self.heatmap_dir / name
        if target.exists() and os.path.samefile(target, ref.path):
            raise OutputError(f"refusing to overwrite the input {ref.path} with its heatmap")
        image = decode_image(ref.path, channels=channels, alpha_background=alpha)
        full = _map_to_original(emap, image.shape[1:], resize, size)
        with atomic_path(target) as tmp:
            _overlay(image, full, vmax).save(tmp, format="PNG")

    def _add_pixels(
        self,
        ref: ImageRef,
        emap: np.ndarray,
        label: int | None,
        resize: str,
        fixed: bool,
        budget: int,
        rng: np.random.Generator,
    ) -> None:
        if self.masks_dir is not None:
            mask_path = find_mask(ref.relpath, None, self.masks_dir)
        else:
            mask_path = find_mask(ref.path, None)
        if mask_path is None:
            # No mask: all-normal for a normal image (and, with an explicit mask
            # folder, for an unlabelled one); an anomaly without a mask is left out.
            if label == 0 or (label is None and self.masks_dir is not None):
                truth = np.zeros(emap.shape, dtype=bool)
            else:
                return
        else:
            try:
                truth = _load_mask(mask_path, emap.shape, resize, fixed)
            except (OSError, ValueError) as exc:
                if self.warn:
                    self.warn(str(mask_path), f"cannot read mask ({exc})")
                return
        v, t = emap.ravel(), truth.ravel()
        if v.size > budget:
            pick = rng.choice(v.size, budget, replace=False)
            v, t = v[pick], t[pick]
        self.summary.add_pixels(v, t, mask_path is not None)


def _chunked(items: Sequence[ImageRef], n: int) -> Iterator[list[ImageRef]]:
    for i in range(0, len(items), n):
        yield list(items[i : i + n])


def score_images(
    inputs: Iterable[str | os.PathLike[str] | ImageRef],
    model: LoadedModel | str | os.PathLike[str],
    *,
    score_kind: str = "mse",
    threshold: str | ThresholdSpec | Threshold | float = "auto",
    labels: Mapping[str, int] | None = None,
    infer: bool = True,
    batch_size: int = 64,
    device: str | torch.device = "auto",
    shard: str | tuple[int, int] | None = None,
    heatmap_dir: str | os.PathLike[str] | None = None,
    masks: bool = True,
    masks_dir: str | os.PathLike[str] | None = None,
    strict: bool = False,
    progress: Callable[[int, int], None] | None = None,
    warn: Callable[[str, str], None] | None = None,
) -> ScoreRun:
    """Score images with a trained model, streaming one row per input.

    Everything that can fail on the inputs as a whole (no images, bad
    threshold, unsafe heatmap folder, bad shard) fails here, before the first
    row; decoding and scoring happen as the returned iterator is consumed.

    Example::

        run = score_images(["test/"], load_model("model.safetensors"))
        for row in run:
            print(row.path, row.score, row.is_anomaly)
        report = run.summary.report()

    Args:
        inputs: files, folders and/or :class:`~aetool.data.inputs.ImageRef`.
        model: a :class:`~aetool.models.file.LoadedModel` or a model file path.
        score_kind: ``mse`` (mean squared error, [0, 1] pixel units),
            ``ssim`` (1 - mean SSIM) or ``max-local`` (max of the 5x5-smoothed
            squared-error map).
        threshold: ``auto``, a number, ``pQ``, ``Ksigma`` (see
            :func:`~aetool.anomaly.scores.fit_threshold`) or a ready
            :class:`~aetool.anomaly.scores.Threshold`.
        labels: path -> 0/1, matched against relative path, path as given or
            resolved path; replaces the folder-layout labels.
        infer: infer labels from the folder layout when ``labels`` is None.
        batch_size: images decoded and scored at a time.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        shard: ``"I/N"`` or ``(I, N)``: score only that shard of the inputs
            (by relative path; labels are inferred from the whole set first).
        heatmap_dir: write an error-map overlay PNG per image here, at the
            image's size, mirroring relative paths (``.png`` appended to
            non-PNG names; with several scored roots, under each root's name).
        masks: look for ground-truth masks and report pixel ROC AUC.
        masks_dir: a folder of masks mirroring the image paths, instead of
            the MVTec ``ground_truth`` layout.
        strict: raise :class:`~aetool.errors.ImageError` on the first
            unreadable or missing file instead of emitting an error row.
        progress: called as ``progress(done, total)`` after each batch.
        warn: called as ``warn(path, reason)`` for each unreadable file.

    Raises:
        NoImagesError: the inputs hold no image file and name no file.
        ConfigError: unknown score kind, invalid threshold or shard, or a
            data-driven threshold with no validation scores in the model.
        OutputError: ``heatmap_dir`` lies inside a scored folder.
        ImageError: with ``strict``, a named path does not exist.
    """
    if score_kind not in SCORE_KINDS:
        raise ConfigError(f"unknown score {score_kind!r}; choose one of: {', '.join(SCORE_KINDS)}")
    if batch_size < 1:
        raise ConfigError("batch size must be at least 1")
    if not isinstance(model, LoadedModel):
        model = load_model(model)
    shard_t = parse_shard(shard) if isinstance(shard, str) else shard
    inputs = list(inputs)
    if heatmap_dir is not None:
        _check_heatmap_dir(Path(heatmap_dir), inputs)
    refs, missing, excluded = collect_images(inputs)
    if not refs and not missing:
        where = ", ".join(str(i) for i in inputs[:3]) or "the input"
        raise NoImagesError(f"no image files found in {where}")
    if strict and missing:
        raise ImageError(f"{missing[0]} does not exist")

    if labels is not None:
        all_labels = _match_labels(refs, labels)
        source = "labels file"
    elif infer:
        # Include each scored folder's own name: `score test/good` and
        # `score normal/ abnormal/` are labelled like their parent would be.
        all_labels = infer_labels([_label_key(r) for r in refs])
        source = "folder layout"
    else:
        all_labels = [None] * len(refs)
        source = None
    if not any(v is not None for v in all_labels):
        source = None

    if isinstance(threshold, Threshold):
        thr = threshold
        spec_text = threshold.rule
    else:
        spec = (
            threshold if isinstance(threshold, ThresholdSpec) else parse_threshold(str(threshold))
        )
        thr = fit_threshold(spec, model.validation_scores(score_kind))
        spec_text = spec.text

    n_found = len(refs)
    if shard_t is not None:
        keep = [in_shard(r.relpath, *shard_t) for r in refs]
        refs = [r for r, k in zip(refs, keep, strict=True) if k]
        all_labels = [v for v, k in zip(all_labels, keep, strict=True) if k]
        missing = [m for m in missing if in_shard(path_key(m), *shard_t)]

    summary = ScoreSummary(thr, score_kind, spec_text)
    noise = model.metadata.get("training", {}).get("noise")
    summary.info = {
        "model": str(model.path),
        "shard": f"{shard_t[0]}/{shard_t[1]}" if shard_t else None,
        "label_source": source,
        "counts": {
            "found": n_found,
            "in_shard": len(refs),
            "missing": len(missing),
            "excluded_masks": excluded,
        },
        "denoising_model": bool(noise),
    }
    return ScoreRun(
        refs,
        missing,
        all_labels,
        model,
        score_kind=score_kind,
        threshold=thr,
        summary=summary,
        batch_size=batch_size,
        device=resolve_device(device),
        heatmap_dir=Path(heatmap_dir) if heatmap_dir is not None else None,
        masks=masks,
        masks_dir=Path(masks_dir) if masks_dir is not None else None,
        strict=strict,
        progress=progress,
        warn=warn,
    )
