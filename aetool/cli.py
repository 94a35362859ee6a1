"""The ``aetool`` command line: parse options, call one library function, write results.

Data goes to stdout; progress, tables, warnings and errors go to stderr.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from aetool import __version__
from aetool.errors import AetoolError
from aetool.images import load_images
from aetool.modelfile import read_metadata
from aetool.models import ModelConfig, list_models
from aetool.output import make_err_console
from aetool.training import EpochRecord, TrainCallback, TrainConfig, TrainResult, train

DEFAULT_MODEL = "aetool-model.safetensors"


class AetoolGroup(click.Group):
    """Turns library errors into one-line messages, and ends quietly on a closed pipe."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AetoolError as exc:
            raise click.ClickException(str(exc)) from None
        except BrokenPipeError:
            _quiet_broken_pipe()
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)


def _quiet_broken_pipe() -> None:
    # Python flushes stdout at exit; point it at devnull so that flush cannot fail again.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(0)


def common_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--quiet and --device, shared by every command that computes."""

    @click.option("-q", "--quiet", is_flag=True, help="No progress or summary on stderr.")
    @click.option(
        "--device",
        default="auto",
        show_default=True,
        help="auto, cpu, cuda or cuda:N (auto picks CUDA when present).",
    )
    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return f(*args, **kwargs)

    return wrapper


@click.group(cls=AetoolGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aetool")
def cli() -> None:
    """Anomaly detection and denoising with autoencoders.

    Train on a folder of normal images, then score, denoise or export. Data is
    written to stdout (CSV by default); progress and reports go to stderr.
    """


def main() -> None:
    """Console-script entry point."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL) if hasattr(signal, "SIGPIPE") else None
    cli(prog_name="aetool")


# ---------------------------------------------------------------------------
# train


class RichTrainProgress(TrainCallback):
    """Epoch and batch bars on a terminal; one plain line per epoch in logs."""

    def __init__(self, console: Any, epochs: int) -> None:
        self.console = console
        self.epochs = epochs
        self.live = console.is_terminal and not console.quiet
        self.progress: Progress | None = None
        self._t0 = time.perf_counter()
        self._seen = 0

    def on_train_start(self, info: dict[str, Any]) -> None:
        self.console.print(
            f"Training [bold]{info['arch']}[/] ({info['params']:,} parameters) on "
            f"{info['train']} images, validating on {info['val']}, device {info['device']}"
            + (f"; {info['skipped']} unreadable file(s) skipped" if info["skipped"] else "")
        )
        if self.live:
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
            self.batch_task = self.progress.add_task("batches", total=info["batches_per_epoch"], status="")

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


def _train_summary(console: Any, result: TrainResult, path: Path) -> None:
    t = result.metadata["training"]
    v = result.metadata["validation"]
    table = Table(title="Training summary", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    best = t["best_epoch"]
    hist = t["history"]
    table.add_row("model", str(path))
    table.add_row("architecture", f"{result.metadata.get('arch', '')} {t['model_config']['arch']}".strip())
    table.add_row("images", f"{t['train_count']} train / {t['val_count']} validation")
    if t["skipped"]:
        table.add_row("skipped", f"{len(t['skipped'])} unreadable file(s)")
    status = "interrupted (resumable)" if not t["completed"] else (
        "stopped early" if t["stopped_early"] else "completed"
    )  # fmt: skip
    table.add_row("epochs", f"{t['epochs_run']} run, best {best} ({status})")
    if best:
        vl = hist["val_loss"][best - 1]
        table.add_row(
            "loss at best",
            f"train {hist['train_loss'][best - 1]:.5f}" + (f", val {vl:.5f}" if vl is not None else ""),
        )
    if v.get("summary", {}).get("mse"):
        s = v["summary"]["mse"]
        table.add_row("val error (mse)", f"median {s['median']:.5f}, p99 {s['p99']:.5f}")
    rate = sum(r.images_per_s for r in result.history[-3:]) / max(len(result.history[-3:]), 1)
    table.add_row("time", f"{t['seconds']:.1f} s on {t['device']}, {rate:,.0f} img/s")
    console.print(table)


@cli.command("train")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_MODEL,
              show_default=True, help="Model file to write.")
