"""The streaming scoring pipeline behind ``aetool score``.

:func:`score_images` finds the images (the file list is cheap and needed in
full to infer labels from the folder layout), fits the threshold, then decodes
and scores them batch by batch and yields one :class:`~aetool.anomaly.results.ScoreRow`
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
(:func:`~aetool.anomaly.labels.infer_labels`: ``good``/``normal``/``ok`` folders are
0, their siblings 1); a mapping (for example from
:func:`~aetool.anomaly.labels.read_labels_csv`) replaces that inference.

Masks: MVTec-AD ``ground_truth/<defect>/<name>_mask.png`` files next to a
``test`` folder are found automatically (``masks_dir`` names another folder
mirroring the images); files under ``ground_truth/`` are never scored. Pixel
ROC AUC compares the error maps (at the model's resolution) with the masks
transformed like the images; normal images count as all-normal masks.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aetool.anomaly.evaluation import (
    PIXEL_AUC_MAX_PIXELS,
    load_mask,
)
from aetool.anomaly.heatmaps import heatmap_names, write_heatmap
from aetool.anomaly.labels import find_mask, infer_labels, label_key, match_labels
from aetool.anomaly.mapscale import MapScale, map_scale
from aetool.anomaly.masks import pixel_threshold, write_mask
from aetool.anomaly.options import ScoreOptions
from aetool.anomaly.results import ScoreRow, build_score_row
from aetool.anomaly.scores import anomaly_maps, centred_score, reduce_maps, resolve_score_kind
from aetool.anomaly.summary import ScoreSummary
from aetool.anomaly.thresholds import Threshold, ThresholdSpec, fit_threshold, parse_threshold
from aetool.data.cache import decode_file, decode_processes, iter_batches
from aetool.data.inputs import ImageRef, collect_images
from aetool.data.shards import in_shard, parse_shard, path_key
from aetool.devices import place, resolve_device
from aetool.errors import ImageError, NoImagesError
from aetool.files import check_heatmap_dir, exists_error
from aetool.models.file import LoadedModel, load_model

__all__ = ["ScoreOptions", "ScoreRun", "ScoreSummary", "score_images"]


# ---------------------------------------------------------------------------
# Preparing a run: images, labels, threshold, shard


def _find_images(
    inputs: list[str | os.PathLike[str] | ImageRef], strict: bool
) -> tuple[list[ImageRef], list[str], int]:
    refs, missing, excluded = collect_images(inputs)
    if not refs and not missing:
        where = ", ".join(str(i) for i in inputs[:3]) or "the input"
        raise NoImagesError(f"no image files found in {where}")
    if strict and missing:
        raise ImageError(f"{missing[0]} does not exist")
    return refs, missing, excluded


def _resolve_labels(
    refs: Sequence[ImageRef], labels: Mapping[str, int] | None, infer: bool
) -> tuple[list[int | None], str | None]:
    """One label per ref and where they came from (``None`` when none is known)."""
    source: str | None
    if labels is not None:
        all_labels = match_labels(refs, labels)
        source = "labels file"
    elif infer:
        # Include each scored folder's own name: `score test/good` and
        # `score normal/ abnormal/` are labelled like their parent would be.
        all_labels = infer_labels([label_key(r) for r in refs])
        source = "folder layout"
    else:
        all_labels = [None] * len(refs)
        source = None
    if not any(v is not None for v in all_labels):
        source = None
    return all_labels, source


def _resolve_threshold(
    threshold: str | ThresholdSpec | Threshold | float, model: LoadedModel, score_kind: str
) -> tuple[Threshold, str]:
    """The threshold and the rule as the user wrote it."""
    if isinstance(threshold, Threshold):
        return threshold, threshold.rule
    spec = threshold if isinstance(threshold, ThresholdSpec) else parse_threshold(str(threshold))
    return fit_threshold(spec, model.validation_scores(score_kind)), spec.text


# ---------------------------------------------------------------------------
# Decoding


@dataclass(frozen=True)
class _Preprocessing:
    """The model's preprocessing; ``size`` is ``None`` for native-size models."""

    channels: int
    resize: str
    alpha: str
    size: tuple[int, int] | None

    @classmethod
    def of(cls, model: LoadedModel) -> _Preprocessing:
        pre = model.preprocessing
        return cls(
            channels=int(pre.get("channels") or 1),
            resize=pre.get("resize") or "stretch",
            alpha=pre.get("alpha_background") or "black",
            size=(int(pre["height"]), int(pre["width"])) if pre.get("height") else None,
        )


