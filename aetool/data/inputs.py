"""TODO docstring."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from aetool.errors import ImageError

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif",
     ".pnm", ".pgm", ".ppm", ".pbm"}
)  # fmt: skip


@dataclass(frozen=True)
class ImageRef:
    """One image file and its path relative to the folder it was found in.

    ``root`` is that folder, or None for a file named explicitly (its
    ``relpath`` is then the path as given, or the bare name if absolute).
    """

    path: Path
    relpath: str
    root: Path | None = None


@dataclass(frozen=True)
class Skipped:
    """A file that could not be used, and why."""

    path: str
    reason: str


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def find_images(
    inputs: Iterable[str | os.PathLike[str]], *, missing_ok: bool = False
) -> tuple[list[ImageRef], list[Skipped]]:
    """Expand files and folders into a sorted, de-duplicated list of image files.

    Folders are walked recursively in sorted order; hidden files and folders
    are skipped, symlinked folders are followed once (loops are cut) and files
    without an image extension are ignored. Files named explicitly are kept
    whatever their extension (decoding decides).

    Args:
        inputs: files and folders.
        missing_ok: report a missing path as skipped instead of raising.

    Returns:
        The image references, and what was skipped: the explicitly named paths
        that do not exist (only with ``missing_ok``) and folders under the
        inputs that could not be read.

    Raises:
        ImageError: a path does not exist (without ``missing_ok``).
    """
    refs: list[ImageRef] = []
    missing: list[Skipped] = []
    seen: set[str] = set()
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for ref in _walk(p, missing):
                key = os.path.realpath(ref.path)
                if key not in seen:
                    seen.add(key)
                    refs.append(ref)
        elif p.exists():
            key = os.path.realpath(p)
            if key not in seen:
                seen.add(key)
                refs.append(ImageRef(p, p.name if p.is_absolute() else str(p)))
        elif missing_ok:
            missing.append(Skipped(str(p), "no such file or folder"))
        else:
            raise ImageError(f"{p} does not exist")
    return refs, missing


def _walk(root: Path, unreadable: list[Skipped]) -> list[ImageRef]:
    out: list[ImageRef] = []
    visited: set[tuple[int, int]] = set()

    def onerror(exc: OSError) -> None:
        unreadable.append(Skipped(str(exc.filename), f"cannot read folder ({exc.strerror})"))

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=onerror):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in visited:  # symlink loop or repeated target
            dirnames[:] = []
            continue
        visited.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        for name in sorted(filenames):
            if _is_hidden(name) or Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            full = Path(dirpath) / name
            out.append(ImageRef(full, full.relative_to(root).as_posix(), root))
    return out


def read_path_list(stream: Iterable[str]) -> list[str]:
    """Newline-separated paths (blank lines and surrounding whitespace ignored)."""
    return [line.strip() for line in stream if line.strip()]


#: Folder of MVTec-AD ground-truth masks; images under it are never scored.
MASK_DIR_NAME = "ground_truth"


def _rel_parts(relpath: str) -> tuple[str, ...]:
    return PurePosixPath(relpath).parts


def collect_images(
    inputs: Iterable[str | os.PathLike[str] | ImageRef],
) -> tuple[list[ImageRef], list[str], int]:
    """Files and folders -> image refs, missing paths, and the number of mask files left out.

    Folders are walked with :func:`~aetool.data.inputs.find_images` (same rules as
    training); ``relpath`` is relative to the folder. Files named one by one
    (for example a path list from stdin) get a ``relpath`` relative to the
    deepest folder holding all of them, so the folder layout still gives
    labels and heatmap paths. Files in a ``ground_truth`` folder below a
    scored folder are masks, not images, and are left out.
    """
    refs: list[ImageRef] = []
    files: list[Path] = []
    missing: list[str] = []
    seen: set[str] = set()
    excluded = 0
    for item in inputs:
        if isinstance(item, ImageRef):
            refs.append(item)
            continue
        p = Path(item)
        if p.is_dir():
            found, _ = find_images([p])
            for ref in found:
                if MASK_DIR_NAME in _rel_parts(ref.relpath)[:-1]:
                    excluded += 1
                    continue
                key = os.path.realpath(ref.path)
                if key not in seen:
                    seen.add(key)
                    refs.append(ref)
        elif p.exists() or p.is_symlink():
            key = os.path.realpath(p)
            if key not in seen:
                seen.add(key)
                files.append(p)
        else:
            missing.append(str(p))
    if files:
        parents = [os.path.dirname(os.path.abspath(f)) for f in files]
        try:
            base = os.path.commonpath(parents)
        except ValueError:  # different drives on Windows
            base = None
        for f in files:
            rel = os.path.relpath(os.path.abspath(f), base) if base else f.name
            rel = Path(rel).as_posix()
            if MASK_DIR_NAME in _rel_parts(rel)[:-1]:
                excluded += 1
                continue
            refs.append(ImageRef(f, rel))
    return refs, missing, excluded
