"""The built-in demo: scikit-learn's handwritten digits run through every command.

``run_demo`` writes the digits (1,797 real 8x8 scans) as PNG files and then:

1. trains a denoising conv autoencoder on all digits (``model.safetensors``),
   with a reconstruction grid beside it;
2. exports the latent codes (``codes.csv``), draws the latent map
   (``latent-map.png``) and a 0 -> 1 interpolation strip (``interpolation.png``);
3. denoises noisy copies of the test digits (``noisy/`` -> ``denoised/``) and
   measures PSNR against the clean originals;
4. trains a one-class model on half of the zeros (``zeros-model.safetensors``),
   scores held-out zeros and other digits (``scores.csv``, ``heatmaps/``) with
   labels from the folder layout (``test/good`` vs ``test/<digit>``);
5. writes the HTML report (``report.html``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from rich.markup import escape

from aetool.data.cache import load_images
from aetool.errors import OutputError
from aetool.models.registry import ModelConfig
from aetool.training.callbacks import TrainCallback
from aetool.training.config import TrainConfig
from aetool.training.loop import train

__all__ = ["run_demo", "write_digits"]

_MARKER = ".aetool-demo"
#: Noise level of the demo's noisy digits, in [0, 1] pixel units.
DEMO_SIGMA = 0.25


def _save(img: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img, "L").save(path)


def write_digits(directory: str | Path) -> dict[str, Path]:
    """Write scikit-learn's digits as PNG folders and return the folders written.

    Layout: ``digits/<digit>/<index>.png`` (all 1,797); ``anomaly/train/good``
    (half of the zeros), ``anomaly/test/good`` (the other half) and
    ``anomaly/test/<digit>`` (ten of each other digit); ``noisy/<digit>/...``
    (every tenth digit with Gaussian noise of :data:`DEMO_SIGMA`).
    """
    from sklearn.datasets import load_digits

    root = Path(directory)
    d = load_digits()
    imgs = np.round(d.images * (255 / 16)).astype(np.uint8)
    rng = np.random.default_rng(0)
    for i, (img, t) in enumerate(zip(imgs, d.target, strict=True)):
        _save(img, root / "digits" / str(t) / f"{i:04d}.png")
        if i % 10 == 0:
            noisy = img / 255 + rng.normal(0, DEMO_SIGMA, img.shape)
            _save(
                np.round(noisy.clip(0, 1) * 255).astype(np.uint8),
                root / "noisy" / str(t) / f"{i:04d}.png",
            )
    zeros = np.flatnonzero(d.target == 0)
    rng.shuffle(zeros)
    half = len(zeros) // 2
    for sub, idx in (("train/good", zeros[:half]), ("test/good", zeros[half:])):
        for i in idx:
            _save(imgs[i], root / "anomaly" / sub / f"{i:04d}.png")
    for digit in range(1, 10):
        for i in np.flatnonzero(d.target == digit)[:10]:
            _save(imgs[i], root / "anomaly" / "test" / str(digit) / f"{i:04d}.png")
    return {
        "digits": root / "digits",
        "noisy": root / "noisy",
        "anomaly_train": root / "anomaly" / "train",
        "anomaly_test": root / "anomaly" / "test",
    }


def _prepare(directory: Path, overwrite: bool) -> None:
    if directory.exists() and not directory.is_dir():
        raise OutputError(f"{directory} is a file; name a new or empty folder for the demo")
    if directory.exists() and any(directory.iterdir()) and not (directory / _MARKER).exists():
        raise OutputError(
            f"{directory} exists and is not an aetool demo folder; name an empty or new folder"
        )
    if not overwrite and any(p.name != _MARKER for p in directory.glob("*")):
        raise OutputError(
            f"{directory} holds an earlier demo; pass --overwrite to replace its files, "
            "or name a new folder"
        )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / _MARKER).write_text("written by `aetool demo`; safe to delete\n")


def run_demo(
    directory: str | Path = "aetool-demo",
    *,
    console: Any = None,
    device: str = "auto",
    epochs: int | None = None,
    progress: Callable[[Any], TrainCallback] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Run the end-to-end demo in ``directory`` and return what was produced where.

    Args:
        directory: a new folder, or (with ``overwrite``) one an earlier demo wrote,
            whose files are then replaced.
        console: a rich console for progress and messages (None: silent).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        epochs: training epochs for both models (default 30 and auto).
        progress: makes a training callback from the console (the CLI's progress bars).
        overwrite: replace the files of an earlier demo in ``directory``.

    Raises:
        OutputError: ``directory`` is a file, a folder not written by the demo, or
            (without ``overwrite``) holds an earlier demo.
    """
    from aetool.anomaly.pipeline import score_images
    from aetool.denoise.pipeline import DenoiseSummary, denoise_images
    from aetool.latents import encode_latents, folder_labels, interpolation_strip, latent_map
    from aetool.models.file import load_model
    from aetool.report.collect import build_report
    from aetool.report.html import write_report
    from aetool.rows import RowWriter, write_latent_rows

    root = Path(directory)
    _prepare(root, overwrite)
    say = console.print if console is not None else (lambda *a, **k: None)
    cbs = (lambda: [progress(console)]) if progress and console is not None else list
    folders = write_digits(root)
    say(
        escape(
            f"Wrote scikit-learn's 1,797 handwritten digits as PNG files under {folders['digits']}"
        )
    )
    out: dict[str, Any] = {"digits (PNG)": folders["digits"]}

    # 1. A denoising conv autoencoder on all digits.
    say("\n[bold]1. Train[/] a denoising conv autoencoder on all digits")
    result = train(
        load_images([folders["digits"]]),
        ModelConfig(arch="conv", latent_dim=16),
        TrainConfig(epochs=epochs or 30, device=device, noise=f"gaussian:{DEMO_SIGMA}", lr=2e-3),
        cbs(),
        data_sources=[folders["digits"].resolve()],
    )
    model_path = result.save(root / "model.safetensors")
    hist = result.metadata["training"]["history"]
    out["model"] = model_path
    out["training"] = (
        f"{len(hist['train_loss'])} epochs, loss {hist['train_loss'][0]:.4f} -> "
        f"{hist['train_loss'][-1]:.4f} (validation {hist['val_loss'][-1]:.4f})"
    )
    model = load_model(model_path, device="cpu")

    # 2. Latent codes, map and interpolation.
    say("[bold]2. Export[/] latent codes, latent map and an interpolation strip")
    pairs = list(encode_latents(model, [folders["digits"]]))
    with open(root / "codes.csv", "w", newline="") as fh:
        write_latent_rows(((ref.relpath, z, None) for ref, z in pairs), "csv", fh)
    codes = np.stack([z for _, z in pairs])
    labels = folder_labels([r.relpath for r, _ in pairs])
    (root / "latent-map.png").write_bytes(latent_map(codes, labels, "Digits in latent space (PCA)"))
    a, b = (
        sorted((folders["digits"] / "0").iterdir())[0],
        sorted((folders["digits"] / "1").iterdir())[0],
    )
    interpolation_strip(model, a, b, steps=7).save(root / "interpolation.png")
    out["latent codes"] = f"{root / 'codes.csv'} ({len(pairs)} x {codes.shape[1]})"
    out["latent map"] = root / "latent-map.png"
    out["interpolation"] = root / "interpolation.png"

    # 3. Denoise the noisy digits, compared with the clean originals.
    say("[bold]3. Denoise[/] noisy digits")
    summary = DenoiseSummary()
    for r in denoise_images(
        [folders["noisy"]], root / "denoised", model, overwrite=True,
        reference=folders["digits"], device=device,
    ):  # fmt: skip
        summary.add(r)
    out["denoised"] = (
        f"{root / 'denoised'} ({summary.written} images, PSNR {summary.mean('psnr_in'):.1f} -> "
        f"{summary.mean('psnr_out'):.1f} dB)"
    )

    # 4. One-class anomaly detection: zeros are normal.
    say("[bold]4. Score[/]: a one-class model trained on zeros, scoring zeros and other digits")
    zres = train(
        load_images([folders["anomaly_train"]]),
        ModelConfig(arch="conv", latent_dim=16),
        TrainConfig(epochs=epochs, device=device),
        cbs(),
        data_sources=[folders["anomaly_train"].resolve()],
    )
    zeros_path = zres.save(root / "zeros-model.safetensors")
    zeros = load_model(zeros_path, device="cpu")
    run = score_images(
        [folders["anomaly_test"]], zeros, device=device, heatmap_dir=root / "heatmaps"
    )
    with open(root / "scores.csv", "w", newline="") as fh:
        w = RowWriter("csv", fh)
        for row in run:
            w.write(row.as_dict(with_label=run.columns_with_label, with_info=True))
    rep = run.summary.report()
    m = rep["metrics"]
    out["one-class model"] = zeros_path
    out["scores"] = (
        f"{root / 'scores.csv'}: ROC AUC {m['roc_auc']:.3f}, {rep['counts']['anomalies']} of "
        f"{rep['counts']['scored']} flagged, precision {m['precision'] or 0:.2f}, "
        f"recall {m['recall'] or 0:.2f}"
    )
    out["threshold"] = f"{rep['threshold']['value']:.4g} ({rep['threshold']['rule']})"
    out["heatmaps"] = root / "heatmaps"

    # 5. The report.
    say("[bold]5. Report[/]: one self-contained HTML file")
    data = build_report([folders["anomaly_test"]], zeros, device=device)
    report = write_report(data, root / "report.html")[0]
    out["report"] = f"{report} (open it in a browser)"
    return out
