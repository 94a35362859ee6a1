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
from aetool.cli.console import make_err_console
from aetool.data.cache import load_images
from aetool.devices import resolve_device
from aetool.errors import AetoolError
from aetool.files import _refuse_input_as_output
from aetool.models.file import read_metadata
from aetool.models.registry import ModelConfig, list_models
from aetool.training.distributed import launched_by_torchrun, torchrun_command
from aetool.training.distributed import teardown as dist_teardown
from aetool.training.loop import (
    EpochRecord,
    SampleGrids,
    TrainCallback,
    TrainConfig,
    TrainResult,
    sample_grid_path,
    train,
)

DEFAULT_MODEL = "aetool-model.safetensors"
#: Fewer validation images than this make data-driven thresholds rough (BENCHMARKS.md).
MIN_THRESHOLD_VAL = 20


#: Exit status when some inputs failed (unreadable, missing) and the others were done.
EXIT_PARTIAL = 4


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


#: ``-m/--model``: the model file, default $AETOOL_MODEL, else the default of `aetool train`.
model_option = click.option(
    "-m",
    "--model",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"Model file [default: $AETOOL_MODEL, else {DEFAULT_MODEL}, as written by aetool train].",
)


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

    Exit codes: 0 success, 1 error, 2 bad usage, 3 anomalies found (score
    --fail-on-anomaly), 4 some inputs failed and the others were done,
    130 interrupted.
    """


def main() -> None:
    """Console-script entry point."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL) if hasattr(signal, "SIGPIPE") else None
    cli(prog_name="aetool")


# ---------------------------------------------------------------------------
# train


class RichTrainProgress(TrainCallback):
    """Epoch and batch bars on a terminal; one plain line per epoch in logs."""

    def __init__(self, console: Any, epochs: int | None = None) -> None:
        self.console = console
        self.epochs = epochs
        self.live = console.is_terminal and not console.quiet
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


def _train_summary(console: Any, result: TrainResult, path: Path) -> None:
    t = result.metadata["training"]
    v = result.metadata["validation"]
    table = Table(title="Training summary", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    best = t["best_epoch"]
    hist = t["history"]
    table.add_row("model", str(path))
    if sample_grid_path(path).exists():
        table.add_row("reconstructions", str(sample_grid_path(path)))
    table.add_row(
        "architecture", f"{result.metadata.get('arch', '')} {t['model_config']['arch']}".strip()
    )
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
            f"train {hist['train_loss'][best - 1]:.5f}"
            + (f", val {vl:.5f}" if vl is not None else ""),
        )
    if v.get("summary", {}).get("mse"):
        s = v["summary"]["mse"]
        table.add_row("val error (mse)", f"median {s['median']:.5f}, p99 {s['p99']:.5f}")
    rate = sum(r.images_per_s for r in result.history[-3:]) / max(len(result.history[-3:]), 1)
    table.add_row("time", f"{t['seconds']:.1f} s on {t['device']}, {rate:,.0f} img/s")
    console.print(table)


@cli.command("train")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_MODEL,
    show_default=True,
    help="Model file to write.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing model file.")
@click.option(
    "--arch", default="conv", show_default=True, help=f"Architecture: {', '.join(list_models())}."
)
@click.option("--latent-dim", type=click.IntRange(1), default=16, show_default=True)
@click.option(
    "--epochs",
    type=click.IntRange(1),
    default=None,
    help="Epochs [default: auto, about 1000 optimizer steps, 30 to 300 epochs].",
)
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Adam learning rate.")
@click.option(
    "--val-split",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.1,
    show_default=True,
    help="Held-out share of the images for early stopping and threshold statistics.",
)
@click.option(
    "--patience",
    type=click.IntRange(0),
    default=None,
    help="Stop after this many epochs without validation improvement "
    "[default: auto, about 150 optimizer steps, 10 to 50 epochs; 0: never].",
)
@click.option(
    "--lr-schedule",
    type=click.Choice(["constant", "cosine"]),
    default="constant",
    show_default=True,
    help="cosine: decay the learning rate towards 0 over the epochs.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--loss", type=click.Choice(["mse", "bce", "ssim"]), default="mse", show_default=True)
