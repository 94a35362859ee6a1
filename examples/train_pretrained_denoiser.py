"""Train the bundled grayscale denoiser: a ``denoiser`` U-Net on scikit-image's sample pictures.

Writes ``aetool/pretrained/denoiser-gray.safetensors`` (about 1 MB), the model
``aetool denoise`` uses when ``--model`` is not given. It is a blind Gaussian
denoiser: trained on noise levels sigma in [0.02, 0.2] (5 to 51 on the 0-255
scale) without being told sigma.

    python examples/train_pretrained_denoiser.py                 # the bundled model
    python examples/train_pretrained_denoiser.py -o /tmp/d.safetensors --steps1 700 --steps2 450

Recipe (two stages, the second restarting from the first's weights with a new
optimizer):

* data: 64x64 patches of 14 grayscale training pictures (:data:`TRAIN_IMAGES`;
  ``camera``, ``astronaut`` and ``coffee`` are held out for
  ``benchmarks/denoise_psnr.py``), each picture equally likely whatever its
  size, with a random flip/rotation (8 orientations); batches of 16;
* noise: additive Gaussian, sigma drawn per patch from U[0.02, 0.2]; in half
  of the batches the noisy input is clipped to [0, 1], as it is once stored in
  an image file;
* loss: per-patch MSE weighted by ``(0.1 / sigma) ** p``, so low-noise patches,
  whose errors are small, still count: p = 2 in stage 1, 1 in stage 2;
* optimizer: Adam; linear warmup, then cosine decay to 1% of the peak rate;
  stage 1 7,000 steps at lr 1e-3 (100 warmup steps), stage 2 4,500 steps at
  lr 4e-4 (50 warmup steps).

Each stage seeds torch and numpy with ``--seed`` before it builds its model,
so a run is reproducible on one thread (the default). About 0.09-0.14 s per
step on one CPU core: 18-30 minutes in all.

The weights are stored as float16 (half the file; the benchmark PSNRs move by
less than 0.001 dB) and load into a float32 model; ``--dtype float32`` keeps
them as trained.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

import aetool
from aetool.modelfile import save_model
from aetool.models import AutoEncoder, create_model

OUT = Path(__file__).resolve().parent.parent / "aetool" / "pretrained" / "denoiser-gray.safetensors"

#: scikit-image sample pictures used for training (``stereo_motorcycle`` gives two).
TRAIN_IMAGES = [
    "brick", "chelsea", "clock", "coins", "grass", "gravel", "immunohistochemistry", "moon",
    "page", "retina", "rocket", "text", "stereo_motorcycle",
]  # fmt: skip
#: Held out for ``benchmarks/denoise_psnr.py``.
TEST_IMAGES = ["camera", "astronaut", "coffee"]

ARCH_ARGS = {
    "channels": 1, "height": 64, "width": 64, "latent_dim": 16, "base_channels": 16,
    "depth": 3, "max_channels": 96, "convs_per_level": 1, "bottleneck_convs": 4,
}  # fmt: skip

#: One "epoch" in the model file's training record is this many steps (history granularity).
STEPS_PER_EPOCH = 500


@dataclass
class Stage:
    """One training stage: Adam with warmup + cosine decay, sigma-weighted MSE."""

    steps: int
    lr: float
    warmup: int
    weight_power: float


@dataclass
class Recipe:
    """Settings shared by both stages."""

    batch_size: int = 16
    patch_size: int = 64
    sigma_min: float = 0.02
    sigma_max: float = 0.2
    clip_prob: float = 0.5
    min_lr_fraction: float = 0.01


def to_gray(x: np.ndarray) -> np.ndarray:
    """float32 grayscale in [0, 1] (scikit-image's luminance weights)."""
    from skimage.color import rgb2gray, rgba2rgb
    from skimage.util import img_as_float32

    x = np.asarray(x)
    if x.ndim == 3:
        x = rgb2gray(rgba2rgb(x) if x.shape[-1] == 4 else x)
    return np.ascontiguousarray(img_as_float32(x), dtype=np.float32)


def load_pictures(names: list[str]) -> list[np.ndarray]:
    """The named ``skimage.data`` pictures as grayscale arrays (both views of stereo pairs)."""
    import skimage.data

    out = []
    for name in names:
        if name == "stereo_motorcycle":
            left, right, _ = skimage.data.stereo_motorcycle()
            out += [to_gray(left), to_gray(right)]
        else:
            out.append(to_gray(getattr(skimage.data, name)()))
    return out


class PatchSampler:
    """Batches of (noisy, clean, sigma) patches; numpy draws the crops, torch the noise."""

    def __init__(self, images: list[np.ndarray], recipe: Recipe, seed: int) -> None:
        self.images = [im for im in images if min(im.shape) >= recipe.patch_size]
        self.recipe = recipe
        self.rng = np.random.default_rng(seed)
        self.prob = np.full(len(self.images), 1 / len(self.images))

    def batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r, p = self.recipe, self.recipe.patch_size
        out = np.empty((r.batch_size, 1, p, p), np.float32)
        for b, i in enumerate(self.rng.choice(len(self.images), r.batch_size, p=self.prob)):
            im = self.images[i]
            y = self.rng.integers(0, im.shape[0] - p + 1)
            x = self.rng.integers(0, im.shape[1] - p + 1)
            k = self.rng.integers(8)
            crop = np.rot90(im[y : y + p, x : x + p], k % 4)
            out[b, 0] = crop[:, ::-1] if k >= 4 else crop
        clean = torch.from_numpy(out)
        sigma = torch.empty(r.batch_size, 1, 1, 1).uniform_(r.sigma_min, r.sigma_max)
        noisy = clean + sigma * torch.randn_like(clean)
        clip = (torch.rand(r.batch_size, 1, 1, 1) < r.clip_prob).float()
        noisy = clip * noisy.clamp(0, 1) + (1 - clip) * noisy
        return noisy, clean, sigma


def run_stage(
    stage: Stage,
    recipe: Recipe,
    images: list[np.ndarray],
    seed: int,
    init: dict[str, torch.Tensor] | None,
    log_every: int,
    arch_args: dict | None = None,
) -> tuple[AutoEncoder, list[float], list[float]]:
    """Train one stage; returns the model and the mean plain / weighted MSE per 500 steps."""
    torch.manual_seed(seed)
    sampler = PatchSampler(images, recipe, seed)
    model = create_model("denoiser", **(ARCH_ARGS if arch_args is None else arch_args))
    if init is not None:
        model.load_state_dict(init)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=stage.lr)

    def factor(s: int) -> float:
        warm = min(1.0, (s + 1) / stage.warmup)
        cos = 0.5 * (1 + math.cos(math.pi * min(s, stage.steps) / stage.steps))
        return warm * (recipe.min_lr_fraction + (1 - recipe.min_lr_fraction) * cos)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    plain, weighted, sum_p, sum_w = [], [], 0.0, 0.0
    t0 = time.perf_counter()
    for s in range(stage.steps):
        noisy, clean, sigma = sampler.batch()
        per_patch = ((model(noisy) - clean) ** 2).mean(dim=(1, 2, 3))
        loss = (per_patch * (0.1 / sigma.flatten()) ** stage.weight_power).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        sum_p += per_patch.mean().item()
        sum_w += loss.item()
        if (s + 1) % STEPS_PER_EPOCH == 0 or s + 1 == stage.steps:
            n = (s % STEPS_PER_EPOCH) + 1
            plain.append(sum_p / n)
            weighted.append(sum_w / n)
            sum_p = sum_w = 0.0
        if (s + 1) % log_every == 0 or s + 1 == stage.steps:
            print(
                f"  step {s + 1}/{stage.steps}  loss {loss.item():.2e}  "
                f"lr {sched.get_last_lr()[0]:.1e}  {time.perf_counter() - t0:.0f} s",
                flush=True,
            )
    return model, plain, weighted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=OUT)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")
    parser.add_argument("--steps1", type=int, default=7000, help="stage 1 steps")
    parser.add_argument("--steps2", type=int, default=4500, help="stage 2 steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    parser.add_argument("--log-every", type=int, default=500)
    arch = parser.add_argument_group("architecture (defaults: the bundled model's)")
    for key, help_ in [
        ("base_channels", "channels at full resolution"),
        ("depth", "number of downsamplings"),
        ("max_channels", "cap on the channels per level"),
        ("convs_per_level", "3x3 convolutions per level"),
        ("bottleneck_convs", "extra convolutions at the lowest level"),
    ]:
        flag = "--" + key.replace("_", "-")
        arch.add_argument(
            flag, type=int, default=ARCH_ARGS[key], help=f"{help_} (default %(default)s)"
        )
    args = parser.parse_args()
    arch_args = ARCH_ARGS | {
        k: getattr(args, k)
        for k in ("base_channels", "depth", "max_channels", "convs_per_level", "bottleneck_convs")
    }
    if args.output.exists() and not args.overwrite:
        parser.error(f"{args.output} exists; pass --overwrite to replace it")
    torch.set_num_threads(args.threads)

    recipe = Recipe()
    stages = [
        Stage(steps=args.steps1, lr=1e-3, warmup=100, weight_power=2.0),
        Stage(steps=args.steps2, lr=4e-4, warmup=50, weight_power=1.0),
    ]
    images = load_pictures(TRAIN_IMAGES)
    print(f"{len(images)} training pictures, {sum(im.size for im in images):,} pixels")
    t0 = time.perf_counter()
    state, plain, weighted = None, [], []
    for i, stage in enumerate(stages, 1):
        print(f"stage {i}: {stage}", flush=True)
        model, p, w = run_stage(stage, recipe, images, args.seed, state, args.log_every, arch_args)
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        plain += p
        weighted += w
    seconds = time.perf_counter() - t0
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())

    epochs = len(plain)
    recipe_record = asdict(recipe) | {
        "stages": [asdict(s) for s in stages],
        "optimizer": "adam",
        "schedule": "linear warmup, cosine decay to min_lr_fraction * lr",
        "loss_weight": "(0.1 / sigma) ** weight_power per patch",
        "augment": "8 flips/rotations",
        "patch_sampling": "each picture equally likely",
        "grayscale": "skimage.color.rgb2gray",
        "steps_per_epoch": STEPS_PER_EPOCH,
    }
    training = {
        "data": [f"skimage.data.{n}" for n in TRAIN_IMAGES],
        "held_out": [f"skimage.data.{n}" for n in TEST_IMAGES],
        "image_count": len(images),
        "train_count": len(images),
        "val_count": 0,
        "skipped": [],
        "seed": args.seed,
        "recipe": recipe_record,
        "steps": sum(s.steps for s in stages),
        "epochs_requested": epochs,
        "epochs_run": epochs,
        "best_epoch": epochs,
        "completed": True,
        "history": {"train_loss": plain, "val_loss": [], "train_loss_weighted": weighted},
        "history_note": f"mean per-patch MSE (unweighted) over each {STEPS_PER_EPOCH} steps",
        "loss": "mse (sigma-weighted)",
        "noise": f"gaussian:{recipe.sigma_min}-{recipe.sigma_max}",
        "lr": stages[0].lr,
        "batch_size": recipe.batch_size,
        "device": "cpu",
        "threads": args.threads,
        "parameters": n_params,
        "weights_dtype": args.dtype,
        "seconds": round(seconds, 1),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "made_by": "examples/train_pretrained_denoiser.py",
        "versions": {
            "aetool": aetool.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
    }
    preprocessing = {
        "channels": 1, "height": None, "width": None, "resize": "stretch",
        "alpha_background": "black", "value_range": [0, 1], "patch_size": recipe.patch_size,
    }  # fmt: skip
    if args.dtype == "float16":
        model = model.half()  # stored as float16; load_model copies into float32 parameters
    path = save_model(args.output, model, {"preprocessing": preprocessing, "training": training})
    print(
        f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB, {n_params:,} parameters) "
        f"in {seconds / 60:.1f} min; last {STEPS_PER_EPOCH}-step mean MSE {plain[-1]:.2e}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
