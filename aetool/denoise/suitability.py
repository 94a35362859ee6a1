"""Whether a model file is fit to denoise, read from its metadata before any image is touched.

Any autoencoder runs as a "denoiser": its output is its reconstruction of the
input. A model trained without input noise reconstructs, often blurrier, rather
than cleans, and a small fixed-size model sees a large image only tile by tile.
Both still run; the doubts are reasons for a warning, never for an error.
"""

from __future__ import annotations

import os

from aetool.models.file import read_metadata

__all__ = ["denoiser_doubts"]


def denoiser_doubts(path: str | os.PathLike[str]) -> list[str]:
    """Why the model file at ``path`` may not be a denoiser: one sentence per doubt.

    Raises:
        ModelFileError: ``path`` is not a readable aetool model file.
    """
    meta = read_metadata(path)
    out = []
    training = meta.get("training")
    if training:  # recorded by `aetool train`: its --noise (absent or "none" without one)
        no_noise = str(training.get("noise") or "none").lower() == "none"
    else:  # saved from Python without a record: only the denoiser architecture is one
        no_noise = meta.get("arch") != "denoiser"
    if no_noise:
        out.append(
            f"{path} was trained without input noise: it is not a denoiser, and its output is "
            "its reconstruction of each image (often blurrier, not cleaner); train one with "
            "`aetool train DIR --noise gaussian:0.02-0.2`, or leave out --model for the "
            "bundled denoiser"
        )
    args = meta.get("arch_args") or {}
    h, w = int(args.get("height", 0) or 0), int(args.get("width", 0) or 0)
    if meta.get("arch") in ("conv", "dense") and 0 < min(h, w) < 32:
        out.append(
            f"{path} takes fixed {w}x{h} inputs: larger images are cut into {w}x{h} tiles, "
            "each reconstructed on its own"
        )
    return out
