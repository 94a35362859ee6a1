"""CPU speed of convolutional models with channels-last weights vs the plain layout.

aetool stores a convolutional model's weights channels-last whenever it runs on
the CPU (:func:`aetool.devices.fast_layout`: ``load_model``, training, and
``denoise_array``). This script measures what that buys, in one process: the
same model and input, each case timed in the plain layout and in the
channels-last layout, alternating, median of ``--repeats`` runs after a warm-up
(the ratio is what counts; the machines are shared and noisy).

Cases: a forward pass (inference, ``torch.inference_mode``) and a training step
(forward + MSE + backward + Adam) for

* ``conv`` 28x28 gray, batch 256 / 512 (the digits model's shape);
* ``conv`` 64x64 RGB, batch 64;
* ``denoiser`` (the bundled model's architecture) on one 512x512 picture
  (inference) and on 32 patches of 128x128 (a training step of
  ``pretrained/train_pretrained_denoiser.py``);
* ``denoiser`` at its registry defaults on 8 RGB tiles of 256x256 (inference)
  and 32 patches of 64x64 (``aetool train --arch denoiser --patch-size 64``).

    python benchmarks/cpu_layout.py                 # one thread, about a minute
    python benchmarks/cpu_layout.py --threads 2
    python benchmarks/cpu_layout.py --archs         # also: candidate denoiser sizes

``--archs`` adds a second table: the forward pass on one 512x512 picture of
the candidate U-Nets of ``pretrained/gpu_denoiser_candidates.sh``, channels-last,
as a ratio to the bundled architecture (E), whose time ``aetool denoise`` has
in ``benchmarks/denoise_psnr.py`` beside BM3D's.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from aetool.models.registry import create_model

BUNDLED = {
    "channels": 1, "height": 64, "width": 64, "latent_dim": 16, "base_channels": 24,
    "depth": 3, "max_channels": 128, "convs_per_level": 2, "bottleneck_convs": 4,
}  # fmt: skip

#: (name, arch, arch args, inference input shape, training input shape)
CASES = [
    ("conv 28x28 gray", "conv", {"channels": 1, "height": 28, "width": 28, "latent_dim": 16},
     (512, 1, 28, 28), (256, 1, 28, 28)),
    ("conv 64x64 RGB", "conv", {"channels": 3, "height": 64, "width": 64, "latent_dim": 32},
     (64, 3, 64, 64), (64, 3, 64, 64)),
    ("denoiser, bundled architecture", "denoiser", BUNDLED, (1, 1, 512, 512), (32, 1, 128, 128)),
    ("denoiser, registry defaults, RGB", "denoiser", {"channels": 3, "height": 64, "width": 64},
     (8, 3, 256, 256), (32, 3, 64, 64)),
]  # fmt: skip


def timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def compare(arch: str, kwargs: dict, shape: tuple[int, ...], train: bool, repeats: int):
    """Median seconds (plain, channels-last) of one forward pass or one training step."""
    torch.manual_seed(0)
    models = [create_model(arch, **kwargs) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    models[1].to(memory_format=torch.channels_last)
    x = torch.rand(shape)
    steps = []
    for m in models:
        if train:
            m.train()
            opt = torch.optim.Adam(m.parameters(), lr=1e-4)

            def step(m=m, opt=opt) -> None:
                loss = F.mse_loss(m(x), x)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        else:
            m.eval()

            def step(m=m) -> None:
                with torch.inference_mode():
                    m(x)

        step()  # warm-up (oneDNN primitive creation)
        steps.append(step)
    runs: list[list[float]] = [[], []]
    for _ in range(repeats):
        for i, step in enumerate(steps):
            runs[i].append(timed(step))
    return statistics.median(runs[0]), statistics.median(runs[1])


#: Candidate bundled denoisers (``pretrained/gpu_denoiser_candidates.sh``): name -> arch args.
CANDIDATES = {
    "E (bundled)": BUNDLED,
    "B 24/4/128": {**BUNDLED, "depth": 4, "bottleneck_convs": 3},
    "G 32/3/192": {**BUNDLED, "base_channels": 32, "max_channels": 192},
    "H 32/4/192": {**BUNDLED, "base_channels": 32, "depth": 4, "max_channels": 192},
}


def candidates(repeats: int) -> None:
    """Forward seconds on one 512x512 picture, channels-last, and the ratio to E."""
    x = torch.rand(1, 1, 512, 512)
    print("\n| denoiser (base/depth/max) | parameters | float16 file | s / 512x512 | vs E |")
    print("|---|---:|---:|---:|---:|")
    base = None
    for name, kwargs in CANDIDATES.items():
        torch.manual_seed(0)
        model = create_model("denoiser", **kwargs).eval().to(memory_format=torch.channels_last)
        n = sum(p.numel() for p in model.parameters())
        with torch.inference_mode():
            model(x)
            sec = statistics.median(timed(lambda m=model: m(x)) for _ in range(repeats))
        base = base or sec
        print(f"| {name} | {n / 1e6:.2f}M | {2 * n / 1e6:.1f} MB | {sec:.3f} | {sec / base:.2f}x |",
              flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--archs", action="store_true", help="also time candidate denoisers")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.repeats}\n")
    print("| model | input | plain (s) | channels-last (s) | speed-up |")
    print("|---|---|---:|---:|---:|")
    for name, arch, kwargs, inf_shape, train_shape in CASES:
        for train, shape in ((False, inf_shape), (True, train_shape)):
            plain, fast = compare(arch, kwargs, shape, train, args.repeats)
            what = f"{'training step' if train else 'forward'}, {'x'.join(map(str, shape))}"
            print(f"| {name} | {what} | {plain:.4f} | {fast:.4f} | {plain / fast:.2f}x |",
                  flush=True)  # fmt: skip
    if args.archs:
        candidates(args.repeats)


if __name__ == "__main__":
    main()
