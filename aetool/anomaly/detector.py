"""A scikit-learn / pyod style estimator over training and scoring: :class:`AnomalyDetector`.

``fit`` trains an autoencoder (:func:`~aetool.training.loop.train`),
``decision_function`` scores images exactly as ``aetool score`` does, and
``predict`` applies the model's threshold rule. Images come as arrays or as
paths:

* an array ``(N, H, W)`` (grayscale) or ``(N, H, W, C)`` with ``C`` 1 or 3,
  ``uint8`` in [0, 255] or float in [0, 1]; a list of such ``(H, W[, C])``
  arrays of different sizes;
* a list of image files and folders (decoded as ``aetool score`` decodes
  them; an unreadable file scores NaN).

An image is brought to the model's input the way a file is
(:func:`aetool.data.decode.prepare_image`): converted to the model's channels
(RGB -> L with Pillow's luma weights) and resized (bilinear, ``stretch`` or
``crop``). ``uint8`` arrays therefore score exactly like the same pixels
saved as PNG and passed to ``aetool score``. A float image that already has
the model's channels and size is used as it is; any other float image is
rounded to ``uint8`` first.

Conventions follow pyod: higher scores are more anomalous (also for
``score_samples``, whose sign in scikit-learn's outlier detectors is the
opposite), and ``predict`` returns 1 for an anomaly, 0 for a normal image.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from aetool.anomaly.options import ScoreOptions
from aetool.anomaly.pipeline import score_images
from aetool.anomaly.scores import anomaly_maps, centred_score, reduce_maps, resolve_score_kind
from aetool.anomaly.thresholds import Threshold, fit_threshold, parse_threshold
from aetool.data.cache import ImageSet, load_images
from aetool.data.decode import _resize, parse_size
from aetool.data.inputs import ImageRef
from aetool.devices import place, resolve_device
from aetool.errors import ConfigError
from aetool.models.file import LoadedModel, load_model, save_model
from aetool.models.registry import ModelConfig
from aetool.training.config import TrainConfig
from aetool.training.loop import train

__all__ = ["AnomalyDetector"]

_MODEL_FIELDS = ("arch", "latent_dim", "extra")
_TRAIN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))
_DATA_FIELDS = ("image_size", "channels", "resize")
_SCORE_FIELDS = ("score_kind", "threshold")


class AnomalyDetector:
    """Train on normal images, score and flag new ones (pyod's fit / decision_function / predict).

    Example::

        from aetool import AnomalyDetector

        det = AnomalyDetector(latent_dim=8, epochs=50).fit(good)  # (N, H, W) uint8
        scores = det.decision_function(new)                        # higher = more anomalous
        flags = det.predict(new)                                   # 1 anomaly, 0 normal
        det.save("model.safetensors")   # the same file `aetool score -m` reads
        det = AnomalyDetector.load("model.safetensors")

    Args:
        arch, latent_dim, extra: as :class:`~aetool.models.registry.ModelConfig`
            (``aetool train --arch --latent-dim``).
        image_size: ``N``, ``"HxW"`` or ``(H, W)`` to resize training images to;
            default the images' common size (``aetool train --image-size``).
        channels: 1 or 3; default from the data (``--channels``).
        resize: ``stretch`` or ``crop`` (``--resize``).
        score_kind: ``auto`` (a draem's own map, the mean squared error for the
            autoencoders), ``model``, ``mse``, ``ssim`` or ``max-local``
            (``aetool score --score``).
        threshold: ``auto``, a number, ``pQ`` or ``Ksigma`` (``aetool score -t``).
        **train_options: any :class:`~aetool.training.config.TrainConfig`
            field (``epochs``, ``batch_size``, ``lr``, ``val_split``,
            ``patience``, ``seed``, ``device``, ``loss``, ``noise``, ...).

    Attributes (after ``fit`` or ``load``):
        model_: the :class:`~aetool.models.file.LoadedModel`.
        threshold_: the fitted :class:`~aetool.anomaly.thresholds.Threshold`.
    """

    # Set in __init__ from **train_options with the other TrainConfig fields; named here
    # because scoring uses them too.
    batch_size: int
    device: str

    def __init__(
        self,
        arch: str = "conv",
        latent_dim: int = 16,
        extra: dict[str, Any] | None = None,
        image_size: int | str | tuple[int, int] | None = None,
        channels: int | None = None,
        resize: str = "stretch",
        score_kind: str = "auto",
        threshold: str | float = "auto",
        **train_options: Any,
    ) -> None:
        unknown = sorted(set(train_options) - set(_TRAIN_FIELDS))
        if unknown:
            raise TypeError(f"unknown parameter(s): {', '.join(unknown)}")
        self.arch = arch
        self.latent_dim = latent_dim
        self.extra = extra
        self.image_size = image_size
        self.channels = channels
        self.resize = resize
        self.score_kind = score_kind
        self.threshold = threshold
        defaults = TrainConfig()
        for name in _TRAIN_FIELDS:
            setattr(self, name, train_options.get(name, getattr(defaults, name)))
        self.model_: LoadedModel | None = None

    # -- scikit-learn protocol ----------------------------------------------

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor parameters (scikit-learn's ``get_params``)."""
        names = [*_MODEL_FIELDS, *_DATA_FIELDS, *_SCORE_FIELDS, *_TRAIN_FIELDS]
        return {name: getattr(self, name) for name in names}

    def set_params(self, **params: Any) -> AnomalyDetector:
        """Set constructor parameters (scikit-learn's ``set_params``); returns ``self``."""
        valid = self.get_params()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"invalid parameter {name!r} for AnomalyDetector")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = {
            k: p.default
            for k, p in inspect.signature(type(self).__init__).parameters.items()
            if p.default is not inspect.Parameter.empty
        } | dataclasses.asdict(TrainConfig())
        changed = {k: v for k, v in self.get_params().items() if defaults.get(k, object()) != v}
        return f"AnomalyDetector({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    # -- fitting ------------------------------------------------------------

    def fit(self, X: Any, y: Any = None) -> AnomalyDetector:
        """Train on normal images (``y`` is ignored, as in pyod). Returns ``self``."""
        cfg = TrainConfig(**{name: getattr(self, name) for name in _TRAIN_FIELDS})
        cfg.validate()
        mcfg = ModelConfig(arch=self.arch, latent_dim=self.latent_dim, extra=self.extra)
        if _is_paths(X):
            images = load_images(
                [Path(p) for p in _path_list(X)],
                channels=self.channels,
                size=self.image_size,
                native_size=cfg.patch_size is not None and self.image_size is None,
                resize=self.resize,
            )
            sources: list[str | Path] | None = None
        else:
            images = self._array_set(X)
            sources = [f"array of {len(images)} images"]
        result = train(images, mcfg, cfg, data_sources=sources)
        meta = dict(result.metadata)
        meta["arch"] = type(result.model).arch_name  # type: ignore[attr-defined]
        meta["arch_args"] = result.model.arch_args()
        self.model_ = LoadedModel(result.model.eval(), meta, Path("<unsaved>"), {})
        return self

    def _array_set(self, X: Any) -> ImageSet:
        arrays = _image_list(X)
        channels = self.channels or (3 if any(a.shape[-1] == 3 for a in arrays) else 1)
        size: tuple[int, int] | None = parse_size(self.image_size)
        if size is None:
            shapes = {a.shape[:2] for a in arrays}
            if len(shapes) > 1:
                raise ConfigError(
                    "the images differ in size; pass image_size to resize them to one size"
                )
            size = (int(arrays[0].shape[0]), int(arrays[0].shape[1]))
        data = np.stack([_prepare(a, channels, size, self.resize) for a in arrays])
        refs = [ImageRef(Path(f"<array>/{i}"), str(i)) for i in range(len(arrays))]
        return ImageSet(refs, data, channels, size, resize=self.resize)

    # -- scoring ------------------------------------------------------------

    def _loaded(self) -> LoadedModel:
        if self.model_ is None:
            raise ConfigError("this AnomalyDetector is not fitted yet; call fit(X) or load(path)")
        return self.model_

    @property
    def threshold_(self) -> Threshold:
        """The threshold ``predict`` uses, fitted to the model's validation scores."""
        spec = parse_threshold(str(self.threshold))
        loaded = self._loaded()
        kind = resolve_score_kind(self.score_kind, loaded.model)
        return fit_threshold(spec, loaded.validation_scores(kind))

    def decision_function(self, X: Any) -> np.ndarray:
        """One anomaly score per image, float64 ``(N,)``; higher is more anomalous.

        The same numbers as the ``score`` column of ``aetool score --score
        score_kind`` on the same images (NaN for an unreadable file).
        """
        loaded = self._loaded()
        if _is_paths(X):
            opts = ScoreOptions(
                score_kind=self.score_kind, threshold=self.threshold_, infer=False,
                masks=False, batch_size=self.batch_size, device=self.device,
            )  # fmt: skip
            rows = score_images([Path(p) for p in _path_list(X)], loaded, opts)
            return np.array([np.nan if r.score is None else r.score for r in rows])
        return np.concatenate(list(self._score_arrays(loaded, _image_list(X)))).astype(np.float64)

    def score_samples(self, X: Any) -> np.ndarray:
        """The same as :meth:`decision_function` (pyod's sign: higher is more anomalous)."""
        return self.decision_function(X)

    def predict(self, X: Any) -> np.ndarray:
        """1 where an image's score is above the threshold (an anomaly), else 0; ``int64 (N,)``."""
        scores = self.decision_function(X)
        with np.errstate(invalid="ignore"):
            return (scores > self.threshold_.value).astype(np.int64)

    @torch.no_grad()
    def _score_arrays(self, loaded: LoadedModel, arrays: list[np.ndarray]) -> Iterator[np.ndarray]:
        pre = loaded.preprocessing
        channels = int(pre.get("channels") or 1)
        size = (int(pre["height"]), int(pre["width"])) if pre.get("height") else None
        resize = pre.get("resize") or "stretch"
        device = resolve_device(self.device)
        model = place(loaded.model, device).eval()
        kind = resolve_score_kind(self.score_kind, model)
        prepared = [_prepare(a, channels, size, resize, keep_float=True) for a in arrays]
        # Same-size images go through the model together; native-size models see each alone.
        step = self.batch_size if size is not None else 1
        for i in range(0, len(prepared), step):
            chunk = prepared[i : i + step]
            x = torch.from_numpy(np.stack(chunk)).to(device)
            x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
            maps = anomaly_maps(model, x, kind)
            yield reduce_maps(maps, kind, centred_score(model)).cpu().numpy()

    # -- files --------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model file (the one ``aetool score -m`` reads); returns its path."""
        loaded = self._loaded()
        meta = {k: v for k, v in loaded.metadata.items() if k not in ("arch", "arch_args")}
        out = save_model(path, loaded.model, meta)
        loaded.path = out
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str], **params: Any) -> AnomalyDetector:
        """A detector around a model file; ``params`` set scoring options (``threshold``, ...)."""
        loaded = load_model(path)
        pre = loaded.preprocessing
        det = cls(arch=loaded.metadata.get("arch", "conv"))
        args = loaded.metadata.get("arch_args", {})
        det.latent_dim = int(args.get("latent_dim", det.latent_dim))
        det.channels = pre.get("channels")
        det.resize = pre.get("resize") or "stretch"
        det.set_params(**params)
        det.model_ = loaded
        return det


