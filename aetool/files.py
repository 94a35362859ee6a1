"""Writing files safely: atomic replacement, and output paths that never clobber inputs.

Every file aetool writes goes through here.  A write lands under a temporary name in
the destination folder and is renamed into place only when complete, so a crash or a
full disk never leaves a truncated file under the final name.  Output paths are
checked against the inputs of the run so that no command overwrites what it reads.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from aetool.data.inputs import IMAGE_EXTENSIONS, ImageRef
from aetool.errors import OutputError

# The process umask, read once at import (os.umask can only be read by setting it).
UMASK = os.umask(0o022)


class atomic_path:  # noqa: N801 - used like a function in a with-statement
    """Context manager yielding a temp path in the target's folder, placed at the target on success.

    With ``overwrite=False`` the final placement is exclusive (a hard link, which
    fails when the name exists): of two writers racing for one new name, one
    succeeds and the other gets an :class:`OutputError`, and neither file is
    silently replaced.  ``root`` is the folder the target must stay in (checked
    after symlinks are resolved).  A failed write (full or read-only disk)
    becomes an :class:`OutputError` naming the file and the reason.
    """

    def __init__(
        self,
        target: str | os.PathLike[str],
        *,
        overwrite: bool = True,
        root: str | os.PathLike[str] | None = None,
    ) -> None:
        self.target = Path(target)
        self.overwrite = overwrite
        self.root = root

    def __enter__(self) -> Path:
        check_output(self.target, overwrite=self.overwrite, root=self.root)
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(
                prefix=f".{_short(self.target.name)}.", suffix=".tmp", dir=self.target.parent
            )
        except OSError as exc:
            raise write_error(self.target, exc) from None
        os.close(fd)
        self.tmp = Path(tmp)
        return self.tmp

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError) and not isinstance(exc, BlockingIOError):
                raise write_error(self.target, exc) from None
            return
        try:
            # mkstemp creates 0600 files; give the result the usual permissions.
            os.chmod(self.tmp, 0o666 & ~UMASK)
            place_file(self.tmp, self.target, overwrite=self.overwrite)
        finally:
            self.tmp.unlink(missing_ok=True)


def atomic_write_bytes(
    dest: Path,
    data: bytes,
    *,
    overwrite: bool = True,
    root: str | os.PathLike[str] | None = None,
) -> None:
    """Write ``data`` to ``dest`` through a temporary sibling file (see :class:`atomic_path`).

    The result has mode 0666 minus the umask (unlike ``tempfile.mkstemp``'s 0600).
    """
    with atomic_path(dest, overwrite=overwrite, root=root) as tmp:
        tmp.write_bytes(data)


def place_file(tmp: Path, target: Path, *, overwrite: bool) -> None:
    """Put the finished ``tmp`` at ``target``: replace it, or (no ``overwrite``) only if absent.

    Raises:
        OutputError: ``target`` exists (without ``overwrite``) or cannot be written.
    """
    try:
        if overwrite:
            os.replace(tmp, target)
            return
        try:
            os.link(tmp, target)  # atomic, and fails if the name exists: no check-then-rename race
        except FileExistsError:
            raise exists_error(target) from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                raise
            # No hard links here (some network and FAT file systems): reserve the name
            # exclusively, then move the finished file over the reservation.
            try:
                os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 & ~UMASK))
            except FileExistsError:
                raise exists_error(target) from None
            os.replace(tmp, target)
    except OSError as exc:
        raise write_error(target, exc) from None


def exists_error(target: str | os.PathLike[str]) -> OutputError:
    return OutputError(
        f"{display(target)} exists (or was just written by another process); "
        "pass --overwrite to replace it, or write elsewhere"
    )


def write_error(target: str | os.PathLike[str], exc: OSError) -> OutputError:
    """One line for a failed write: the file and the system's reason (disk full, read-only...)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return OutputError(f"cannot write {display(target)}: {reason}")


def display(path: str | os.PathLike[str]) -> str:
    """A path as printable text: undecodable bytes escaped, control characters shown as escapes."""
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        text = text.encode("unicode_escape").decode("ascii")
    return text


def _short(name: str) -> str:
    # Keep the temporary name under NAME_MAX whatever the final name's length.
    return name[:100]


def check_output(
    path: str | os.PathLike[str],
    *,
    inputs: Iterable[str | os.PathLike[str]] = (),
    reads: Iterable[str | os.PathLike[str]] = (),
    overwrite: bool = False,
    root: str | os.PathLike[str] | None = None,
) -> None:
    """The one output rule: never an input, never a file being read, never an existing
    file without ``overwrite``, never a folder, never through a symlink out of ``root``.

    Args:
        path: the output file.
        inputs: input files and folders of the command: the output may not be one of
            them, nor an existing image inside an input folder.
        reads: other files the command reads (the model): never overwritten.
        overwrite: whether an existing (non-input) file may be replaced.
        root: the folder the output must stay in once symlinks are resolved.

    Raises:
        OutputError: the output breaks the rule.
    """
    out = Path(path)
    real = real_path(out)
    for item in reads:
        if real == real_path(item):
            raise OutputError(f"{display(out)} is a file this command reads; write elsewhere")
    exists = os.path.lexists(out)
    for item in inputs:
        p = real_path(item)
        in_folder = exists and p in real.parents and real.suffix.lower() in IMAGE_EXTENSIONS
        if real == p or in_folder:
            raise OutputError(f"{display(out)} is one of the inputs; write elsewhere")
    if out.is_dir():
        raise OutputError(f"{display(out)} is a folder; give a file name")
    if exists and not overwrite:
        raise exists_error(out)
    if root is not None and not is_inside(out.parent, root):
        raise OutputError(
            f"{display(out)} leads out of {display(root)} through a symbolic link; refusing to "
            "write there"
        )


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
