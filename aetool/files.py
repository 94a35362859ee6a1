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
from typing import Any

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


def _refuse_input_as_output(outputs: list[Path], inputs: Iterable[str | Path]) -> None:
    """An output file may never be one of the command's input images, --overwrite or not."""
    real_in = {os.path.realpath(p) for p in inputs}
    for out in outputs:
        if os.path.realpath(out) in real_in:
            raise OutputError(f"{out} is one of the input images; write elsewhere")


def check_output_dir(out_dir: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]]):
    """Refuse an output folder that is, contains or lies inside an input folder.

    Raises:
        OutputError: OUT is an input folder, is inside one, or holds one, or
            OUT exists and is not a folder.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(f"output {out} exists and is not a folder")
    real_out = _real(out)
    for item in inputs:
        p = Path(item)
        if not p.is_dir():
            continue
        real_in = _real(p)
        if _inside(real_out, real_in):
            where = "is" if real_out == real_in else "is inside"
            raise OutputError(
                f"output folder {out} {where} the input folder {p}; denoised files could "
                "overwrite or mix with the originals: pick a folder outside the inputs"
            )
        if _inside(real_in, real_out):
            raise OutputError(
                f"input folder {p} is inside the output folder {out}; denoised files could "
                "overwrite the originals: pick a folder outside the inputs"
            )


def _is_within(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
        return True
    except ValueError:
        return False


def _check_heatmap_dir(directory: Path, inputs: Sequence[Any]) -> None:
    target = Path(os.path.realpath(directory))
    for item in inputs:
        if isinstance(item, ImageRef):
            continue
        p = Path(item)
        if p.is_dir() and _is_within(target, Path(os.path.realpath(p))):
            raise OutputError(
                f"--heatmaps {directory} is inside the scored folder {p}: heatmaps could "
                "overwrite inputs or be scored next time; choose a folder outside it"
            )


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))
