"""Predicted defect masks: an anomaly map cut at a pixel threshold chosen without labels.

The rule (:func:`pixel_threshold`) is the pixel threshold of the model's map
scale (:mod:`aetool.anomaly.mapscale`), the same level the heatmaps draw as a
contour: a pixel is a defect when its map value exceeds the 99.9th percentile
of the pixels of the held-out normal images, recorded in the model file at
training, so that about one normal pixel in a thousand is flagged; for the
``model`` score kind (a defect probability) the threshold is at least 0.5,
the segmentation network's own decision boundary. Like anomalib's masks,
this needs no labelled defect.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from aetool.anomaly.heatmaps import map_to_original
from aetool.anomaly.mapscale import map_scale
from aetool.data.decode import decode_image
from aetool.data.inputs import ImageRef
from aetool.errors import ConfigError
from aetool.files import atomic_path, check_output
from aetool.models.file import LoadedModel

__all__ = ["pixel_threshold", "write_mask"]


def pixel_threshold(model: LoadedModel, score_kind: str) -> float:
    """The pixel threshold for ``--masks-out`` (see the module notes).

    Raises:
        ConfigError: the model file records no pixel statistics for this kind
            (trained by an older aetool).
    """
    value = map_scale(model.metadata, score_kind).pixel_threshold
    if value is None:
        raise ConfigError(
            f"{model.path} records no validation pixel statistics for --score {score_kind}; "
            "retrain it with this aetool to use --masks-out"
        )
    return value


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
    overwrite: bool = True,
    root: Path | None = None,
) -> None:
    """Write the binary mask (0/255 grayscale PNG at the image's size) of one map.

    Raises:
        OutputError: ``target`` is the input image itself, exists (without
            ``overwrite``) or leads out of ``root`` through a symbolic link.
    """
    check_output(target, inputs=[ref.path], overwrite=overwrite, root=root)
    image = decode_image(ref.path, channels=channels, alpha_background=alpha_background)
    full = map_to_original(amap, image.shape[1:], resize, size)
    mask = np.where(full > threshold, 255, 0).astype(np.uint8)
    with atomic_path(target, overwrite=overwrite, root=root) as tmp:
        Image.fromarray(mask, mode="L").save(tmp, format="PNG")