@click.option(
    "--noise", default=None, help="Denoising: gaussian:SIGMA[-MAX] | mask:P | saltpepper:P."
)
@click.option("--sparsity", default=None, help="KL sparsity penalty BETA[:RHO] on the latent.")
@click.option(
    "--contractive", type=click.FloatRange(0), default=0.0, help="Contractive penalty weight."
)
@click.option(
    "--image-size", default=None, help="N or HxW (default: the images' common size, else 64x64)."
)
@click.option(
    "--channels", type=click.Choice(["1", "3"]), default=None, help="Force grayscale or RGB."
)
@click.option(
    "--resize", type=click.Choice(["stretch", "crop"]), default="stretch", show_default=True
)
@click.option(
    "--alpha-background",
    type=click.Choice(["black", "white"]),
    default="black",
    show_default=True,
    help="Background for transparent pixels.",
)
@click.option(
    "--patch-size",
    type=click.IntRange(8),
    default=None,
    help="Train on random square patches of native-size images (fully convolutional archs).",
)
@click.option("--patches-per-epoch", type=click.IntRange(1), default=None)
@click.option("--strict", is_flag=True, help="Fail on the first unreadable image.")
@click.option("--resume", is_flag=True, help="Continue the interrupted run stored in --output.")
@click.option(
    "--samples",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write a reconstruction grid per epoch into this folder.",
)
@click.option(
    "--amp/--no-amp",
    default=True,
    show_default=True,
    help="Mixed precision on CUDA: bf16 where supported, else fp16 with a gradient scaler.",
)
@click.option(
    "--compile",
    is_flag=True,
    help="torch.compile the training step's model (slower first epoch; see BENCHMARKS.md).",
)
@click.option(
    "--distributed",
    is_flag=True,
    help="Data-parallel training: re-run this command under torchrun with --nproc processes "
    "(implied when launched by torchrun).",
)
@click.option(
    "--nproc",
    type=click.IntRange(1),
    default=None,
    help="Processes for --distributed (default: one per GPU); implies --distributed.",
)
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
    samples: Path | None,
    quiet: bool,
    distributed: bool,
    nproc: int | None,
    **train_args: Any,
) -> None:
    """Train an autoencoder on folders of normal images; print the model path.

    Multi-GPU / multi-node: ``torchrun --nproc-per-node N -m aetool train ...``
    (or ``--distributed --nproc N`` on one machine) trains with
    DistributedDataParallel; rank 0 reports, writes the model and prints its path.
    """
    if (distributed or nproc) and not launched_by_torchrun():
        _relaunch_under_torchrun(click.get_current_context(), nproc, train_args["device"])
        return
    rank = int(os.environ.get("RANK", "0")) if launched_by_torchrun() else 0
    if launched_by_torchrun():  # train() joins the process group; leave it on the way out
        click.get_current_context().call_on_close(dist_teardown)
    console = make_err_console(quiet or rank != 0)
    if not resume:
        _refuse_existing(output, overwrite)
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
        [RichTrainProgress(console, cfg.epochs)] + ([SampleGrids(samples)] if samples else []),
        resume_from=output if resume else None,
    )
    if rank != 0:
        return  # rank 0 writes the model file and prints its path
    result.metadata["training"]["data"] = [str(p.resolve()) for p in inputs]
    path = result.save(output)
    n_val = result.metadata["training"]["val_count"]
    if n_val < MIN_THRESHOLD_VAL:
        console.print(
            f"[yellow]warning:[/] only {n_val} validation image(s): `score --threshold auto` "
            f"rests on them; use a larger --val-split or more images for a steadier threshold"
        )
    _train_summary(console, result, path)
    click.echo(str(path))
    if result.interrupted:
        console.print(
            f"Interrupted: saved a resumable model; continue with "
            f"`aetool train {' '.join(map(str, inputs))} -o {output} --resume`"
        )
        sys.exit(130)


def _relaunch_under_torchrun(ctx: click.Context, nproc: int | None, device: str) -> None:
    """Run this ``train`` command again under torchrun; pass on its stdout and exit status."""
    import subprocess

    import torch

    if nproc is None:
        if device == "cpu" or not torch.cuda.is_available():
            raise click.UsageError("--distributed without a GPU needs --nproc N (processes)")
        nproc = torch.cuda.device_count()
    cmd = torchrun_command(nproc, ["train", *_command_args(ctx, skip={"distributed", "nproc"})])
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    click.echo(proc.stdout, nl=False)
    if proc.returncode:
        sys.exit(proc.returncode)


