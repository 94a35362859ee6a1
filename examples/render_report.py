"""Build a demo ``aetool report`` from scikit-learn's digits and screenshot it.

Runs in a few seconds on a CPU and needs no network and no trained model: a
PCA with 12 components stands in for the autoencoder (its ``inverse_transform``
is the reconstruction, its components the latent code), so what is exercised
is the report itself. Anomalies are digits with an injected bright square.

    python examples/render_report.py                  # -> aetool-demo/report.html (+ .png)
    python examples/render_report.py --out /tmp/demo --png-dir /tmp/demo/png
    python examples/render_report.py --no-labels      # the unlabeled variant

The screenshot needs Debian's ``chromium`` package (``apt-get install
chromium``); without it the HTML is still written and the screenshot skipped.
Open ``report.png`` to eyeball the layout.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA

try:
    from aetool.report.data import ExtremeItem, ReportData
    from aetool.report.html import write_report
except ModuleNotFoundError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from aetool.report.data import ExtremeItem, ReportData
    from aetool.report.html import write_report


def build_demo_data(with_labels: bool = True, seed: int = 0, top_n: int = 8) -> ReportData:
    """A ReportData from digits: PCA reconstructions, MSE scores, p99 threshold."""
    rng = np.random.default_rng(seed)
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8)
    order = rng.permutation(len(x))
    train_idx, val_idx, test_idx = order[:1200], order[1200:1400], order[1400:]
    flat = x.reshape(len(x), -1)
    pca = PCA(n_components=12, random_state=seed).fit(flat[train_idx])

    test = x[test_idx].copy()
    labels = np.zeros(len(test), dtype=int)
    defect = rng.choice(len(test), size=len(test) // 8, replace=False)
    for i in defect:  # a bright 3x3 square where digits rarely are
        r, c = rng.integers(0, 6, size=2)
        test[i, 0, r : r + 3, c : c + 3] = 1.0
    labels[defect] = 1

    def reconstruct(batch: np.ndarray) -> np.ndarray:
        codes = pca.transform(batch.reshape(len(batch), -1))
        out = pca.inverse_transform(codes).reshape(batch.shape)
        return np.clip(out, 0, 1).astype(np.float32)

    recon = reconstruct(test)
    err = ((test - recon) ** 2)[:, 0]  # (N, 8, 8)
    scores = err.mean(axis=(1, 2))
    val = x[val_idx]
    val_scores = np.sort(((val - reconstruct(val)) ** 2).mean(axis=(1, 2, 3)))
    threshold = float(np.quantile(val_scores, 0.99))
    paths = [f"digits/test/{'defect' if y else 'ok'}/img_{i:04d}.png" for i, y in enumerate(labels)]
    paths[0] = "digits/odd <name> & co.png"  # exercise HTML escaping

    epochs = 30
    t = np.arange(1, epochs + 1)
    train_loss = (0.06 * np.exp(-t / 6) + 0.012 + rng.normal(0, 4e-4, epochs)).tolist()
    val_loss = (0.06 * np.exp(-t / 6) + 0.014 + rng.normal(0, 6e-4, epochs)).tolist()
    metadata = {
        "format": "aetool-model",
        "format_version": 1,
        "arch": "conv",
        "arch_args": {"latent_dim": 12, "base_channels": 16, "depth": 2},
        "preprocessing": {
            "channels": 1,
            "height": 8,
            "width": 8,
            "resize": "stretch",
            "value_range": [0, 1],
            "alpha_background": "black",
        },
        "training": {
            "data": "sklearn:digits",
            "image_count": len(x),
            "train_count": len(train_idx),
            "val_count": len(val_idx),
            "skipped": [{"path": "digits/broken.png", "reason": "not an image"}],
            "seed": seed,
            "epochs_requested": epochs,
            "epochs_run": epochs,
            "best_epoch": int(np.argmin(val_loss)) + 1,
            "history": {"train_loss": train_loss, "val_loss": val_loss},
            "loss": "mse",
            "noise": None,
            "lr": 0.001,
            "batch_size": 64,
            "device": "cpu",
            "seconds": 12.3,
            "versions": {"aetool": "0.1.0", "torch": "2.x"},
        },
        "validation": {"count": len(val_idx), "scores": {"mse": val_scores.tolist()}},
    }

    rank = np.argsort(-scores)

    def item(i: int) -> ExtremeItem:
        return ExtremeItem(
            paths[i], float(scores[i]), test[i], err[i], int(labels[i]) if with_labels else None
        )

    metrics = None
    if with_labels:
        pred = scores > threshold
        tp = int(np.sum(pred & (labels == 1)))
        fp = int(np.sum(pred & (labels == 0)))
        fn = int(np.sum(~pred & (labels == 1)))
        tn = int(np.sum(~pred & (labels == 0)))
        precision = tp / max(tp + fp, 1)
        recall = tp / max(tp + fn, 1)
        metrics = {
            "precision": precision,
            "recall": recall,
            "f1": 2 * precision * recall / max(precision + recall, 1e-12),
            "confusion": {"tn": tn, "fp": fp, "fn": fn, "tp": tp},
        }
    return ReportData(
        metadata=metadata,
        model_path="aetool-demo/digits-conv.safetensors",
        inputs=test[:8],
        recons=recon[:8],
        scores=scores,
        labels=[int(v) for v in labels] if with_labels else None,
        paths=paths,
        threshold=threshold,
        threshold_rule="p99 of validation scores",
        score_kind="mse",
        top_anomalous=[item(i) for i in rank[:top_n]],
        top_normal=[item(i) for i in rank[::-1][:top_n]],
        latent_codes=pca.transform(flat[test_idx]),
        latent_labels=[int(v) for v in digits.target[test_idx]],
        metrics=metrics,
        title="aetool report: digits demo",
        created="demo data (PCA stand-in for the autoencoder)",
    )


def screenshot(html: Path, png: Path, width: int = 1280, height: int = 2400) -> bool:
    """Render ``html`` in headless Chromium to ``png``; False when Chromium is absent."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        return False
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                exe,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                f"--screenshot={png.resolve()}",
                html.resolve().as_uri(),
            ],
            check=True,
            timeout=120,
            capture_output=True,
        )
    return png.exists()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("aetool-demo"), help="output folder")
    parser.add_argument("--png-dir", type=Path, default=None, help="also write each plot here")
    parser.add_argument("--no-labels", action="store_true", help="render the unlabeled variant")
    parser.add_argument("--no-screenshot", action="store_true")
    parser.add_argument("--height", type=int, default=5000, help="screenshot height in pixels")
    args = parser.parse_args(argv)

    data = build_demo_data(with_labels=not args.no_labels)
    html = args.out / "report.html"
    written = write_report(data, html, png_dir=args.png_dir)
    for p in written:
        print(p)
    if not args.no_screenshot:
        png = args.out / "report.png"
        if screenshot(html, png, height=args.height):
            print(png)
        else:
            print("chromium not found; screenshot skipped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
