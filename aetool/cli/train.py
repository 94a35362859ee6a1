"""``aetool train``: train an autoencoder on folders of normal images."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from aetool.cli.options import (
    DEFAULT_MODEL,
    batch_size_option,
    check_positive,
    common_options,
    overwrite_option,
    refuse_existing,
    strict_option,
    usage_check,
)

if TYPE_CHECKING:
    from rich.console import Console

    from aetool.data.cache import ImageSet
    from aetool.training.config import TrainConfig
    from aetool.training.record import TrainResult

#: Fewer validation images than this make data-driven thresholds rough (BENCHMARKS.md).
MIN_THRESHOLD_VAL = 20

#: The built-in architectures, named here so that `--help` need not import torch to list
#: them (a test checks this against the registry).
ARCHITECTURES = ("conv", "denoiser", "dense", "draem")


@click.command("train", short_help="Train an autoencoder on folders of normal images.")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_MODEL,
    show_default=True,
    help="Model file to write.",
)
@overwrite_option("Replace an existing model file.")
@click.option(
    "--arch",
    type=click.Choice(("auto", *ARCHITECTURES)),
    default="auto",
    show_default=True,
    help=f"Architecture: auto, {', '.join(ARCHITECTURES)}. auto: draem for images whose "
    "short side is 128 px or more, else conv (README: choosing a model).",
)
@click.option(
    "--time-budget",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Minutes of training after which the run ends [default: 10 for draem, none for "
    "the autoencoders].",
)
@click.option(
    "--anomaly-source",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="draem: a folder of any images whose content fills some simulated defects.",
)
@click.option("--latent-dim", type=click.IntRange(1), default=16, show_default=True)
@click.option(
    "--epochs",
    type=click.IntRange(1),
    default=None,
    help="Epochs [default: auto, about 1000 optimizer steps, 30 to 300 epochs].",
)
@batch_size_option()
@click.option(
    "--lr", type=float, default=1e-3, show_default=True, callback=check_positive,
    help="Adam learning rate.",
)  # fmt: skip
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
    "--noise", default=None, callback=usage_check("aetool.training.noise:parse_noise"),
    help="Denoising: gaussian:SIGMA[-MAX] | mask:P | saltpepper:P.",
)  # fmt: skip
@click.option(
    "--sparsity", default=None, callback=usage_check("aetool.training.config:parse_sparsity"),
    help="KL sparsity penalty BETA[:RHO] on the latent.",
)  # fmt: skip
@click.option(
    "--contractive", type=click.FloatRange(0), default=0.0, help="Contractive penalty weight."
)
@click.option(
    "--image-size", default=None, callback=usage_check("aetool.data.decode:parse_size"),
    help="N or HxW (default: the images' common size, else 64x64).",
)  # fmt: skip
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
@click.option(
    "--patches-per-epoch",
    type=click.IntRange(1),
    default=None,
    help="With --patch-size: random patches drawn per epoch [default: one per image].",
)
@strict_option()
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
    time_budget: float | None,
    anomaly_source: Path | None,
    **train_args: Any,
) -> None:
    """Train an autoencoder on folders of normal images; print the model path.

    Multi-GPU / multi-node: `torchrun --nproc-per-node N -m aetool train ...`
    (or --distributed --nproc N on one machine) trains with
    DistributedDataParallel; rank 0 reports, writes the model and prints its path.

    Examples:

    \b
        aetool train mvtec/bottle/train/good -o bottle.safetensors
        aetool train good/ --image-size 128 --epochs 100
        aetool train photos/ --arch denoiser --noise gaussian:0.1 --patch-size 64
        aetool info bottle.safetensors --config > train.toml
        aetool train --config train.toml -o again.safetensors
    """
    from aetool.cli.console import RichTrainProgress, make_err_console, plain, warn
    from aetool.cli.tables import print_train_summary
    from aetool.errors import ConfigError
    from aetool.files import check_output, display
    from aetool.models.registry import ModelConfig
    from aetool.training.callbacks import SampleGrids
    from aetool.training.config import TrainConfig
    from aetool.training.distributed import launched_by_torchrun
    from aetool.training.distributed import teardown as dist_teardown
    from aetool.training.loop import train

    if (distributed or nproc) and not launched_by_torchrun():
        _relaunch_under_torchrun(click.get_current_context(), nproc, train_args["device"])
        return
    rank = int(os.environ.get("RANK", "0")) if launched_by_torchrun() else 0
    if launched_by_torchrun():  # train() joins the process group; leave it on the way out
        click.get_current_context().call_on_close(dist_teardown)
    console = make_err_console(quiet or rank != 0)
    if not resume:
        refuse_existing(output, overwrite)
    if resume and not output.exists():
        raise click.UsageError(f"--resume: {display(output)} does not exist")
    check_output(output, inputs=inputs, overwrite=True)
    if resume:
        arch, latent_dim = _resumed_model_options(output, arch, latent_dim)
    arch, image_size = _pick_arch(console, inputs, arch, image_size)
    if arch == "draem":
        _draem_settings(click.get_current_context(), train_args, resume, time_budget)
    elif time_budget is not None:
        train_args["time_budget"] = time_budget * 60
    cfg = TrainConfig(**train_args)
    try:
        cfg.validate()
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    images = _load_with_progress(
        console, inputs, channels=int(channels) if channels else None, size=image_size,
        native_size=cfg.patch_size is not None and image_size is None, resize=resize,
        alpha_background=alpha_background, strict=strict,
    )  # fmt: skip
    if image_size is None:
        _hint_large_images(console, images.size)
    callbacks = [RichTrainProgress(console, cfg.epochs)] + (
        [SampleGrids(samples)] if samples else []
    )
    if arch == "draem":
        from aetool.training.draem import train_draem

        _announce_draem(console, images, cfg)
        sources = _defect_sources(console, anomaly_source, images)
        result = train_draem(
            images, ModelConfig(arch=arch, latent_dim=latent_dim), cfg, callbacks,
            sources=sources, data_sources=[p.resolve() for p in inputs],
        )  # fmt: skip
    else:
        result = train(
            images, ModelConfig(arch=arch, latent_dim=latent_dim), cfg, callbacks,
            resume_from=output if resume else None,
            data_sources=[p.resolve() for p in inputs],
        )  # fmt: skip
    if rank != 0:
        return  # rank 0 writes the model file and prints its path
    path = save_or_rescue(result, output, overwrite=overwrite or resume)
    n_val = result.metadata["training"]["val_count"]
    if n_val < MIN_THRESHOLD_VAL:
        warn(console, f"only {n_val} validation image(s): `score --threshold auto` rests on "
             "them; use a larger --val-split or more images for a steadier threshold")  # fmt: skip
    print_train_summary(console, result, path)
    click.echo(str(path))
    if result.interrupted:
        console.print(
            plain(
                f"Interrupted: saved a resumable model; continue with "
                f"`aetool train {' '.join(map(str, inputs))} -o {output} --resume`"
            )
        )
        sys.exit(130)


def _resumed_model_options(output: Path, arch: str, latent_dim: int) -> tuple[str, int]:
    """--resume continues the file's model: --arch and --latent-dim, when given, must match it."""
    from click.core import ParameterSource

    from aetool.files import display
    from aetool.models.file import read_metadata

    ctx = click.get_current_context()
    meta = read_metadata(output)
    have = {
        "arch": meta["arch"],
        "latent_dim": meta.get("arch_args", {}).get("latent_dim", latent_dim),
    }
    for name, value in (("arch", arch), ("latent_dim", latent_dim)):
        given = ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT)
        if given and value != have[name]:
            flag = "--" + name.replace("_", "-")
            raise click.UsageError(
                f"--resume: {display(output)} holds a model with {flag} {have[name]}, not {value}; "
                f"drop {flag} or train a new model"
            )
    return str(have["arch"]), int(have["latent_dim"])


