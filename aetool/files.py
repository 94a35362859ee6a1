"""Writing files safely: atomic replacement, and output paths that never clobber inputs.

Every file aetool writes goes through here.  A write lands under a temporary name in
the destination folder and is renamed into place only when complete, so a crash or a
full disk never leaves a truncated file under the final name.  Output paths are
checked against the inputs of the run so that no command overwrites what it reads.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from aetool.data.inputs import ImageRef
from aetool.errors import OutputError

# The process umask, read once at import (os.umask can only be read by setting it).
UMASK = os.umask(0o022)


class atomic_path:  # noqa: N801 - used like a function in a with-statement
    """Context manager yielding a temp path in the target's folder, renamed over it on success."""

    def __init__(self, target: str | os.PathLike[str]) -> None:
        self.target = Path(target)

    def __enter__(self) -> Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{self.target.name}.", suffix=".tmp", dir=self.target.parent
        )
        os.close(fd)
        self.tmp = Path(tmp)
        return self.tmp

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            # mkstemp creates 0600 files; give the result the usual permissions.
            os.chmod(self.tmp, 0o666 & ~UMASK)
            os.replace(self.tmp, self.target)
        else:
            self.tmp.unlink(missing_ok=True)


def atomic_write_bytes(dest: Path, data: bytes) -> None:
    """Write ``data`` to ``dest`` via a temporary sibling file and ``os.replace``.

    The temporary file is created with mode 0666 minus the umask (unlike
    ``tempfile.mkstemp``'s 0600), so the result has ordinary permissions.
    """
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def is_inside(child: str | os.PathLike[str], parent: str | os.PathLike[str]) -> bool:
    """Whether ``child`` is ``parent`` or lies below it, once both are resolved (symlinks too)."""
    real_child, real_parent = real_path(child), real_path(parent)
    return real_child == real_parent or real_parent in real_child.parents


def real_path(path: str | os.PathLike[str]) -> Path:
    """The path with symlinks resolved, as a :class:`~pathlib.Path`."""
    return Path(os.path.realpath(path))


def refuse_inputs_as_outputs(
    outputs: Iterable[str | os.PathLike[str]], inputs: Iterable[str | os.PathLike[str]]
) -> None:
    """An output file may never be one of the command's input images, overwrite or not.

    Raises:
        OutputError: an output resolves to the same file as an input.
    """
    real_in = {os.path.realpath(p) for p in inputs}
    for out in outputs:
        if os.path.realpath(out) in real_in:
            raise OutputError(f"{out} is one of the input images; write elsewhere")


def check_output_dir(
    out_dir: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]]
) -> None:
    """Refuse an output folder that is, contains or lies inside an input folder.

    Raises:
        OutputError: OUT is an input folder, is inside one, or holds one, or
            OUT exists and is not a folder.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(f"output {out} exists and is not a folder")
    for item in inputs:
        p = Path(item)
        if not p.is_dir():
            continue
        if is_inside(out, p):
            where = "is" if real_path(out) == real_path(p) else "is inside"
            raise OutputError(
                f"output folder {out} {where} the input folder {p}; denoised files could "
                "overwrite or mix with the originals: pick a folder outside the inputs"
            )
        if is_inside(p, out):
            raise OutputError(
                f"input folder {p} is inside the output folder {out}; denoised files could "
                "overwrite the originals: pick a folder outside the inputs"
            )


def check_heatmap_dir(
    directory: str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str] | ImageRef],
    option: str = "--heatmaps",
) -> None:
    """Refuse an output folder (heatmaps, masks) inside a scored folder (refs passed in are
    not checked); ``option`` names it in the message.

    Raises:
        OutputError: ``directory`` is a scored folder or lies inside one.
    """
    for item in inputs:
        if isinstance(item, ImageRef):
            continue
        p = Path(item)
        if p.is_dir() and is_inside(directory, p):
            raise OutputError(
                f"{option} {directory} is inside the scored folder {p}: its files could "
                "overwrite inputs or be scored next time; choose a folder outside it"
            )
