"""Input discovery: which image files a command works on.

One implementation for every command and the library:

- :func:`read_input_args` turns command-line INPUTs into paths: ``-``, or no
  INPUT with piped stdin, reads newline-separated paths;
- :func:`find_images` expands files and folders into sorted, de-duplicated
  :class:`ImageRef` objects (the rules training, denoising and encoding use);
- :func:`collect_images` does the same for scoring, where files named one by
  one keep their folder layout (labels, heatmap paths) and ground-truth mask
  folders are left out;
- :func:`select_inputs` finds the images and keeps one ``--shard``.

Errors are :class:`~aetool.errors.AetoolError` subclasses; the CLI turns the
argument errors (:class:`InputArgumentError`) into usage errors.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from aetool.data.shards import missing_in_shard, select_shard
from aetool.errors import ConfigError, ImageError, NoImagesError

__all__ = [
    "IMAGE_EXTENSIONS",
    "MASK_DIR_NAME",
    "ImageRef",
    "InputArgumentError",
    "InputSelection",
    "NoInputsError",
    "Skipped",
    "collect_images",
    "find_images",
    "read_input_args",
    "read_path_list",
    "select_inputs",
]

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif",
     ".pnm", ".pgm", ".ppm", ".pbm"}
)  # fmt: skip

#: Folder of MVTec-AD ground-truth masks; images under it are never scored.
MASK_DIR_NAME = "ground_truth"

#: Why a path named as an input is skipped when it does not exist.
NO_SUCH_PATH = "no such file or folder"


class InputArgumentError(ConfigError):
    """The input arguments cannot be used as given (a usage error on the command line)."""


class NoInputsError(InputArgumentError):
    """No input was named and none can be read from stdin (it is a terminal)."""


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


# ---------------------------------------------------------------------------
# command-line arguments


def read_path_list(stream: Iterable[str]) -> list[str]:
    """Newline-separated paths (blank lines and surrounding whitespace ignored)."""
    return [line.strip() for line in stream if line.strip()]


def read_input_args(
    inputs: Sequence[str], stdin: TextIO | None, *, stdin_is_terminal: bool
) -> list[str]:
    """INPUT arguments, with ``-`` (or no INPUT and piped stdin) read as newline-separated paths.

    Raises:
        NoInputsError: no INPUT, and stdin is a terminal.
        InputArgumentError: ``-`` given twice, or stdin held no path.
    """
    if not inputs:
        if stdin_is_terminal:
            raise NoInputsError("pass image files or folders, or pipe newline-separated paths")
        inputs = ("-",)
    if list(inputs).count("-") > 1:
        raise InputArgumentError("'-' (paths from stdin) can be given only once")
    out: list[str] = []
    for item in inputs:
        if item == "-":
            paths = read_path_list(stdin or ())
            if not paths:
                raise InputArgumentError("no image paths were read from stdin")
            out.extend(paths)
        else:
            out.append(item)
    return out


# ---------------------------------------------------------------------------
# walking files and folders


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _in_mask_dir(relpath: str) -> bool:
    return MASK_DIR_NAME in relpath.split("/")[:-1]  # as PurePosixPath(relpath).parts, faster


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
        folder = Path(dirpath)
        # the folder's part of the relative paths, once a folder (10,000 files cost seconds
        # as Path operations each)
        rel_dir = folder.relative_to(root).as_posix()
        prefix = "" if rel_dir == "." else rel_dir + "/"
        for name in sorted(filenames):
            if _is_hidden(name) or os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                continue
            full = folder / name
            if not full.is_file():  # a FIFO or device in a folder would block: left out
                unreadable.append(Skipped(str(full), "not a regular file"))
                continue
            out.append(ImageRef(full, prefix + name, root))
    return out


@dataclass
class _Found:
    """What :func:`_discover` found: refs, skipped paths (in order) and mask files left out."""

    refs: list[ImageRef] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    excluded_masks: int = 0
    seen: set[str] = field(default_factory=set)

    def first_time(self, path: Path, key: str | None = None) -> bool:
        """Whether ``path`` (whose real path is ``key``, if known) is met for the first time."""
        key = key if key is not None else os.path.realpath(path)
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


def _discover(
    inputs: Iterable[str | os.PathLike[str] | ImageRef], *, scoring: bool, missing_ok: bool
) -> _Found:
    """Walk files and folders in order, each real file once.

    ``scoring`` selects the rules of :func:`collect_images`: mask folders are
    left out, unreadable folders are not reported, a dangling symlink named
    explicitly is kept (its row reports the error) and files named one by one
    are made relative to the deepest folder holding all of them.
    """
    found = _Found()
    named: list[Path] = []
    for item in inputs:
        if isinstance(item, ImageRef):
            found.refs.append(item)
            continue
        p = Path(item)
        why = _unusable_name(p)
        if why and missing_ok:
            found.skipped.append(Skipped(str(p), why))
            continue
        if why:
            raise ImageError(f"{p}: {why}")
        if p.is_dir():
            refs = _walk(p, [] if scoring else found.skipped)
            keyed = _without_masks(refs, found) if scoring else [(r, None) for r in refs]
            for ref, key in keyed:
                if found.first_time(ref.path, key):
                    found.refs.append(ref)
        elif p.exists() or (scoring and p.is_symlink()):
            if found.first_time(p):
                named.append(p)
                if not scoring:
                    found.refs.append(ImageRef(p, p.name if p.is_absolute() else str(p)))
        elif missing_ok:
            found.skipped.append(Skipped(str(p), NO_SUCH_PATH))
        else:
            raise ImageError(f"{p} does not exist")
    if scoring:
        _add_named_files(found, named)
    return found


def _unusable_name(path: Path) -> str | None:
    """Why a path cannot even be looked up (too long, a NUL byte, a loop of links), or None."""
    try:
        os.lstat(path)
    except ValueError:
        return "the name holds a NUL byte"
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
            return exc.strerror or str(exc)
    return None


def _without_masks(refs: list[ImageRef], found: _Found) -> list[tuple[ImageRef, str]]:
    """One folder's refs (each real file once) less the mask files, which ``found`` counts,
    with their real paths."""
    kept: list[tuple[ImageRef, str]] = []
    walked: set[str] = set()
    real_dirs: dict[str, str] = {}
    for ref in refs:
        key = _realpath(ref.path, real_dirs)
        if key in walked:
            continue
        walked.add(key)
        if _in_mask_dir(ref.relpath):
            found.excluded_masks += 1
        else:
            kept.append((ref, key))
    return kept


def _realpath(path: Path, real_dirs: dict[str, str]) -> str:
    """``os.path.realpath(path)``, with each folder's resolved once in ``real_dirs``: one
    ``lstat`` a file that is not a symlink, instead of one per component of its path."""
    if os.path.islink(path):
        return os.path.realpath(path)
    folder, name = os.path.split(path)
    real = real_dirs.get(folder)
    if real is None:
        real = real_dirs[folder] = os.path.realpath(folder)
    return os.path.join(real, name)


def _add_named_files(found: _Found, files: list[Path]) -> None:
    """Refs for files named one by one, relative to the deepest folder holding all of them."""
    if not files:
        return
    parents = [os.path.dirname(os.path.abspath(f)) for f in files]
    try:
        base: str | None = os.path.commonpath(parents)
    except ValueError:  # different drives on Windows
        base = None
    for f in files:
        rel = os.path.relpath(os.path.abspath(f), base) if base else f.name
        rel = Path(rel).as_posix()
        if _in_mask_dir(rel):
            found.excluded_masks += 1
            continue
        found.refs.append(ImageRef(f, rel))


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
    found = _discover(inputs, scoring=False, missing_ok=missing_ok)
    return found.refs, found.skipped


def collect_images(
    inputs: Iterable[str | os.PathLike[str] | ImageRef],
) -> tuple[list[ImageRef], list[str], int]:
    """Files and folders -> image refs, missing paths, and the number of mask files left out.

    Folders are walked with the rules of :func:`find_images`; ``relpath`` is
    relative to the folder. Files named one by one (for example a path list
    from stdin) get a ``relpath`` relative to the deepest folder holding all
    of them, so the folder layout still gives labels and heatmap paths. Files
    in a ``ground_truth`` folder below a scored folder are masks, not images,
    and are left out. Refs passed in are kept as they are.
    """
    found = _discover(inputs, scoring=True, missing_ok=True)
    return found.refs, [s.path for s in found.skipped], found.excluded_masks


# ---------------------------------------------------------------------------
# one shard of the inputs


@dataclass
class InputSelection:
    """The images of a run: all found, the ones of this shard, and the skipped paths.

    Attributes:
        found: every image found under the inputs (labels are inferred from these).
        refs: the images this run processes (``found`` without ``--shard``).
        missing: named paths that do not exist and folders that could not be
            read, those of this shard only.
    """

    found: list[ImageRef]
    refs: list[ImageRef]
    missing: list[Skipped]


def select_inputs(
    paths: Sequence[str],
    *,
    shard: tuple[int, int] | str | None = None,
    strict: bool = False,
    on_missing: Callable[[list[Skipped]], None] | None = None,
) -> InputSelection:
    """Find the images under ``paths`` and keep one shard of them.

    Each missing path counts in one shard only (by its path as given), so the
    shards of a batch job report it once.

    Args:
        paths: files and folders.
        shard: ``"I/N"`` or ``(I, N)``; None keeps everything.
        strict: raise on the first missing path instead of skipping it.
        on_missing: called with the skipped paths before the check that
            images were found (the CLI prints its warnings there).

    Raises:
        ImageError: with ``strict``, a path does not exist.
        NoImagesError: no image file was found.
    """
    refs, skipped = find_images(paths, missing_ok=True)
    missing = missing_in_shard(skipped, shard)
    if missing and strict:
        raise ImageError(f"{missing[0].path}: {missing[0].reason}")
    if on_missing is not None:
        on_missing(missing)
    if not refs:
        raise NoImagesError(f"no image files found in {', '.join(paths[:3])}")
    return InputSelection(refs, list(select_shard(refs, shard)), missing)