def save_or_rescue(result: TrainResult, output: Path, *, overwrite: bool) -> Path:
    """Save the trained model to ``output``; when that fails, keep it elsewhere and say where.

    A finished training is never thrown away because the last write failed (full or
    read-only disk, another run took the name): the model goes to the first folder
    that takes it (beside ``output``, the temporary folder, the current folder) and the
    error names that file.
    """
    from aetool.errors import OutputError
    from aetool.files import display
    from aetool.models.file import save_model

    try:
        return result.save(output, overwrite=overwrite)
    except OutputError as exc:
        stem = output.name.removesuffix(".safetensors")[:100] or "model"
        name = f"{stem}.rescued-{os.getpid()}.safetensors"
        for folder in (output.parent, Path(tempfile.gettempdir()), Path.cwd()):
            try:
                rescued = save_model(
                    folder / name, result.model, result.metadata,
                    extra=result.resume_state or None, overwrite=False,
                )  # fmt: skip
            except OutputError:
                continue
            raise OutputError(f"{exc}; the trained model was saved to {display(rescued)}") from None
        raise OutputError(f"{exc}; no folder could take the trained model either") from None


#: Working sizes above this many pixels (256x256) get a hint about --image-size: a model
#: built for 1024x1024 images has millions of parameters and trains at about an image a
#: second on a CPU.
LARGE_IMAGE_PIXELS = 256 * 256


def _hint_large_images(console: Console, size: tuple[int, int] | None) -> None:
    """Tell the user the size the model is built for when it is large, and the way out."""
    from aetool.cli.console import warn

    if size is None or size[0] * size[1] <= LARGE_IMAGE_PIXELS:
        return
    warn(
        console,
        f"the images' common size {size[0]}x{size[1]} is the model's working size; training "
        "at that size is slow and memory-hungry: --image-size 128 (or 256) trains on "
        "downscaled images, --patch-size 64 with --arch denoiser trains on full-resolution patches",
    )


