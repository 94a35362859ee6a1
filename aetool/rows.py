"""Data rows: CSV (header first), JSON lines or a table, streamed one row at a time.

Also the rows of latent codes (``path,z0,...,z{k-1}[,label]``) that ``aetool
export`` and the demo write, and their NPY form: an ``(N, k)`` float32 array
with the rows' paths in a sibling ``.paths.csv``.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from rich.console import Console
from rich.table import Table

from aetool.files import atomic_path

__all__ = ["LatentRow", "RowWriter", "npy_index_path", "write_latent_npy", "write_latent_rows"]


def _fmt(value: Any, digits: int | None = None) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        # repr is the shortest text that reads back as the same float: no precision lost
        # in data; a table for people rounds to ``digits`` significant digits.
        return repr(value) if digits is None else f"{value:.{digits}g}"
    return value


#: A comma, a double quote or a control character (C0 or DEL): the cell is quoted.
_NEEDS_QUOTES = re.compile(r'[,"\x00-\x1f\x7f]')


def csv_cell(value: Any) -> str:
    """One CSV cell: quoted (quotes doubled) when it holds a comma, a quote or any control
    character (a carriage return too, which ``csv.writer`` leaves bare with a ``\\n`` line end).

    Text that a spreadsheet would read as a formula (``=``, ``+``, ``-``, ``@``) is left as
    it is: the rows are data for programs, and a path must read back exactly (README).
    """
    text = str(value)
    if _NEEDS_QUOTES.search(text):
        return '"' + text.replace('"', '""') + '"'
    return text


def csv_line(cells: Iterable[Any]) -> str:
    """A CSV line ending in ``\\n``, each cell as :func:`csv_cell` writes it."""
    return ",".join(csv_cell(c) for c in cells) + "\n"


class RowWriter:
    """Streams rows to a text stream as CSV (header first), JSON lines, or a table at the end.

    Rows are written and flushed one by one (CSV/JSONL), so ``| head`` works
    and memory stays flat. ``table`` collects rows and prints a rich table on
    close (for people, not pipes).
    """

    def __init__(self, fmt: str = "csv", stream: TextIO | None = None) -> None:
        if fmt not in ("csv", "jsonl", "table"):
            raise ValueError(f"unknown format {fmt!r}")
        self.fmt = fmt
        self.stream = stream or sys.stdout
        self.columns: list[str] | None = None
        self._rows: list[Mapping[str, Any]] = []

    def write_header(self, columns: Iterable[str]) -> None:
        """Fix the columns and write the CSV header now, so that no row at all still
        gives a header (an empty shard of a batch job)."""
        if self.columns is None:
            self.columns = list(columns)
            if self.fmt == "csv":
                self.stream.write(csv_line(self.columns))
                self.stream.flush()

    def write(self, row: Mapping[str, Any]) -> None:
        if self.columns is None:
            self.write_header(row.keys())
        if self.fmt == "csv":
            self.stream.write(csv_line(_fmt(row.get(c)) for c in self.columns or []))
            self.stream.flush()
        elif self.fmt == "jsonl":
            self.stream.write(json.dumps(dict(row), allow_nan=False, default=str) + "\n")
            self.stream.flush()
        else:
            self._rows.append(row)

    def write_all(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for row in rows:
            self.write(row)

    def close(self) -> None:
        if self.fmt == "table" and self._rows:
            table = Table(*(self.columns or []))
            for row in self._rows:
                table.add_row(*(str(_fmt(row.get(c), 6)) for c in self.columns or []))
            buf = io.StringIO()
            Console(file=buf, width=200, no_color=True).print(table)
            self.stream.write(buf.getvalue())
            self.stream.flush()


#: One latent code to write: the path to show, the code ``(k,)`` and its label (or None).
LatentRow = tuple[str, np.ndarray, int | None]


def latent_row(path: str, z: np.ndarray, label: int | None, with_label: bool) -> dict[str, Any]:
    """``{"path", "z0", ..., "z{k-1}"[, "label"]}`` for one code."""
    row: dict[str, Any] = {"path": path}
    # A float32 code is written as its shortest float32 text (str), which reads back exactly.
    values = z.tolist() if z.dtype != np.float32 else [float(str(v)) for v in z]
    row.update({f"z{i}": float(v) for i, v in enumerate(values)})
    if with_label:
        row["label"] = label
    return row


def write_latent_rows(
    rows: Iterable[LatentRow],
    fmt: str,
    stream: TextIO,
    *,
    with_label: bool = False,
    latent_dim: int = 0,
) -> int:
    """Stream latent codes as CSV or JSON lines; return the code length.

    With no row at all, a CSV still gets its header (``latent_dim`` columns),
    and the length returned is ``latent_dim`` for CSV, 0 for JSON lines.
    """
    writer = RowWriter(fmt, stream)
    k = 0
    for path, z, label in rows:
        k = len(z)
        writer.write(latent_row(path, z, label, with_label))
    if writer.columns is None and fmt == "csv":
        k = latent_dim
        cols = ["path", *(f"z{i}" for i in range(k))] + (["label"] if with_label else [])
        stream.write(",".join(cols) + "\n")
    return k


def npy_index_path(output: str | os.PathLike[str]) -> Path:
    """The ``.paths.csv`` file beside an NPY export, naming its rows' images."""
    output = Path(output)
    stem = output.name[:-4] if output.name.lower().endswith(".npy") else output.name
    return output.with_name(stem + ".paths.csv")


def write_latent_npy(
    rows: Iterable[LatentRow],
    output: str | os.PathLike[str],
    *,
    with_label: bool = False,
    overwrite: bool = True,
) -> tuple[int, Path]:
    """Write codes as an ``(N, k)`` float32 NPY file and their paths to :func:`npy_index_path`.

    Both files are written atomically; without ``overwrite`` an existing one is an
    :class:`~aetool.errors.OutputError`. Returns the code length (0 with no
    rows) and the index file's path.
    """
    codes: list[np.ndarray] = []
    index: list[dict[str, Any]] = []
    k = 0
    for path, z, label in rows:
        k = len(z)
        codes.append(z)
        index.append({"path": path, "label": label} if with_label else {"path": path})
    arr = np.stack(codes).astype(np.float32) if codes else np.zeros((0, k), np.float32)
    with atomic_path(output, overwrite=overwrite) as tmp, open(tmp, "wb") as f:
        np.save(f, arr)
    index_path = npy_index_path(output)
    with (
        atomic_path(index_path, overwrite=overwrite) as tmp,
        open(tmp, "w", newline="", encoding="utf-8", errors="surrogateescape") as f,
    ):
        w = RowWriter("csv", f)
        w.write_all(index)
        if not index:
            f.write("path,label\n" if with_label else "path\n")
    return k, index_path