@dataclass
class _Decoded:
    ref: ImageRef
    data: np.ndarray | None
    error: str | None


def _decode_native(
    refs: Sequence[ImageRef], channels: int, alpha_background: str, batch_size: int
) -> Iterator[list[_Decoded]]:
    def work(ref: ImageRef) -> _Decoded:
        return _Decoded(ref, *decode_file(ref.path, channels, None, "stretch", alpha_background))

    it = iter(refs)
    with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as pool:
        while chunk := list(islice(it, batch_size)):
            yield list(pool.map(work, chunk))


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


def _chunked(items: Sequence[ImageRef], n: int) -> Iterator[list[ImageRef]]:
    for i in range(0, len(items), n):
        yield list(items[i : i + n])


def _decode_chunks(
    refs: Sequence[ImageRef], pre: _Preprocessing, batch_size: int, processes: int
) -> Iterator[list[_Decoded]]:
    """Decoded images in input order, ``batch_size`` at a time (failures included)."""
    if pre.size is None:
        return _decode_native(refs, pre.channels, pre.alpha, batch_size)
    return (
        _merge(chunk, batch)
        for chunk, batch in zip(
            _chunked(refs, batch_size),
            iter_batches(
                refs,
                channels=pre.channels,
                size=pre.size,
                resize=pre.resize,
                alpha_background=pre.alpha,
                batch_size=batch_size,
                processes=processes,
            ),
            strict=True,
        )
    )


# ---------------------------------------------------------------------------
# The run


