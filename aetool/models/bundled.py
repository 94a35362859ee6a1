"""Model files shipped with aetool, in the ``aetool/models/pretrained`` package data folder.

``pretrained/README.md`` (at the top of the repository) tells how each was made.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from aetool.errors import ModelFileError

__all__ = ["DEFAULT_DENOISER", "bundled_model_path"]

#: File name of the bundled pretrained grayscale denoiser (in ``aetool/models/pretrained``).
DEFAULT_DENOISER = "denoiser-gray.safetensors"


def bundled_model_path(name: str = DEFAULT_DENOISER) -> Path:
    """Path of a model file shipped in the ``aetool/models/pretrained`` package data folder.

    Raises:
        ModelFileError: the file is not part of this installation.
    """
    res = resources.files("aetool.models").joinpath("pretrained", name)
    path = Path(str(res))
    if not res.is_file():
        raise ModelFileError(
            f"the bundled model {name} is missing from this installation ({path}); "
            "pass --model FILE, for example one trained with `aetool train DIR --arch denoiser "
            "--noise gaussian:0.02-0.2 --patch-size 64`"
        )
    return path
