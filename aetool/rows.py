"""Where output goes: data rows to stdout, everything for people to one stderr Console."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

__all__ = ["RowWriter"]


def _fmt(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


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
        self._csv: Any = None
        self._rows: list[Mapping[str, Any]] = []

    def write(self, row: Mapping[str, Any]) -> None:
        if self.columns is None:
            self.columns = list(row.keys())
            if self.fmt == "csv":
                self._csv = csv.writer(self.stream, lineterminator="\n")
                self._csv.writerow(self.columns)
        if self.fmt == "csv":
            self._csv.writerow([_fmt(row.get(c)) for c in self.columns])
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
                table.add_row(*(str(_fmt(row.get(c))) for c in self.columns or []))
            buf = io.StringIO()
            Console(file=buf, width=200, no_color=True).print(table)
            self.stream.write(buf.getvalue())
            self.stream.flush()
