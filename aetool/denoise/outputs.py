"""Where each denoised image is written: its relative path under OUT, never outside it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from aetool.data.inputs import ImageRef
from aetool.errors import OutputError
from aetool.files import is_inside

__all__ = ["output_path"]


def _input_roots(refs: Sequence[ImageRef]) -> list[Path]:
    """The folders the images were found in (files named one by one have none: an output
    can only land on such a file itself, which the pipeline refuses image by image)."""
    return sorted({ref.root for ref in refs if ref.root is not None})


def output_path(out_dir: str | os.PathLike[str], relpath: str) -> Path:
    """Where the output for an image with ``relpath`` goes, refusing any escape from OUT.

    Raises:
        OutputError: the relative path is absolute, has ``..`` parts, or goes
            through a symlinked folder that points outside OUT.
    """
    rel = PurePosixPath(relpath.replace("\\", "/"))
    parts = [p for p in rel.parts if p not in ("", ".")]
    if rel.is_absolute() or ".." in parts or not parts:
        raise OutputError(
            f"output path for {relpath!r} would leave the output folder; pass the image's "
            "folder as input instead of a path with '..' or an absolute path"
        )
    out = Path(out_dir)
    dst = out.joinpath(*parts)
    # realpath resolves symlinks in the parts that exist; parts not yet created cannot be links.
    if not is_inside(dst.parent, out):
        raise OutputError(
            f"output path {dst} goes through a symlink that points outside the output folder"
        )
    return dst