@click.option("--overwrite", is_flag=True, help="Replace an existing model file.")
@click.option("--arch", default="conv", show_default=True,
              help=f"Architecture: {', '.join(list_models())}.")
@click.option("--latent-dim", type=click.IntRange(1), default=16, show_default=True)
@click.option("--epochs", type=click.IntRange(1), default=30, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Adam learning rate.")
@click.option("--val-split", type=click.FloatRange(0, 1, max_open=True), default=0.1, show_default=True,
              help="Held-out share of the images for early stopping and threshold statistics.")
@click.option("--patience", type=click.IntRange(0), default=10, show_default=True,
              help="Stop after this many epochs without validation improvement (0: never).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--loss", type=click.Choice(["mse", "bce", "ssim"]), default="mse", show_default=True)
@click.option("--noise", default=None, help="Denoising: gaussian:SIGMA[-MAX] | mask:P | saltpepper:P.")
@click.option("--sparsity", default=None, help="KL sparsity penalty BETA[:RHO] on the latent.")
@click.option("--contractive", type=click.FloatRange(0), default=0.0, help="Contractive penalty weight.")
@click.option("--image-size", default=None, help="N or HxW (default: the images' common size, else 64x64).")
@click.option("--channels", type=click.Choice(["1", "3"]), default=None, help="Force grayscale or RGB.")
@click.option("--resize", type=click.Choice(["stretch", "crop"]), default="stretch", show_default=True)
@click.option("--alpha-background", type=click.Choice(["black", "white"]), default="black", show_default=True,
              help="Background for transparent pixels.")
@click.option("--patch-size", type=click.IntRange(8), default=None,
              help="Train on random square patches of native-size images (fully convolutional archs).")
@click.option("--patches-per-epoch", type=click.IntRange(1), default=None)
@click.option("--strict", is_flag=True, help="Fail on the first unreadable image.")
@click.option("--resume", is_flag=True, help="Continue the interrupted run stored in --output.")
@common_options
def train_cmd(
    inputs: tuple[Path, ...],
    output: Path,
    overwrite: bool,
    arch: str,
    latent_dim: int,
    image_size: str | None,
    channels: str | None,
    resize: str,
    alpha_background: str,
    strict: bool,
    resume: bool,
    quiet: bool,
    **train_args: Any,
) -> None:
    """Train an autoencoder on folders of normal images; print the model path."""
    console = make_err_console(quiet)
    if output.exists() and not (overwrite or resume):
        raise click.UsageError(f"{output} exists; pass --overwrite to replace it, or -o to write elsewhere")
    if resume and not output.exists():
        raise click.UsageError(f"--resume: {output} does not exist")
    cfg = TrainConfig(**train_args)
    cfg.validate()
    images = _load_with_progress(
        console,
        inputs,
        channels=int(channels) if channels else None,
        size=image_size,
        native_size=cfg.patch_size is not None and image_size is None,
        resize=resize,
        alpha_background=alpha_background,
        strict=strict,
    )
    mcfg = ModelConfig(arch=arch, latent_dim=latent_dim)
    result = train(
        images,
        mcfg,
        cfg,
        [RichTrainProgress(console, cfg.epochs)],
        resume_from=output if resume else None,
    )
    result.metadata["training"]["data"] = [str(p.resolve()) for p in inputs]
    path = result.save(output)
    _train_summary(console, result, path)
    click.echo(str(path))
    if result.interrupted:
        console.print(
            f"Interrupted: saved a resumable model; continue with "
            f"`aetool train {' '.join(map(str, inputs))} -o {output} --resume`"
        )
        sys.exit(130)


def _warn_skipped(console: Any, skipped: list[Any]) -> None:
    for s in skipped[:10]:
        console.print(f"[yellow]warning:[/] skipped {s.path}: {s.reason}")
    if len(skipped) > 10:
        console.print(f"[yellow]warning:[/] ... and {len(skipped) - 10} more unreadable files")


def _load_with_progress(console: Any, inputs: Any, **kwargs: Any) -> Any:
    if console.is_terminal and not console.quiet:
        with Progress(
            TextColumn("decoding"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, redirect_stdout=False, redirect_stderr=False, transient=True,
        ) as prog:  # fmt: skip
            task = prog.add_task("decode", total=None)
            images = load_images(inputs, progress=lambda d, n: prog.update(task, completed=d, total=n), **kwargs)
    else:
        images = load_images(inputs, **kwargs)
    _warn_skipped(console, images.skipped)
    return images


# ---------------------------------------------------------------------------
# info


def _default_model() -> Path:
    return Path(os.environ.get("AETOOL_MODEL") or DEFAULT_MODEL)


@cli.command("info")
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the metadata as JSON on stdout.")
def info_cmd(model: Path | None, as_json: bool) -> None:
    """Show a model file's metadata (readable on stderr, or --json on stdout)."""
    meta = read_metadata(model or _default_model())
    if as_json:
        click.echo(json.dumps(meta, indent=2))
        return
    console = make_err_console()
    t = meta.get("training", {})
    pre = meta.get("preprocessing", {})
    table = Table(title=str(model or _default_model()), show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("format", f"{meta['format']} v{meta['format_version']}")
    table.add_row("architecture", f"{meta['arch']} {json.dumps(meta.get('arch_args', {}))}")
    size = f"{pre.get('height')}x{pre.get('width')}" if pre.get("height") else "native size"
    if pre.get("patch_size"):
        size += f", patches of {pre['patch_size']}"
    table.add_row("preprocessing",
                  f"{pre.get('channels')} channel(s), {size}, resize {pre.get('resize')}, "
                  f"alpha on {pre.get('alpha_background')}")  # fmt: skip
    if t:
        table.add_row("data", ", ".join(t.get("data", [])))
        table.add_row("images", f"{t.get('image_count')} ({t.get('train_count')} train, "
                      f"{t.get('val_count')} validation, {len(t.get('skipped', []))} skipped)")  # fmt: skip
        table.add_row("training", f"{t.get('epochs_run')} of {t.get('epochs_requested')} epochs, "
                      f"best {t.get('best_epoch')}, loss {t.get('loss')}, noise {t.get('noise') or 'none'}, "
                      f"lr {t.get('lr')}, batch {t.get('batch_size')}, seed {t.get('seed')}")  # fmt: skip
        hist = t.get("history", {})
        if hist.get("train_loss"):
            vl = hist.get("val_loss") or [None]
            table.add_row("final loss", f"train {hist['train_loss'][-1]:.5f}"
                          + (f", val {vl[-1]:.5f}" if vl[-1] is not None else ""))  # fmt: skip
        table.add_row("run", f"{t.get('seconds', 0):.1f} s on {t.get('device')}, "
                      f"{'completed' if t.get('completed', True) else 'interrupted (resumable)'}, "
                      f"{t.get('finished', '')}")  # fmt: skip
        table.add_row("versions", ", ".join(f"{k} {v}" for k, v in t.get("versions", {}).items()))
    for kind, s in meta.get("validation", {}).get("summary", {}).items():
        table.add_row(f"val {kind}", f"mean {s['mean']:.5f}, median {s['median']:.5f}, "
                      f"p95 {s['p95']:.5f}, p99 {s['p99']:.5f}, max {s['max']:.5f}")  # fmt: skip
    console.print(table)


# ---------------------------------------------------------------------------
# demo


@cli.command("demo")
@click.argument("directory", required=False, default="aetool-demo", type=click.Path(path_type=Path))
@click.option("--epochs", type=click.IntRange(1), default=None, help="Override training epochs.")
@common_options
def demo_cmd(directory: Path, epochs: int | None, quiet: bool, device: str) -> None:
    """Run the whole toolkit on scikit-learn's handwritten digits (no arguments needed)."""
    from aetool.demo import run_demo

    console = make_err_console(quiet)
    summary = run_demo(directory, console=console, device=device, epochs=epochs, progress=RichTrainProgress)
    table = Table(title="aetool demo: what was produced", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in summary.items():
        table.add_row(key, str(value))
    console.print(table)
    click.echo(str(directory / "model.safetensors"))
