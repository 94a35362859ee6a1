"""People's side of the command line: one stderr console, progress bars, warnings, exit codes.

Data goes to stdout; everything here writes to stderr. Bars are drawn only on
a terminal (``--quiet`` silences the console), so logs stay plain text: one
line per epoch, one line per warning, no escape codes or redraws.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from aetool.data.inputs import Skipped
from aetool.training.callbacks import EpochRecord, TrainCallback

if TYPE_CHECKING:
    from aetool.training.record import TrainResult

#: Exit status when some inputs failed (unreadable, missing) and the others were done.
EXIT_PARTIAL = 4
#: Warnings printed one by one before the rest are counted.
MAX_WARNINGS = 10


def make_err_console(quiet: bool = False) -> Console:
    """The stderr console: honours NO_COLOR, and plain text when stderr is not a terminal."""
    console = Console(
        stderr=True,
        quiet=quiet,
        no_color=bool(os.environ.get("NO_COLOR")),
        highlight=False,
    )
    # In logs a message stays on one line (grep-able); tables keep their width.
    console.soft_wrap = not console.is_terminal
    return console


def warn(console: Console, message: str) -> None:
    """One warning line; the message is plain text (a path in it is never read as markup)."""
    console.print(Text.assemble(("warning:", "yellow"), " ", plain(message)))


def plain(value: Any) -> Text:
    """A value (often a path) as text rich prints as is: no markup, control characters
    and bytes that are not UTF-8 shown as escapes."""
    from aetool.files import display

    return Text(display(str(value)))


def warn_skipped(console: Console, skipped: Sequence[Skipped]) -> None:
    """A warning per skipped file (the first ten), then how many more."""
    for s in skipped[:MAX_WARNINGS]:
        warn(console, f"skipped {s.path}: {s.reason}")
    if len(skipped) > MAX_WARNINGS:
        warn(console, f"... and {len(skipped) - MAX_WARNINGS} more unreadable files")


def unreadable_warner(console: Console, verb: str) -> Callable[[str, str], None]:
    """A ``warn(path, reason)`` callback: one line for each of the first ten unreadable
    files, then one line saying there are more."""
    count = [0]

    def warn_unreadable(path: str, reason: str) -> None:
        count[0] += 1
        if count[0] <= MAX_WARNINGS:
            warn(console, f"cannot {verb} {path}: {reason}")
        elif count[0] == MAX_WARNINGS + 1:
            warn(console, "more unreadable files; see the summary")

    return warn_unreadable


def warn_folder_labels(console: Console, source: str | None, labels: Sequence[int | None]) -> None:
    """Say so when labels (and so the evaluation) come from folder names alone: a batch
    of good images under a folder named ``defect/`` would otherwise be reported with
    recall 0 and nothing saying why."""
    normal = sum(1 for v in labels if v == 0)
    anomalous = sum(1 for v in labels if v == 1)
    if source != "folder layout" or not normal + anomalous:
        return
    warn(
        console,
        f"labels come from folder names: {normal} normal, {anomalous} anomalous "
        "(good/normal/ok: normal; abnormal, anomaly, anomalous, bad, defect, defective "
        "and the siblings of a good folder: anomalous); --labels FILE or --no-labels "
        "to change that",
    )


def exit_partial(console: Console, failed: int, verb: str, others: str) -> None:
    """Exit with EXIT_PARTIAL, after a one-line warning, when some inputs failed."""
    if failed:
        warn(
            console,
            f"{failed} input(s) could not be {verb} (exit code "
            f"{EXIT_PARTIAL}; the others were {others})",
        )
        sys.exit(EXIT_PARTIAL)


def fmt_number(value: float | None, spec: str = ".3f") -> str:
    """A number for a summary table; "-" when it is undefined."""
    return "-" if value is None else format(value, spec)


def _live(console: Console) -> bool:
    return console.is_terminal and not console.quiet


class ItemProgress:
    """A rich bar on a terminal (nothing otherwise), advanced per item or set to done/total."""

    def __init__(self, console: Console, total: int | None, label: str) -> None:
        self.progress: Progress | None = None
        if _live(console):
            self.progress = Progress(
                TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TimeRemainingColumn(), console=console, redirect_stdout=False,
                redirect_stderr=False, transient=True,
            )  # fmt: skip
            self.task = self.progress.add_task(label, total=total)

    def __enter__(self) -> ItemProgress:
        if self.progress:
            self.progress.start()
        return self

    def advance(self, n: int = 1) -> None:
        if self.progress:
            self.progress.advance(self.task, n)

    def update(self, done: int, total: int) -> None:
        if self.progress:
            self.progress.update(self.task, completed=done, total=total)

    def __exit__(self, *exc: object) -> None:
        if self.progress:
            self.progress.stop()


class DecodeProgress(ItemProgress):
    """The bar shown while training images are decoded (no time estimate: sizes vary)."""

    def __init__(self, console: Console) -> None:
        self.progress = None
        if _live(console):
            self.progress = Progress(
                TextColumn("decoding"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                console=console, redirect_stdout=False, redirect_stderr=False, transient=True,
            )  # fmt: skip
            self.task = self.progress.add_task("decode", total=None)


class RichTrainProgress(TrainCallback):
    """Epoch and batch bars on a terminal; one plain line per epoch in logs."""

    def __init__(self, console: Any, epochs: int | None = None) -> None:
        self.console = console
        self.epochs = epochs
        self.live = _live(console)
        self.progress: Progress | None = None
        self._t0 = time.perf_counter()
        self._seen = 0

    def on_train_start(self, info: dict[str, Any]) -> None:
        self.epochs = info.get("epochs", self.epochs)
        self.console.print(
            f"Training [bold]{info['arch']}[/] ({info['params']:,} parameters) on "
            f"{info['train']} images, validating on {info['val']}, device {info['device']}"
            + (f" x {info['world_size']} processes" if info.get("world_size", 1) > 1 else "")
            + (f"; {info['skipped']} unreadable file(s) skipped" if info["skipped"] else "")
        )
        if self.live:
            self._start_bars(info)

    def _start_bars(self, info: dict[str, Any]) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            redirect_stdout=False,
            redirect_stderr=False,
            transient=False,
        )
        self.progress.start()
        self.epoch_task = self.progress.add_task(
            "epochs", total=self.epochs, completed=info["start_epoch"] - 1, status=""
        )
        self.batch_task = self.progress.add_task(
            "batches", total=info["batches_per_epoch"], status=""
        )

    def on_epoch_start(self, epoch: int, n_batches: int) -> None:
        self._t0, self._seen = time.perf_counter(), 0
        if self.progress:
            self.progress.reset(self.batch_task, total=n_batches, status="")

    def on_batch_end(self, epoch: int, batch: int, loss: float, n_images: int) -> None:
        self._seen += n_images
        if self.progress:
            rate = self._seen / max(time.perf_counter() - self._t0, 1e-9)
            self.progress.update(
                self.batch_task, completed=batch, status=f"loss {loss:.5f}  {rate:,.0f} img/s"
            )

    def on_epoch_end(self, record: EpochRecord, samples: dict[str, Any]) -> None:
        val = f"{record.val_loss:.5f}" if record.val_loss is not None else "-"
        line = (
            f"epoch {record.epoch}/{self.epochs}  train {record.train_loss:.5f}  val {val}"
            f"  {record.images_per_s:,.0f} img/s{'  *best' if record.best else ''}"
        )
        if self.progress:
            self.progress.update(self.epoch_task, completed=record.epoch, status=f"val {val}")
        else:
            self.console.print(line)

    def on_train_end(self, result: TrainResult) -> None:
        if self.progress:
            self.progress.stop()