# ---------------------------------------------------------------------------
# Images as arrays


def _is_paths(X: Any) -> bool:
    if isinstance(X, (str, os.PathLike)):
        return True
    return isinstance(X, Sequence) and len(X) > 0 and isinstance(X[0], (str, os.PathLike))


def _path_list(X: Any) -> list[Any]:
    return [X] if isinstance(X, (str, os.PathLike)) else list(X)


def _image_list(X: Any) -> list[np.ndarray]:
    """``(H, W, C)`` or ``(H, W)`` arrays, one per image."""
    if isinstance(X, np.ndarray) or hasattr(X, "__array__"):
        arr = np.asarray(X)
        if arr.ndim not in (3, 4):
            raise ConfigError(f"expected images shaped (N, H, W) or (N, H, W, C), got {arr.shape}")
        images = list(arr)
    else:
        images = [np.asarray(a) for a in X]
    if not images:
        raise ConfigError("no images given")
    for a in images:
        if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (1, 3)):
            raise ConfigError(
                f"expected an image shaped (H, W) or (H, W, C) with C 1 or 3, got {a.shape}"
            )
    return images


def _prepare(
    a: np.ndarray,
    channels: int,
    size: tuple[int, int] | None,
    resize: str,
    keep_float: bool = False,
) -> np.ndarray:
    """One image as the model takes it: ``(C, H, W)``, uint8 (or float32 in [0, 1]).

    Mirrors :func:`aetool.data.decode.prepare_image` on the same pixels.
    """
    hwc = a[..., None] if a.ndim == 2 else a
    fits = hwc.shape[-1] == channels and (size is None or hwc.shape[:2] == tuple(size))
    if np.issubdtype(a.dtype, np.floating):
        if keep_float and fits:
            return np.ascontiguousarray(np.clip(hwc, 0, 1).transpose(2, 0, 1), dtype=np.float32)
        hwc = np.round(np.clip(np.nan_to_num(hwc), 0, 1) * 255)
    u8 = hwc.astype(np.uint8)
    if fits:
        return np.ascontiguousarray(u8.transpose(2, 0, 1))
    img = Image.fromarray(
        u8[..., 0] if u8.shape[-1] == 1 else u8, "L" if u8.shape[-1] == 1 else "RGB"
    )
    img = img.convert("L" if channels == 1 else "RGB")
    if size is not None:
        img = _resize(img, (int(size[0]), int(size[1])), resize)
    out = np.asarray(img, dtype=np.uint8)
    return np.ascontiguousarray(out[None] if out.ndim == 2 else out.transpose(2, 0, 1))