class ScoreRun:
    """An iterator of :class:`ScoreRow`, one per input, with the run's facts attached.

    Everything that can fail on the inputs as a whole (no images, bad
    threshold, unsafe heatmap folder, bad shard) fails in the constructor,
    before the first row; decoding and scoring happen as rows are consumed.

    Args:
        inputs: files, folders and/or :class:`~aetool.data.inputs.ImageRef`.
        model: a :class:`~aetool.models.file.LoadedModel` or a model file path.
        options: how to score (defaults: :class:`ScoreOptions`).

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
        inputs: Iterable[str | os.PathLike[str] | ImageRef],
        model: LoadedModel | str | os.PathLike[str],
        options: ScoreOptions | None = None,
    ) -> None:
        opts = options if options is not None else ScoreOptions()
        opts.check()
        self.options = opts
        self.model = model if isinstance(model, LoadedModel) else load_model(model)
        shard = parse_shard(opts.shard) if isinstance(opts.shard, str) else opts.shard
        inputs = list(inputs)
        self.heatmap_dir = Path(opts.heatmap_dir) if opts.heatmap_dir is not None else None
        self.masks_dir = Path(opts.masks_dir) if opts.masks_dir is not None else None
        self.masks_out = Path(opts.masks_out) if opts.masks_out is not None else None
        if self.heatmap_dir is not None:
            check_heatmap_dir(self.heatmap_dir, inputs)
        if self.masks_out is not None:
            check_heatmap_dir(self.masks_out, inputs, "--masks-out")
        kind = resolve_score_kind(opts.score_kind, self.model.model)
        self.pixel_threshold = (
            pixel_threshold(self.model, kind) if self.masks_out is not None else None
        )
        refs, missing, excluded = _find_images(inputs, opts.strict)
        labels, source = _resolve_labels(refs, opts.labels, opts.infer)
        self.threshold, spec_text = _resolve_threshold(opts.threshold, self.model, kind)
        n_found = len(refs)
        if shard is not None:
            keep = [in_shard(r.relpath, *shard) for r in refs]
            refs = [r for r, k in zip(refs, keep, strict=True) if k]
            labels = [v for v, k in zip(labels, keep, strict=True) if k]
            missing = [m for m in missing if in_shard(path_key(m), *shard)]
        self.refs, self.missing, self.labels = refs, missing, labels
        if not opts.overwrite:
            for folder in (self.heatmap_dir, self.masks_out):
                if folder is not None:
                    _refuse_existing_heatmaps(folder, refs)
        self.summary = ScoreSummary(self.threshold, kind, spec_text)
        self.summary.info = {
            "model": str(self.model.path),
            "shard": f"{shard[0]}/{shard[1]}" if shard else None,
            "label_source": source,
            "counts": {
                "found": n_found,
                "in_shard": len(refs),
                "missing": len(missing),
                "excluded_masks": excluded,
            },
            "denoising_model": bool(self.model.metadata.get("training", {}).get("noise")),
        }
        self.score_kind = kind
        self.device = resolve_device(opts.device)
        # Decided on the whole set, so every shard's CSV has the same columns.
        self.columns_with_label = source is not None
        self.total = len(refs) + len(missing)
        self._processes = decode_processes(len(refs))  # a bad AETOOL_DECODE_PROCESSES fails here
        val = np.asarray(self.model.validation_scores(kind), dtype=np.float64)
        self._val = np.sort(val[np.isfinite(val)])
        self._it: Generator[ScoreRow, None, None] = self._generate()

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
        if self.options.strict:
            raise ImageError(f"{path}: {error}")
        if self.options.warn:
            self.options.warn(path, error)
        return self._row(path, None, label, error)

    def _generate(self) -> Generator[ScoreRow, None, None]:
        done = 0
        for path in self.missing:
            row = self._fail(path, None, "no such file or folder")
            self.summary.add(row)
            done += 1
            yield row
        pre = _Preprocessing.of(self.model)
        label_of = dict(zip(self.refs, self.labels, strict=True))
        wants_names = self.heatmap_dir is not None or self.masks_out is not None
        names = heatmap_names(self.refs) if wants_names else None
        scale = map_scale(self.model.metadata, self.score_kind)
        pix_budget = max(64, PIXEL_AUC_MAX_PIXELS // max(1, len(self.refs)))
        rng = np.random.default_rng(0)
        chunks = _decode_chunks(self.refs, pre, self.options.batch_size, self._processes)
        model = self.model.model
        place(model, self.device).eval()
        for chunk in chunks:
            ok = [d for d in chunk if d.data is not None]
            scores: dict[ImageRef, tuple[float, np.ndarray]] = {}
            if ok:
                for d, s, m in self._score(model, ok, pre.size is not None):
                    scores[d.ref] = (s, m)
            for d in chunk:
                label = label_of.get(d.ref)
                if d.data is None or d.ref not in scores:
                    row = self._fail(str(d.ref.path), label, d.error or "unreadable")
                elif not math.isfinite(scores[d.ref][0]):  # never a silent `false`
                    row = self._fail(str(d.ref.path), label, "the score is not a finite number")
                else:
                    s, emap = scores[d.ref]
                    row = self._row(str(d.ref.path), s, label, None)
                    if names is not None:
                        self._write_outputs(d.ref, emap, names(d.ref), pre, scale)
                    if self.options.masks:
                        self._add_pixels(d.ref, emap, label, pre, pix_budget, rng)
                self.summary.add(row)
                yield row
            done += len(chunk)
            if self.options.progress:
                self.options.progress(done, self.total)

    @torch.no_grad()
    def _score(
        self, model: torch.nn.Module, ok: list[_Decoded], fixed: bool
    ) -> Iterator[tuple[_Decoded, float, np.ndarray]]:
        groups = [ok] if fixed else [[d] for d in ok]
        for group in groups:
            x = torch.from_numpy(np.stack([d.data for d in group]))  # type: ignore[misc]
            x = x.to(self.device).float().div_(255.0)
            maps = anomaly_maps(model, x, self.score_kind)
            s = reduce_maps(maps, self.score_kind, centred_score(model))
            maps_np = maps.cpu().numpy()
            for d, score, emap in zip(group, s.cpu().tolist(), maps_np, strict=True):
                yield d, float(score), emap

    def _mask_path(self, ref: ImageRef) -> Path | None:
        if self.masks_dir is not None:
            return find_mask(ref.relpath, None, self.masks_dir)
        return find_mask(ref.path, None)

    def _write_outputs(
        self, ref: ImageRef, emap: np.ndarray, name: str, pre: _Preprocessing, scale: MapScale
    ) -> None:
        """The heatmap and/or the predicted mask of one image."""
        if self.heatmap_dir is not None:
            write_heatmap(
                self.heatmap_dir / name, ref, emap,
                channels=pre.channels, alpha_background=pre.alpha, resize=pre.resize,
                size=pre.size, scale=scale,
                mask_path=self._mask_path(ref) if self.options.masks else None,
                overwrite=self.options.overwrite, root=self.heatmap_dir,
            )  # fmt: skip
        if self.masks_out is not None and self.pixel_threshold is not None:
            write_mask(
                self.masks_out / name, ref, emap, self.pixel_threshold,
                channels=pre.channels, alpha_background=pre.alpha, resize=pre.resize,
                size=pre.size, overwrite=self.options.overwrite, root=self.masks_out,
            )  # fmt: skip

    def _add_pixels(
        self,
        ref: ImageRef,
        emap: np.ndarray,
        label: int | None,
        pre: _Preprocessing,
        budget: int,
        rng: np.random.Generator,
    ) -> None:
        mask_path = self._mask_path(ref)
        if mask_path is None:
            # No mask: all-normal for a normal image (and, with an explicit mask
            # folder, for an unlabelled one); an anomaly without a mask is left out.
            if label == 0 or (label is None and self.masks_dir is not None):
                truth = np.zeros(emap.shape, dtype=bool)
            else:
                return
        else:
            try:
                truth = load_mask(mask_path, emap.shape, pre.resize, pre.size is not None)
            except Exception as exc:  # noqa: BLE001 - a bad mask (a bomb too) costs only itself
                if self.options.strict:
                    raise ImageError(f"{mask_path}: cannot read mask ({_why(exc)})") from None
                if self.options.warn:
                    self.options.warn(str(mask_path), f"cannot read mask ({_why(exc)})")
                return
        step = max(1, math.ceil(math.sqrt(emap.size / budget)))
        self.summary.add_region_map(emap[::step, ::step], truth[::step, ::step])
        v, t = emap.ravel(), truth.ravel()
        if v.size > budget:
            pick = rng.choice(v.size, budget, replace=False)
            v, t = v[pick], t[pick]
        self.summary.add_pixels(v, t, mask_path is not None)


def score_images(
    inputs: Iterable[str | os.PathLike[str] | ImageRef],
    model: LoadedModel | str | os.PathLike[str],
    options: ScoreOptions | None = None,
    **overrides: Any,
) -> ScoreRun:
    """Score images with a trained model, streaming one row per input.

    Everything that can fail on the inputs as a whole (no images, bad
    threshold, unsafe heatmap folder, bad shard) fails here, before the first
    row; decoding and scoring happen as the returned iterator is consumed.

    Example::

        run = score_images(["test/"], load_model("model.safetensors"), threshold="p99")
        for row in run:
            print(row.path, row.score, row.is_anomaly)
        report = run.summary.report()

    Args:
        inputs: files, folders and/or :class:`~aetool.data.inputs.ImageRef`.
        model: a :class:`~aetool.models.file.LoadedModel` or a model file path.
        options: a :class:`ScoreOptions` (default: its defaults).
        **overrides: :class:`ScoreOptions` fields to set on top of ``options``
            (``score_kind``, ``threshold``, ``labels``, ``batch_size``, ...).

    Raises:
        NoImagesError: the inputs hold no image file and name no file.
        ConfigError: unknown score kind, invalid threshold or shard, or a
            data-driven threshold with no validation scores in the model.
        OutputError: ``heatmap_dir`` lies inside a scored folder.
        ImageError: with ``strict``, a named path does not exist.
        TypeError: an override is not a :class:`ScoreOptions` field.
    """
    opts = options if options is not None else ScoreOptions()
    if overrides:
        opts = dataclasses.replace(opts, **overrides)
    return ScoreRun(inputs, model, opts)


def _refuse_existing_heatmaps(directory: Path, refs: list[ImageRef]) -> None:
    """Before any scoring: an existing heatmap is replaced only with ``overwrite``."""
    names = heatmap_names(refs)
    for ref in refs:
        if os.path.lexists(directory / names(ref)):
            raise exists_error(directory / names(ref))


def _why(exc: BaseException) -> str:
    """The first line of an exception's message (its type when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
