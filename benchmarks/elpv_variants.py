"""ELPV: draem variants compared on VALIDATION cells only (how the defaults were chosen).

Validation, never the test set of ``benchmarks/elpv.py``: normal cells (defect
probability 0) outside its test split and in the bucket ``sha256("val:" + name) % 8
== 0`` against the cells with defect probability 2/3 and 1/3 (the test uses 0 and
1 only). Training uses the other normal cells outside the test split. Each run
trains the draem segmentation network for ``--steps`` steps as ``train_draem``
does (batch 16, Adam 1e-3, 50 warm-up steps, cosine), then prints the validation
ROC AUC of the image score without and with flip averaging, as one JSON line:
the mean of the map's top 1% (``val_auc_*``) and the same less the map's mean
(``val_auc_*_minus_mean``, the ``centred_score`` that ``aetool train`` builds
now). ``--save PATH`` writes the network's weights (safetensors).

Variants: ``--work`` (working size), ``--crop`` (train on random crops of the
working size, score whole images), ``--split W`` (add a "crack that splits the
cell" defect kind with weight W: a long crack from a border; the part it cuts
off is shaded), ``--drop`` (leave defect kinds out), ``--standardise`` (each image
to mean 0.5 and standard deviation 0.2 before the network), ``--p-anomaly`` (share of
training images given defects), ``--base`` (the U-Net's width), ``--seed``.

Needs the ``bench`` extra (``elpv-dataset``, CC BY-NC-SA: benchmark only)::

    python benchmarks/elpv_variants.py --type poly --work 128 --steps 1000
    python benchmarks/elpv_variants.py --type poly --work 256 --crop 128
    python benchmarks/elpv_variants.py --type mono --split 0.3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time

import numpy as np
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from aetool.models.draem import DraemModel
from aetool.training import defects
from aetool.training.defects import DEFAULT_WEIGHTS, simulate_defects
from aetool.training.draem import focal_loss


def _bucket(text: str, n: int) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest(), 16) % n


def load(cell_type: str) -> dict[str, np.ndarray]:
    """uint8 300x300 cells: ``train``, ``val`` (normals), ``p067``, ``p033``."""
    from pathlib import Path

    import elpv_dataset
    from elpv_dataset.utils import load_dataset

    images, probs, types = load_dataset()
    labels = Path(elpv_dataset.__file__).parent / "data" / "labels.csv"
    names = [line.split()[0] for line in labels.read_text().splitlines() if line.strip()]
    out: dict[str, list[np.ndarray]] = {"train": [], "val": [], "p067": [], "p033": []}
    for im, p, t, n in zip(images, probs, types, names, strict=True):
        if t != cell_type:
            continue
        if p == 0 and _bucket(n, 5) != 0:  # the test split of benchmarks/elpv.py is left out
            out["val" if _bucket("val:" + n, 8) == 0 else "train"].append(im)
        elif abs(p - 2 / 3) < 1e-3:
            out["p067"].append(im)
        elif abs(p - 1 / 3) < 1e-3:
            out["p033"].append(im)
    return {k: np.stack(v) for k, v in out.items()}


def _resize(a: np.ndarray, s: int) -> np.ndarray:
    if a.shape[-1] == s:
        return a.astype(np.float32)[:, None] / 255
    ims = [np.asarray(Image.fromarray(im).resize((s, s), Image.BILINEAR)) for im in a]
    return np.stack(ims).astype(np.float32)[:, None] / 255


def _split(img: np.ndarray, others: object, rng: np.random.Generator, kind: str):
    """A long crack from a border; the part of the cell it cuts off is shaded."""
    from scipy import ndimage

    c, h, w = img.shape
    m = np.zeros((h, w), np.float32)
    t = rng.uniform(0.1, 0.9)
    y, x = [(0.0, t * w), (h - 1.0, t * w), (t * h, 0.0), (t * h, w - 1.0)][int(rng.integers(4))]
    ang = math.atan2(rng.uniform(0, h) - y, rng.uniform(0, w) - x)
    full = rng.random() < 0.65
    length = (2.5 if full else rng.uniform(0.2, 0.9)) * max(h, w)
    wiggle = rng.uniform(0.0, 0.06)
    for _ in range(int(length / 0.5)):
        ang += rng.normal(0, wiggle)
        if rng.random() < 0.003:
            ang += rng.normal(0, 0.5)  # a kink
        y, x = y + 0.5 * math.sin(ang), x + 0.5 * math.cos(ang)
        iy, ix = int(round(y)), int(round(x))
        if not (0 <= iy < h and 0 <= ix < w):
            break
        m[iy, ix] = 1
    out = img.copy()
    if full:
        lab, n = ndimage.label(m < 0.5)
        if n >= 2:
            sizes = ndimage.sum(np.ones_like(m), lab, range(1, n + 1))
            k = 1 + int(np.argsort(sizes)[int(rng.integers(0, n - 1))])  # not the largest part
            region = (lab == k).astype(np.float32)
            if rng.random() < 0.2:
                f = rng.uniform(0.05, 0.4)  # inactive
            else:
                f = rng.uniform(0.6, 0.93) if rng.random() < 0.85 else rng.uniform(1.05, 1.2)
            out = out * (1 - region[None] * (1 - f))
    line = np.clip(defects._blur(m, 1) * 2.5, 0, 1) if rng.random() < 0.5 else m
    out = out * (1 - rng.uniform(0.2, 0.8) * line[None])
    return np.clip(out, 0, 1), m


class _Standardised(DraemModel):
    """Each image to mean 0.5 and standard deviation 0.2 before the network."""

    def outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m, s = x.mean((1, 2, 3), keepdim=True), x.std((1, 2, 3), keepdim=True) + 1e-3
        return super().outputs((x - m) / s * 0.2 + 0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--type", default="poly", choices=["mono", "poly"])
    ap.add_argument("--work", type=int, default=128)
    ap.add_argument("--crop", type=int, default=0)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--split", type=float, default=0.0)
    ap.add_argument("--drop", default="", help="defect kinds to leave out, comma-separated")
    ap.add_argument("--standardise", action="store_true")
    ap.add_argument("--p-anomaly", type=float, default=0.6, help="share of images given defects")
    ap.add_argument("--base", type=int, default=16, help="the U-Net's first width")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", default="", help="write the network's weights here (safetensors)")
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    cells = load(a.type)
    train = _resize(cells.pop("train"), a.work)
    sets = {k: _resize(v, a.work) for k, v in cells.items()}
    weights = dict(DEFAULT_WEIGHTS)
    if a.split:
        defects._APPLY["split"] = _split
        weights["split"] = a.split
    for k in filter(None, a.drop.split(",")):
        weights.pop(k)
    model = (_Standardised if a.standardise else DraemModel)(
        1, a.work, a.work, base_channels=a.base
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(a.seed)
    t0 = time.perf_counter()
    model.train()
    for step in range(a.steps):
        lr = 1e-3 * min(1, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / a.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        x = train[rng.integers(0, len(train), 16)]
        if a.crop and a.crop < a.work:
            oy, ox = rng.integers(0, a.work - a.crop + 1, 2)
            x = x[:, :, oy : oy + a.crop, ox : ox + a.crop]
        if rng.random() < 0.5:
            x = x[:, :, ::-1]
        if rng.random() < 0.5:
            x = x[:, :, :, ::-1]
        xa, masks = simulate_defects(
            np.ascontiguousarray(x), rng, p_anomaly=a.p_anomaly, weights=weights
        )
        _, logits = model.outputs(torch.from_numpy(xa))
        loss = focal_loss(logits, torch.from_numpy(masks))
        opt.zero_grad()
        loss.backward()
        opt.step()
    secs = time.perf_counter() - t0
    model.eval()
    result: dict[str, object] = {**vars(a), "train_s": round(secs)}
    for flips in (False, True):
        model.flip_average = flips
        scores = {}
        with torch.no_grad():
            for k, v in sets.items():
                out = []
                for i in range(0, len(v), 32):
                    f = model.anomaly_map(torch.from_numpy(v[i : i + 32]))[:, 0].flatten(1)
                    top = f.topk(max(1, f.shape[1] // 100), 1).values.mean(1)
                    out.append(torch.stack([top, top - f.mean(1)], 1).numpy())
                scores[k] = np.concatenate(out)
        for k in ("p067", "p033"):
            y = np.r_[np.zeros(len(scores["val"])), np.ones(len(scores[k]))]
            for j, reduce in enumerate(("", "_minus_mean")):
                auc = roc_auc_score(y, np.r_[scores["val"][:, j], scores[k][:, j]])
                result[f"val_auc_{k}" + ("_flips" if flips else "") + reduce] = round(float(auc), 3)
    print(json.dumps(result), flush=True)
    if a.save:
        from safetensors.torch import save_file

        save_file(model.state_dict(), a.save)


if __name__ == "__main__":
    main()