def _pick_arch(
    console: Console, inputs: tuple[Path, ...], arch: str, image_size: str | None
) -> tuple[str, str | None]:
    """Resolve ``--arch auto`` (and draem's working size) from the images' sizes."""
    if arch not in ("auto", "draem"):
        return arch, image_size
    from aetool.training.draem import choose_arch

    sizes = _probe_sizes(inputs)
    if not sizes:  # nothing readable: loading the images reports why
        return ("conv" if arch == "auto" else arch), image_size
    chosen, size = choose_arch(sizes)
    if arch == "draem" and chosen == "conv":
        chosen, size = "draem", None
    if arch == "auto":
        short = min((min(s) for s in sizes), default=0)
        console.print(f"--arch auto: {chosen} (shortest image side {short} px; draem from 128 px)")
    if chosen == "draem" and image_size is None and size is not None:
        image_size = f"{size[0]}x{size[1]}"
    return chosen, image_size


def _probe_sizes(inputs: tuple[Path, ...], limit: int = 2000) -> list[tuple[int, int]]:
    """``(H, W)`` of the images (headers only; the first ``limit``)."""
    from PIL import Image, UnidentifiedImageError

    from aetool.data.inputs import collect_images

    refs, _, _ = collect_images(list(inputs))
    sizes = []
    for ref in refs[:limit]:
        try:
            with Image.open(ref.path) as im:
                w, h = im.size
        except (OSError, UnidentifiedImageError):
            continue
        sizes.append((h, w))
    return sizes


def _draem_settings(
    ctx: click.Context, train_args: dict[str, Any], resume: bool, time_budget: float | None
) -> None:
    """draem's defaults: batch 16 unless given, a 10-minute budget unless given."""
    from click.core import ParameterSource

    from aetool.training.draem import DRAEM_BATCH, DRAEM_TIME_BUDGET

    if resume:
        raise click.UsageError("--resume is not supported for the draem architecture")
    if train_args.get("patch_size") is not None:
        raise click.UsageError("--patch-size is for the autoencoders; draem uses --image-size")
    if ctx.get_parameter_source("batch_size") == ParameterSource.DEFAULT:
        train_args["batch_size"] = DRAEM_BATCH
    train_args["time_budget"] = (time_budget * 60) if time_budget else DRAEM_TIME_BUDGET


def _announce_draem(console: Console, images: ImageSet, cfg: TrainConfig) -> None:
    from aetool.training.draem import DEFAULT_STEPS

    size = f"{images.size[0]}x{images.size[1]}" if images.size else "native"
    minutes = f"{(cfg.time_budget or 0) / 60:.1f} min (--time-budget)"
    steps = cfg.epochs * 50 if cfg.epochs else DEFAULT_STEPS
    ends = f"{steps} steps or {minutes}, whichever comes first"
    console.print(f"draem: working size {size}, batch {cfg.batch_size}; training ends after {ends}")


def _defect_sources(console: Console, folder: Path | None, images: ImageSet) -> list[Any]:
    if folder is None:
        return []
    from aetool.cli.console import warn_skipped
    from aetool.data.cache import load_images

    extra = load_images([folder], channels=images.channels, size=images.size)
    warn_skipped(console, extra.skipped)
    return [a.astype("float32") / 255.0 for a in extra.data]


def _load_with_progress(console: Console, inputs: tuple[Path, ...], **kwargs: Any) -> ImageSet:
    from aetool.cli.console import DecodeProgress, warn_skipped
    from aetool.data.cache import load_images

    with DecodeProgress(console) as bar:
        images = load_images(inputs, progress=bar.update if bar.progress else None, **kwargs)
    warn_skipped(console, images.skipped)
    return images


def _relaunch_under_torchrun(ctx: click.Context, nproc: int | None, device: str) -> None:
    """Run this ``train`` command again under torchrun; pass on its stdout and exit status."""
    import subprocess

    import torch

    from aetool.training.distributed import torchrun_command

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
            args += [str(v) for v in (value or () if p.nargs != 1 else [value])]
            continue
        source = ctx.get_parameter_source(p.name)
        if value is None or source in (None, ParameterSource.DEFAULT):
            continue
        if isinstance(p, click.Option):
            opts += _option_args(p, value)
    return [*opts, "--", *args]


def _option_args(p: click.Option, value: Any) -> list[str]:
    name = max(p.opts, key=len)
    if p.is_flag:
        off = max(p.secondary_opts, key=len) if p.secondary_opts else None
        flag = name if value else off
        return [flag] if flag else []
    return [a for v in (value if p.multiple else [value]) for a in (name, str(v))]
