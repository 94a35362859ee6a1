"""Predicted defect masks: an anomaly map cut at a pixel threshold chosen without labels.

The rule (:func:`pixel_threshold`): a pixel is a defect when its map value
exceeds the :data:`PIXEL_QUANTILE` quantile of the pixels of the held-out
normal images, recorded in the model file at training
(``validation.pixel_quantiles``), so that about one normal pixel in a
thousand is flagged; for the ``model`` score kind (a defect probability)
the threshold is at least 0.5, the segmentation network's own decision
boundary. Like anomalib's masks, this needs no labelled defect.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image

from aetool.anomaly.heatmaps import map_to_original
from aetool.data.decode import decode_image
from aetool.data.inputs import ImageRef
from aetool.errors import ConfigError, OutputError
from aetool.files import atomic_path
from aetool.models.file import LoadedModel

__all__ = ["PIXEL_QUANTILE", "pixel_threshold", "write_mask"]

#: Quantile of validation normal pixels above which a pixel counts as a defect.
PIXEL_QUANTILE = 0.999


def pixel_threshold(model: LoadedModel, score_kind: str) -> float:
    """The pixel threshold for ``--masks-out`` (see the module notes).

    Raises:
        ConfigError: the model file records no pixel statistics for this kind
            (trained by an older aetool).
    """
    recorded = model.metadata.get("validation", {}).get("pixel_quantiles", {}).get(score_kind)
    if recorded is None or not math.isfinite(float(recorded)):
        raise ConfigError(
            f"{model.path} records no validation pixel statistics for --score {score_kind}; "
            "retrain it with this aetool to use --masks-out"
        )
    value = float(recorded)
    return max(value, 0.5) if score_kind == "model" else value


def write_mask(
    target: Path,
    ref: ImageRef,
    amap: np.ndarray,
    threshold: float,
    *,
    channels: int,
    alpha_background: str,
    resize: str,
    size: tuple[int, int] | None,
) -> None:
    """Write the binary mask (0/255 grayscale PNG at the image's size) of one map.

    Raises:
        OutputError: ``target`` is the input image itself.
    """
    if target.exists() and os.path.samefile(target, ref.path):
        raise OutputError(f"refusing to overwrite the input {ref.path} with its mask")
    image = decode_image(ref.path, channels=channels, alpha_background=alpha_background)
    full = map_to_original(amap, image.shape[1:], resize, size)
    mask = np.where(full > threshold, 255, 0).astype(np.uint8)
    with atomic_path(target) as tmp:
        Image.fromarray(mask, mode="L").save(tmp, format="PNG")