def _command_args(ctx: click.Context, skip: set[str]) -> list[str]:
    """Rebuild a command line from the parameters given (not those left at their defaults)."""
    from click.core import ParameterSource

    opts: list[str] = []
    args: list[str] = []
    for p in ctx.command.params:
        if p.name is None or p.name in skip:
            continue
        value = ctx.params.get(p.name)
        if isinstance(p, click.Argument):
            args += [str(v) for v in (value if p.nargs != 1 else [value])]
            continue
        source = ctx.get_parameter_source(p.name)
        if value is None or source in (None, ParameterSource.DEFAULT):
            continue
        if not isinstance(p, click.Option):
            continue
        name = max(p.opts, key=len)
        if p.is_flag:
            off = max(p.secondary_opts, key=len) if p.secondary_opts else None
            flag = name if value else off
            opts += [flag] if flag else []
        else:
            for v in value if p.multiple else [value]:
                opts += [name, str(v)]
    return [*opts, "--", *args]


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
            images = load_images(
                inputs, progress=lambda d, n: prog.update(task, completed=d, total=n), **kwargs
            )
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
        init = t.get("init")
        while isinstance(init, dict):  # fine-tuned: the runs it started from, newest first
            first = init.get("training")
            first = first if isinstance(first, dict) else {}
            secs = first.get("seconds")
            secs = f"{secs:.1f} s" if isinstance(secs, (int, float)) else "? s"
            table.add_row("started from", f"{init.get('file')} (sha256 "
                          f"{str(init.get('sha256'))[:12]}...): {first.get('steps', '?')} steps, "
                          f"{secs} on {first.get('device')}")  # fmt: skip
            init = first.get("init")
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
    """Run the whole toolkit on scikit-learn's handwritten digits (no arguments needed).

    Writes the digits as PNG files into DIRECTORY (default ./aetool-demo), trains,
    exports, denoises, scores and writes an HTML report there; prints the report's path.
    """
    from aetool.demo import run_demo

    console = make_err_console(quiet)
    summary = run_demo(
        directory, console=console, device=device, epochs=epochs, progress=RichTrainProgress
    )
    table = Table(title="aetool demo: what was produced", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in summary.items():
        table.add_row(key, str(value))
    console.print(table)
    console.print(f"Open {directory / 'report.html'} in a browser to see it all.")
    click.echo(str(directory / "report.html"))


# ---------------------------------------------------------------------------
# score


def _stdin_is_terminal() -> bool:
    """Whether stdin is an interactive terminal (tests monkeypatch this)."""
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def _score_threshold_option(ctx: click.Context, param: click.Parameter, value: str) -> Any:
    from aetool.anomaly.scores import parse_threshold

    try:
        return parse_threshold(value)
    except AetoolError as exc:
        raise click.BadParameter(str(exc)) from None


def _shard_option(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    from aetool.data.shards import parse_shard

    try:
        return parse_shard(value)
    except AetoolError as exc:
        raise click.BadParameter(str(exc)) from None


def _input_paths(inputs: tuple[str, ...], command: str = "score") -> list[str]:
    """INPUTs, with ``-`` (or no INPUT and piped stdin) read as newline-separated paths."""
    from aetool.data.inputs import read_path_list

    if not inputs:
        if _stdin_is_terminal():
            raise click.UsageError(
                f"pass image files or folders (for example `aetool {command} images/`), "
                f"or pipe newline-separated paths: `find images/ -name '*.png' | aetool {command}`"
            )
        inputs = ("-",)
    if inputs.count("-") > 1:
        raise click.UsageError("'-' (paths from stdin) can be given only once")
    out: list[str] = []
    for item in inputs:
        if item == "-":
            paths = read_path_list(sys.stdin)
            if not paths:
                raise click.UsageError("no image paths were read from stdin")
            out.extend(paths)
        else:
            out.append(item)
    return out


def _fmt(value: float | None, spec: str = ".3f") -> str:
    """A number for a summary table; "-" when it is undefined."""
    return "-" if value is None else format(value, spec)


def _score_report_table(console: Any, report: dict[str, Any]) -> None:
    c = report["counts"]
    t = report["threshold"]
    table = Table(title="Scoring summary", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("model", str(report.get("model")))
    score_note = " (clean inputs, denoising model)" if report.get("denoising_model") else ""
    table.add_row("score", f"{report['score_kind']}{score_note}")
    images = f"{c['scored']} scored, {c['unreadable']} unreadable"
    if c.get("missing"):
        images += f" (of which {c['missing']} missing)"
    if report.get("shard"):
        images += f"; shard {report['shard']} of {c.get('found')} images found"
    if c.get("excluded_masks"):
        images += f"; {c['excluded_masks']} ground_truth mask files not scored"
    table.add_row("images", images)
    table.add_row("threshold", f"{t['value']:.6g} ({t['rule']}) decides is_anomaly")
    pct = 100 * c["anomalies"] / c["scored"] if c["scored"] else 0.0
    table.add_row("flagged", f"{c['anomalies']} anomalous ({pct:.1f}%), {c['normal']} normal")
    lab = report["labels"]
    m = report.get("metrics")
    if m:
        table.add_row(
            "labels",
            f"{lab['normal']} normal, {lab['anomalous']} anomalous from the {lab['source']}"
            + (f", {c['scored'] - lab['known']} unknown" if c["scored"] - lab["known"] else ""),
        )
        table.add_row("ROC AUC / AP", f"{_fmt(m['roc_auc'])} / {_fmt(m['average_precision'])}")
        table.add_row(
            "at threshold",
            f"F1 {_fmt(m['f1'])}, precision {_fmt(m['precision'])}, recall {_fmt(m['recall'])}",
        )
        cm = m["confusion"]
        table.add_row(
            "confusion",
            f"TN {cm['tn']}  FP {cm['fp']}  FN {cm['fn']}  TP {cm['tp']}  (label x flag)",
        )
        b = report.get("best_f1")
        if b:
            bm = b["metrics"]
            table.add_row(
                "F1-optimal",
                f"{b['value']:.6g}: F1 {_fmt(bm['f1'])}, precision "
                f"{_fmt(bm['precision'])}, recall {_fmt(bm['recall'])} "
                "(reported only; the threshold above decides)",
            )
    px = report.get("pixel")
    if px:
        table.add_row(
            "pixel ROC AUC",
            f"{_fmt(px['roc_auc'])} ({px['images_with_masks']} masks, "
            f"{px['images']} images, {px['map']} maps)",
        )
    console.print(table)


@cli.command("score")
@click.argument("inputs", nargs=-1, type=str)
@model_option
@click.option(
    "--score",
    "score_kind",
    type=click.Choice(["mse", "ssim", "max-local"]),
    default="mse",
    show_default=True,
    help="mse: mean squared error in [0,1] pixel units; ssim: 1 - mean SSIM; "
    "max-local: max of the 5x5-smoothed squared-error map.",
)
@click.option(
    "-t",
    "--threshold",
    default="auto",
    show_default=True,
    callback=_score_threshold_option,
    help="auto (median + 4*1.4826*MAD of the model's validation scores), a number, "
    "a validation percentile such as p99.5, or mean + K std such as 3sigma.",
)
@click.option(
    "-f",
    "--format",
    "fmt",
    type=click.Choice(["csv", "jsonl", "table"]),
    default="csv",
    show_default=True,
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the summary report as JSON to this file.",
)
@click.option(
    "--fail-on-anomaly", is_flag=True, help="Exit with status 3 when any image is flagged."
)
@click.option(
    "--heatmaps",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write an error-map overlay PNG per image here, mirroring the input paths.",
)
@click.option(
    "--labels",
    "labels_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="CSV with path,label columns; replaces labels from the folder layout.",
)
@click.option(
    "--masks",
    "masks_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder of ground-truth masks mirroring the images (default: MVTec ground_truth/).",
)
@click.option(
    "--shard", default=None, callback=_shard_option, help="Score only shard I of N (I/N)."
)
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--strict", is_flag=True, help="Fail on the first unreadable or missing file.")
@common_options
def score_cmd(
    inputs: tuple[str, ...],
    model: Path | None,
    score_kind: str,
    threshold: Any,
    fmt: str,
    report_path: Path | None,
    fail_on_anomaly: bool,
    heatmaps: Path | None,
    labels_path: Path | None,
    masks_dir: Path | None,
    shard: tuple[int, int] | None,
    batch_size: int,
    strict: bool,
    quiet: bool,
    device: str,
) -> None:
    """Score images for anomalies; one row per image on stdout.

    INPUTs are image files and folders (recursive). `-`, or piped stdin with no
    INPUT, reads newline-separated paths:

        find new/ -name '*.png' | aetool score --threshold auto

    Columns: path, score, threshold, is_anomaly (score > threshold),
    percentile (rank among the model's validation scores), label (when known
    from the folder layout or --labels), error (why a file could not be
    scored; its score is empty), score_kind, rule (how the threshold was set).
    Labels from folders: images under good/normal/ok are 0, their sibling
    folders 1 (MVTec-AD, anomalib Folder). The report goes to stderr.
    """
    from aetool.anomaly.pipeline import score_images
    from aetool.anomaly.scores import read_labels_csv
    from aetool.devices import resolve_device
    from aetool.files import atomic_path
    from aetool.models.file import load_model
    from aetool.rows import RowWriter

    console = make_err_console(quiet)
    paths = _input_paths(inputs)
    dev = resolve_device(device)
    loaded = load_model(model or _default_model(), device=dev)
    labels = read_labels_csv(labels_path) if labels_path is not None else None
    warned = [0]

    def warn(path: str, reason: str) -> None:
        warned[0] += 1
        if warned[0] <= 10:
            console.print(f"[yellow]warning:[/] cannot score {path}: {reason}")
        elif warned[0] == 11:
            console.print("[yellow]warning:[/] more unreadable files; see the summary")

    live = console.is_terminal and not console.quiet
    prog = (
        Progress(
            TextColumn("scoring"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            redirect_stdout=False,
            redirect_stderr=False,
            transient=True,
        )  # fmt: skip
        if live
        else None
    )
    task = prog.add_task("score", total=None) if prog else None

    def progress(done: int, total: int) -> None:
        if prog is not None and task is not None:
            prog.update(task, completed=done, total=total)

    run = score_images(
        paths,
        loaded,
        score_kind=score_kind,
        threshold=threshold,
        labels=labels,
        batch_size=batch_size,
        device=dev,
        shard=shard,
        heatmap_dir=heatmaps,
        masks_dir=masks_dir,
        strict=strict,
        progress=progress,
        warn=warn,
    )
    writer = RowWriter(fmt, sys.stdout)
    with_label = run.columns_with_label
    if prog is not None:
        prog.start()
    try:
        for row in run:
            writer.write(row.as_dict(with_label=with_label, with_info=True))
    finally:
        if prog is not None:
            prog.stop()
        run.close()
    writer.close()
    report = run.summary.report()
    if report_path is not None:
        with atomic_path(report_path) as tmp:
            tmp.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    _score_report_table(console, report)
    if report["counts"]["scored"] == 0:
        raise click.ClickException(
            f"none of the {report['counts']['rows']} inputs could be scored (see the error column)"
        )
    if fail_on_anomaly and report["counts"]["anomalies"]:
        sys.exit(3)
    _exit_partial(console, report["counts"]["unreadable"], "scored", "scored")


# ---------------------------------------------------------------------------
# denoise, export, interpolate, latent-map


def _refs_and_shard(console: Any, paths: list[str], shard: Any, strict: bool) -> Any:
    """Expand paths into image refs (all of them, then one shard); warn about missing paths."""
    from aetool.data.inputs import find_images
    from aetool.data.shards import missing_in_shard, select_shard
    from aetool.errors import ImageError, NoImagesError

    spec = shard
    refs, missing = find_images(paths, missing_ok=True)
    missing = missing_in_shard(missing, spec)  # each missing path counts in one shard only
    if missing and strict:
        raise ImageError(f"{missing[0].path}: {missing[0].reason}")
    _warn_skipped(console, missing)
    if not refs:
        raise NoImagesError(f"no image files found in {', '.join(paths[:3])}")
    return refs, list(select_shard(refs, spec)), missing


class _ItemProgress:
    """A rich bar on a terminal (nothing otherwise), advanced once per item."""

    def __init__(self, console: Any, total: int, label: str) -> None:
        self.progress: Progress | None = None
        if console.is_terminal and not console.quiet:
            self.progress = Progress(
                TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TimeRemainingColumn(), console=console, redirect_stdout=False,
                redirect_stderr=False, transient=True,
            )  # fmt: skip
            self.task = self.progress.add_task(label, total=total)

    def __enter__(self) -> _ItemProgress:
        if self.progress:
            self.progress.start()
        return self

    def advance(self, n: int = 1) -> None:
        if self.progress:
            self.progress.advance(self.task, n)

    def __exit__(self, *exc: object) -> None:
        if self.progress:
            self.progress.stop()


def _load_model_arg(console: Any, model: Path | None, device: str) -> Any:
    from aetool.devices import resolve_device
    from aetool.models.file import load_model

    return load_model(model or _default_model(), device=resolve_device(device))


def _png_output(path: Path) -> Path:
    """-o of a picture command: a .png file name (the picture is always PNG)."""
    if path.suffix.lower() != ".png":
        raise click.BadParameter(f"{path}: the picture is written as PNG; use a .png name")
    return path


@cli.command("denoise", short_help="Denoise images into a folder, keeping formats and modes.")
@click.argument("paths", nargs=-1, required=True, metavar="[INPUT]... OUT")
@click.option(
    "-m",
    "--model",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Model file (default: the bundled grayscale denoiser).",
)
@click.option(
    "--reference",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder of clean originals at the same relative paths: adds PSNR and SSIM columns.",
)
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
@click.option(
    "--tile", type=click.IntRange(8), default=256, show_default=True,
    help="Tile side for fully convolutional models (fixed-size models use their input size).",
)  # fmt: skip
@click.option(
    "--overlap", type=click.IntRange(0), default=32, show_default=True,
    help="Overlap between tiles in pixels (at most half a tile is used).",
)  # fmt: skip
@click.option(
    "--batch-size", type=click.IntRange(1), default=8, show_default=True,
    help="Tiles per forward pass; images of up to batch-size x tile^2 pixels run whole.",
)  # fmt: skip
@click.option(
    "--ensemble", type=click.Choice(["1", "2", "4", "8"]), default="1", show_default=True,
    help="Average over N rotations/flips of each image: N times slower, a little cleaner "
    "for models trained on rotated patches (+0.1 to +0.15 dB PSNR at 8 with the bundled model).",
)  # fmt: skip
@click.option(
    "--refine", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
    help="Refine the model's output by collaborative Wiener filtering of the noisy image "
    "(BM3D's second stage, the model's output as its guide), blended with it, on planes "
    "whose estimated noise is under sigma 30/255: +0.1 to +0.2 dB PSNR on photos at sigma "
    "15 with the bundled model, up to +1 dB on fine texture, about 3x the CPU time. It assumes "
    "Gaussian-like noise; auto: on for models trained on Gaussian noise (the bundled one), "
    "except for JPEGs with subsampled colour, whose noise is correlated.",
)  # fmt: skip
@click.option(
    "--color", type=click.Choice(["auto", "opponent", "channels"]), default="auto",
    show_default=True,
    help="How a grayscale model treats colour images: in an opponent colour space "
    "(luminance + 2 colour differences; cleaner on photos) or R, G, B one by one "
    "(for unrelated channels such as fluorescence stains, and JPEGs with subsampled "
    "colour); auto: channels for such JPEGs, opponent otherwise.",
)  # fmt: skip
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True
)
@click.option(
    "--shard", default=None, metavar="I/N", callback=_shard_option,
    help="Process only shard I of N (disjoint, stable across runs).",
)  # fmt: skip
@click.option("--strict", is_flag=True, help="Fail on the first unreadable or unwritable image.")
@common_options
def denoise_cmd(
    paths: tuple[str, ...],
    model: Path | None,
    reference: Path | None,
    overwrite: bool,
    tile: int,
    overlap: int,
    batch_size: int,
    ensemble: str,
    refine: str,
    color: str,
    fmt: str,
    shard: tuple[int, int] | None,
    strict: bool,
    quiet: bool,
    device: str,
) -> None:
    """Denoise every image under INPUT... and write it to OUT at the same relative path.

    The last argument is the output folder. Inputs are files and folders; `-`,
    or only OUT with paths piped on stdin, reads newline-separated paths.
    Outputs keep the input's format, mode, bit depth, alpha and size (JPEG
    and lossy WebP at quality 95). Existing outputs are left alone unless
    --overwrite (reported with status `exists`). OUT may not be, contain or
    lie inside an input folder.

    stdout: one row per image: src, dst, sigma_est (estimated noise standard
    deviation of the input, in [0, 1] units: x255 for 8-bit levels), with
    --reference psnr_in, psnr_out, ssim_in, ssim_out, then status
    (written | exists | error) and error.
    """
    from aetool.denoise.pipeline import DenoiseSummary, denoise_images
    from aetool.rows import RowWriter

    if overlap >= tile:
        raise click.UsageError(f"--overlap ({overlap}) must be smaller than --tile ({tile})")
    *inputs, out_dir = paths
    console = make_err_console(quiet)
    if out_dir == "-":
        raise click.UsageError("the last argument is the output folder; `-` cannot be one")
    in_paths = _input_paths(tuple(inputs), "denoise")
    all_refs, refs, missing = _refs_and_shard(console, in_paths, shard, strict)
    from aetool.files import check_output_dir

    check_output_dir(out_dir, in_paths)
    if model is not None:
        for line in _denoiser_doubts(model):
            console.print(f"[yellow]warning:[/] {line}")
    results = denoise_images(
        refs, out_dir, model, overwrite=overwrite, reference=reference, tile=tile,
        overlap=overlap, batch_size=batch_size, device=device, strict=strict,
        ensemble=int(ensemble), color=color,
        refine={"on": True, "off": False}.get(refine, "auto"),
    )  # fmt: skip
    writer = RowWriter(fmt, sys.stdout)
    summary = DenoiseSummary()
    warned = 0
    t0 = time.perf_counter()
    with _ItemProgress(console, len(refs), "denoising") as bar:
        for r in results:
            summary.add(r)
            row: dict[str, Any] = {
                "src": str(r.ref.path),
                "dst": "" if r.dst is None else str(r.dst),
                "sigma_est": r.sigma_est,
            }
            if reference is not None:
                row.update(psnr_in=r.psnr_in, psnr_out=r.psnr_out, ssim_in=r.ssim_in,
                           ssim_out=r.ssim_out)  # fmt: skip
            row.update(status=r.status, error=r.error or "")
            writer.write(row)
            if r.error and warned < 10:
                what = "not overwritten" if r.status == "exists" else r.error
                where = r.dst if r.status == "exists" else r.ref.path
                console.print(f"[yellow]warning:[/] {where}: {what}")
                warned += 1
            bar.advance()
    writer.close()
    seconds = time.perf_counter() - t0
    problems = summary.exists + summary.errors + summary.missing_reference
    if warned < problems:
        console.print(
            f"[yellow]warning:[/] ... and {problems - warned} more (see the status column)"
        )
    table = Table(title="Denoising summary", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    shard_note = f" (shard {shard[0]}/{shard[1]} of {len(all_refs)} found)" if shard else ""
    table.add_row("images", f"{len(refs)}{shard_note}")
    table.add_row("written", f"{summary.written} to {out_dir}")
    if summary.exists:
        table.add_row("not overwritten", f"{summary.exists} existing output(s); use --overwrite")
    if summary.errors or missing:
        table.add_row("errors", f"{summary.errors + len(missing)} unreadable or unwritable")
    if summary.refined:
        table.add_row("refined", f"{summary.refined} of {summary.written} (--refine off: skip)")
    sigma = summary.mean("sigma_est")
    if sigma is not None:
        table.add_row("noise (sigma_est)", f"mean {sigma:.4f} (x255: {sigma * 255:.1f})")
    if reference is not None:
        table.add_row("PSNR (dB)", f"{_fmt(summary.mean('psnr_in'), '.2f')} -> "
                      f"{_fmt(summary.mean('psnr_out'), '.2f')} (mean over "
                      f"{summary.counts.get('psnr_in', 0)} with a reference)")  # fmt: skip
        table.add_row("SSIM", f"{_fmt(summary.mean('ssim_in'), '.4f')} -> "
                      f"{_fmt(summary.mean('ssim_out'), '.4f')}")  # fmt: skip
        if summary.missing_reference:
            table.add_row("no reference", f"{summary.missing_reference} image(s)")
    rate = summary.written / seconds if seconds > 0 else 0.0
    extra = f", ensemble {ensemble}" if ensemble != "1" else ""
    table.add_row(
        "time", f"{seconds:.1f} s, {rate:,.1f} images/s on {resolve_device(device)}{extra}"
    )
    console.print(table)
    if summary.written == 0 and summary.errors and not summary.exists:
        raise click.ClickException("no image could be denoised")
    _exit_partial(console, summary.errors + len(missing), "denoised", "written")


def _exit_partial(console: Any, failed: int, verb: str, others: str) -> None:
    """Exit with EXIT_PARTIAL, after a one-line warning, when some inputs failed."""
    if failed:
        console.print(
            f"[yellow]warning:[/] {failed} input(s) could not be {verb} (exit code "
            f"{EXIT_PARTIAL}; the others were {others})"
        )
        sys.exit(EXIT_PARTIAL)


def _denoiser_doubts(path: Path) -> list[str]:
    """Why a model file may not be a denoiser (it still runs: its output is a reconstruction)."""
    from aetool.models.file import read_metadata

    meta = read_metadata(path)
    out = []
    training = meta.get("training")
    if training:  # recorded by `aetool train`: its --noise (absent or "none" without one)
        no_noise = str(training.get("noise") or "none").lower() == "none"
    else:  # saved from Python without a record: only the denoiser architecture is one
        no_noise = meta.get("arch") != "denoiser"
    if no_noise:
        out.append(
            f"{path} was trained without input noise: it is not a denoiser, and its output is "
            "its reconstruction of each image (often blurrier, not cleaner); train one with "
            "`aetool train DIR --noise gaussian:0.02-0.2`, or leave out --model for the "
            "bundled denoiser"
        )
    args = meta.get("arch_args") or {}
    h, w = int(args.get("height", 0) or 0), int(args.get("width", 0) or 0)
    if meta.get("arch") in ("conv", "dense") and 0 < min(h, w) < 32:
        out.append(
            f"{path} takes fixed {w}x{h} inputs: larger images are cut into {w}x{h} tiles, "
            "each reconstructed on its own"
        )
    return out


def _npy_index_path(output: Path) -> Path:
    stem = output.name[:-4] if output.name.lower().endswith(".npy") else output.name
    return output.with_name(stem + ".paths.csv")


@cli.command("export", short_help="Write each image's latent code (CSV, JSONL or NPY).")
@click.argument("inputs", nargs=-1)
@model_option
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to this file instead of stdout (required for npy).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "jsonl", "npy"]),
    default="csv",
    show_default=True,
    help="npy writes an (N, k) float32 array to -o and its rows' paths to a sibling .paths.csv.",
)
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option(
    "--shard", default=None, metavar="I/N", callback=_shard_option,
    help="Process only shard I of N (disjoint, stable across runs).",
)  # fmt: skip
@click.option("--strict", is_flag=True, help="Fail on the first unreadable image.")
@common_options
def export_cmd(
    inputs: tuple[str, ...],
    model: Path | None,
    output: Path | None,
    fmt: str,
    overwrite: bool,
    batch_size: int,
    shard: tuple[int, int] | None,
    strict: bool,
    quiet: bool,
    device: str,
) -> None:
    """Encode images to latent codes: one row per image, `path,z0,...,z{k-1}`.

    A `label` column is added when the folder layout gives labels (a folder
    named good/normal/ok gives 0, its sibling folders 1). Rows stream to
    stdout unless -o is given. INPUT is files and folders; `-`, or no
    arguments with piped stdin, reads newline-separated paths. The model
    needs a vector latent (conv or dense).
    """
    from aetool.anomaly.scores import infer_labels
    from aetool.latents import encode_latents, require_vector_latent
    from aetool.rows import RowWriter

    if fmt == "npy" and output is None:
        raise click.UsageError(
            "--format npy needs -o FILE.npy (binary output is not written to stdout)"
        )
    if output is not None:
        _refuse_existing(output, overwrite)
        if fmt == "npy":
            _refuse_existing(_npy_index_path(output), overwrite)
    console = make_err_console(quiet)
    loaded = _load_model_arg(console, model, device)
    require_vector_latent(loaded, "export")
    paths = _input_paths(inputs, "export")
    all_refs, refs, missing = _refs_and_shard(console, paths, shard, strict)
    if output is not None:
        outs = [output, _npy_index_path(output)] if fmt == "npy" else [output]
        _refuse_input_as_output(outs, (r.path for r in all_refs))
    labels_all = infer_labels([r.relpath for r in all_refs])
    has_labels = any(v is not None for v in labels_all)
    label_of = dict(zip((r.path for r in all_refs), labels_all, strict=True))
    failed: list[Any] = []
    codes: list[Any] = []
    index: list[dict[str, Any]] = []

    def on_error(ref: Any, reason: str) -> None:
        failed.append(ref)
        if len(failed) <= 10:
            console.print(f"[yellow]warning:[/] skipped {ref.path}: {reason}")

    from aetool.files import atomic_path

    def run(writer: Any) -> int:
        k = 0
        with _ItemProgress(console, len(refs), "encoding") as bar:
            for ref, z in encode_latents(
                loaded, refs, batch_size=batch_size, strict=strict, on_error=on_error
            ):
                k = len(z)
                if writer is None:
                    codes.append(z)
                    entry: dict[str, Any] = {"path": str(ref.path)}
                    if has_labels:
                        entry["label"] = label_of[ref.path]
                    index.append(entry)
                else:
                    row: dict[str, Any] = {"path": str(ref.path)}
                    row.update({f"z{i}": float(v) for i, v in enumerate(z)})
                    if has_labels:
                        row["label"] = label_of[ref.path]
                    writer.write(row)
                bar.advance()
        if writer is not None and writer.columns is None and writer.fmt == "csv":
            # No rows (an empty shard): still give CSV readers the header.
            k = int(loaded.model.arch_args().get("latent_dim", 0))
            cols = ["path", *(f"z{i}" for i in range(k))] + (["label"] if has_labels else [])
            writer.stream.write(",".join(cols) + "\n")
        return k

    if output is None:
        k = run(RowWriter(fmt, sys.stdout))
    elif fmt == "npy":
        import numpy as np

        k = run(None)
        arr = np.stack(codes).astype(np.float32) if codes else np.zeros((0, k), np.float32)
        with atomic_path(output) as tmp, open(tmp, "wb") as f:
            np.save(f, arr)
        index_path = _npy_index_path(output)
        with atomic_path(index_path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            w = RowWriter("csv", f)
            for entry in index:
                w.write(entry)
            if not index:
                f.write("path,label\n" if has_labels else "path\n")
        click.echo(str(output))
        click.echo(str(index_path))
    else:
        with atomic_path(output) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            k = run(RowWriter(fmt, f))
        click.echo(str(output))
    n = len(refs) - len(failed)
    if len(failed) > 10:
        console.print(f"[yellow]warning:[/] ... and {len(failed) - 10} more unreadable files")
    where = f" to {output}" if output else ""
    console.print(
        f"Exported {n} latent code(s) of dimension {k}{where}"
        + (
            f"; {len(failed) + len(missing)} unreadable or missing skipped"
            if failed or missing
            else ""
        )
        + (f" (shard {shard[0]}/{shard[1]} of {len(all_refs)} images)" if shard else "")
    )
    if n == 0 and refs:
        raise click.ClickException("no image could be encoded")
    _exit_partial(console, len(failed) + len(missing), "encoded", "exported")


@cli.command("interpolate", short_help="Decode the straight line between two images' codes.")
@click.argument("a", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("b", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@model_option
@click.option(
    "--steps", type=click.IntRange(2, 256), default=7, show_default=True,
    help="Frames, endpoints included (2-256).",
)  # fmt: skip
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default="interpolation.png",
    show_default=True,
    callback=lambda ctx, param, value: _png_output(value),
)
@click.option(
    "--min-height", type=click.IntRange(1), default=64, show_default=True,
    help="Enlarge small images (nearest neighbour) to at least this height.",
)  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@common_options
def interpolate_cmd(
    a: Path,
    b: Path,
    model: Path | None,
    steps: int,
    output: Path,
    min_height: int,
    overwrite: bool,
    quiet: bool,
    device: str,
) -> None:
    """Encode images A and B, decode evenly spaced points between their codes, write a PNG strip.

    The first frame is the reconstruction of A, the last that of B. Prints the
    PNG's path.
    """
    from aetool.files import atomic_path
    from aetool.latents import interpolate, strip_image

    _refuse_existing(output, overwrite)
    _refuse_input_as_output([output], [a, b])
    console = make_err_console(quiet)
    loaded = _load_model_arg(console, model, device)
    frames = interpolate(loaded, a, b, steps)
    img = strip_image(frames, min_height=min_height)
    with atomic_path(output) as tmp:
        img.save(tmp, format="PNG")
    console.print(f"Wrote {steps} frames ({img.width}x{img.height} px) from {a} to {b}")
    click.echo(str(output))


@cli.command("latent-map", short_help="Scatter plot of latent codes coloured by folder label.")
@click.argument("inputs", nargs=-1)
@model_option
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default="latent-map.png",
    show_default=True,
    callback=lambda ctx, param, value: _png_output(value),
)
@click.option("--title", default=None, help="Plot title (default: the model file name).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--strict", is_flag=True, help="Fail on the first unreadable image.")
@common_options
def latent_map_cmd(
    inputs: tuple[str, ...],
    model: Path | None,
    output: Path,
    title: str | None,
    overwrite: bool,
    batch_size: int,
    strict: bool,
    quiet: bool,
    device: str,
) -> None:
    """Plot the latent codes of images in 2-D (wider codes projected with PCA).

    Points are coloured by folder: normal/anomaly when the layout has a
    good/normal/ok folder, else by each image's first folder under its
    input (for example the digit of `digits/3/0001.png`). Prints the PNG's path.
    """
    import numpy as np

    from aetool.data.inputs import Skipped
    from aetool.files import atomic_path
    from aetool.latents import encode_latents, folder_labels, latent_map, require_vector_latent

    _refuse_existing(output, overwrite)
    console = make_err_console(quiet)
    loaded = _load_model_arg(console, model, device)
    require_vector_latent(loaded, "latent-map")
    paths = _input_paths(inputs, "latent-map")
    _, refs, missing = _refs_and_shard(console, paths, None, strict)
    _refuse_input_as_output([output], (r.path for r in refs))
    labels_all = folder_labels([r.relpath for r in refs])
    label_of = dict(zip((r.path for r in refs), labels_all, strict=True))
    skipped: list[Any] = []
    codes: list[Any] = []
    labels: list[Any] = []
    with _ItemProgress(console, len(refs), "encoding") as bar:
        for ref, z in encode_latents(
            loaded, refs, batch_size=batch_size, strict=strict,
            on_error=lambda r, why: skipped.append((r, why)),
        ):  # fmt: skip
            codes.append(z)
            labels.append(label_of[ref.path])
            bar.advance()
    _warn_skipped(console, [Skipped(str(r.path), why) for r, why in skipped])
    if not codes:
        raise click.ClickException("no image could be encoded")
    png = latent_map(np.stack(codes), labels, title or f"Latent space of {loaded.path.name}")
    with atomic_path(output) as tmp:
        tmp.write_bytes(png)
    console.print(f"Mapped {len(codes)} latent code(s) of dimension {len(codes[0])}")
    click.echo(str(output))
    _exit_partial(console, len(skipped) + len(missing), "encoded", "mapped")


# ---------------------------------------------------------------------------
# report


@cli.command("report")
@click.argument("inputs", nargs=-1)
@model_option
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default="report.html",
    show_default=True,
    help="The HTML file to write.",
)
@click.option(
    "--png-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Also write every plot as a PNG file into this folder.",
)
@click.option(
    "--score",
    "score_kind",
    type=click.Choice(["mse", "ssim", "max-local"]),
    default="mse",
    show_default=True,
)
@click.option(
    "-t",
    "--threshold",
    default="auto",
    show_default=True,
    help="As for `aetool score`: auto, a number, pNN or Ksigma.",
)
@click.option(
    "--labels",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="CSV with path,label columns; replaces labels from the folder layout.",
)
@click.option(
    "--top-n",
    type=click.IntRange(1, 100),
    default=8,
    show_default=True,
    help="How many most-anomalous and most-normal images to show.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing report file.")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@common_options
def report_cmd(
    inputs: tuple[str, ...],
    model: Path | None,
    output: Path,
    png_dir: Path | None,
    score_kind: str,
    threshold: str,
    labels: Path | None,
    top_n: int,
    overwrite: bool,
    batch_size: int,
    quiet: bool,
    device: str,
) -> None:
    """Write ONE self-contained HTML report: model, reconstructions, scores, extremes, latents.

    Images are embedded; the file references nothing outside itself. Prints
    the report's path.
    """
    from aetool.anomaly.scores import read_labels_csv
    from aetool.models.file import load_model
    from aetool.report.collect import build_report
    from aetool.report.html import write_report

    console = make_err_console(quiet)
    _refuse_existing(output, overwrite)
    paths = _input_paths(inputs, "report")
    loaded = load_model(model or _default_model())
    data = build_report(
        paths, loaded, score_kind=score_kind, threshold=threshold,
        labels=read_labels_csv(labels) if labels else None, top_n=top_n,
        batch_size=batch_size, device=device,
        warn=lambda p, r: console.print(f"[yellow]warning:[/] skipped {p}: {r}"),
    )  # fmt: skip
    written = write_report(data, output, png_dir=png_dir)
    n_flagged = int((data.scores > data.threshold).sum()) if data.scores is not None else 0
    console.print(
        f"Report on {len(data.paths)} images ({n_flagged} flagged at {data.threshold:.5g}, "
        f"{data.threshold_rule}) written to {written[0]}"
        + (f"; {len(written) - 1} PNG plots in {png_dir}" if png_dir else "")
    )
    click.echo(str(written[0]))


def _refuse_existing(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise click.UsageError(
            f"{path} exists; pass --overwrite to replace it, or -o to write elsewhere"
        )
