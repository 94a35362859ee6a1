"""End-to-end training throughput vs raw model speed vs the tutorial pipeline.

Writes N (default 10,000) 28x28 grayscale PNGs made from scikit-learn's digits
(upscaled to 28x28, randomly shifted and with a little noise) into a temp
folder, then measures per-epoch images/s for the epochs after the first:

* aetool:   load_images (decode once into the uint8 cache) + the training loop
            (batch gather + float conversion + forward + backward + Adam step);
* raw:      the same model, batch size and optimizer on a float tensor already
            in memory, shuffled each epoch (the ceiling), with the weights in the
            channels-last layout aetool trains in on the CPU;
* tutorial: torchvision ImageFolder + Grayscale + ToTensor per sample and a
            DataLoader with default workers (0), same model in torch's default
            layout (as a hand-written loop has it).

Run: python benchmarks/train_throughput.py [--images 10000] [--epochs 4] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def write_pngs(root: Path, n: int) -> None:
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(0)
    base = [
        np.asarray(
            Image.fromarray((im * 255 / 16).astype(np.uint8)).resize((22, 22), Image.BILINEAR)
        )
        for im in d.images
    ]
    for i in range(n):
        canvas = np.zeros((28, 28), np.float32)
        dy, dx = rng.integers(0, 7, 2)
        canvas[dy : dy + 22, dx : dx + 22] = base[i % len(base)]
        canvas += rng.normal(0, 4, canvas.shape)
        label = d.target[i % len(base)]
        out = root / str(label) / f"{i:05d}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(canvas.clip(0, 255).astype(np.uint8)).save(out)


def _conv():  # noqa: ANN202
    from aetool.models.registry import create_model

    torch.manual_seed(0)
    model = create_model("conv", channels=1, height=28, width=28, latent_dim=16)
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


def _step(model, opt, x) -> None:  # noqa: ANN001
    opt.zero_grad(set_to_none=True)
    F.mse_loss(model(x), x).backward()
    opt.step()


class Raw:
    """The ceiling: same model and batch size on a float tensor already in memory."""

    def __init__(self, n: int, batch: int) -> None:
        from aetool.devices import fast_layout

        self.model, self.opt = _conv()
        fast_layout(self.model, "cpu")  # the layout aetool trains in on the CPU
        self.data, self.batch, self.n = torch.rand(n, 1, 28, 28), batch, n

    def epoch(self) -> float:
        t0 = time.perf_counter()
        perm = torch.randperm(self.n)
        for s in range(0, self.n, self.batch):
            _step(self.model, self.opt, self.data[perm[s : s + self.batch]])
        return self.n / (time.perf_counter() - t0)


class Aetool:
    """aetool's loop on its decoded uint8 cache (decoded once, before the first epoch)."""

    def __init__(self, root: Path, batch: int) -> None:
        from aetool.data.cache import load_images

        t0 = time.perf_counter()
        self.images = load_images([root])
        self.decode_s = time.perf_counter() - t0
        self.batch = batch

    def epoch(self) -> float:
        from aetool.models.registry import ModelConfig
        from aetool.training.config import TrainConfig
        from aetool.training.loop import train

        cfg = TrainConfig(
            epochs=1, batch_size=self.batch, val_split=0.0, patience=None, device="cpu"
        )
        res = train(self.images, ModelConfig(arch="conv", latent_dim=16), cfg)
        return res.history[0].images_per_s


class Tutorial:
    """torchvision ImageFolder + Grayscale + ToTensor per sample, DataLoader defaults."""

    def __init__(self, root: Path, batch: int) -> None:
        from torchvision import datasets, transforms

        tf = transforms.Compose([transforms.Grayscale(), transforms.ToTensor()])
        self.ds = datasets.ImageFolder(str(root), transform=tf)
        self.loader = torch.utils.data.DataLoader(self.ds, batch_size=batch, shuffle=True)
        self.model, self.opt = _conv()

    def epoch(self) -> float:
        t0 = time.perf_counter()
        for x, _ in self.loader:
            _step(self.model, self.opt, x)
        return len(self.ds) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "pngs"
        write_pngs(root, args.images)
        runs = {
            "raw": Raw(args.images, args.batch_size),
            "aetool": Aetool(root, args.batch_size),
            "tutorial": Tutorial(root, args.batch_size),
        }
        # Interleave epochs (raw, aetool, tutorial, raw, ...) so machine noise hits all alike;
        # the first round is warm-up; report medians.
        rates: dict[str, list[float]] = {k: [] for k in runs}
        for r in range(args.epochs):
            for name, run in runs.items():
                rate = run.epoch()
                if r > 0 or args.epochs == 1:
                    rates[name].append(rate)
    med = {k: float(np.median(v)) for k, v in rates.items()}
    raw, e2e, tut = med["raw"], med["aetool"], med["tutorial"]
    print(f"| pipeline | images/s (median of epochs 2..{args.epochs}) | ratio |")
    print("|---|---:|---:|")
    print(f"| raw forward+backward (in memory) | {raw:,.0f} | 1.00 |")
    print(f"| aetool end-to-end | {e2e:,.0f} | {e2e / raw:.2f} of raw, {e2e / tut:.1f}x tutorial |")
    print(f"| tutorial ImageFolder + ToTensor | {tut:,.0f} | {tut / raw:.2f} of raw |")
    dec = runs["aetool"].decode_s  # type: ignore[attr-defined]
    print(
        f"\naetool decoded {args.images} PNGs once in {dec:.2f} s "
        f"({args.images / dec:,.0f} images/s); torch threads {args.threads}"
    )


if __name__ == "__main__":
    main()
