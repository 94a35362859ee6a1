"""Which label-free threshold rule should ``--threshold auto`` use?

One-class set-up on scikit-learn's digits (8x8, ~180 images per digit): for
each digit as the normal class, split its images in half; PCA (8 components)
is fitted on the first half minus a held-out validation part, whose
reconstruction errors play the stored validation scores. Each rule turns those
into a threshold; the false-positive rate (FPR) is measured on the other half
of the digit (normal test images) and the true-positive rate (TPR) on every
image of the other nine digits. Means over digits and 5 random splits.

Scenarios: the validation part is 10% of the half (~9 scores, as small as a
real split of a small training set) or 50% (~45 scores); "contaminated"
swaps one validation image for an anomaly (another digit), as happens when a
training folder holds a few bad images.

Run: ``python benchmarks/threshold_rule.py`` (a few seconds on one core).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA

from aetool.anomaly.thresholds import fit_threshold

torch.set_num_threads(1)

SEEDS = range(5)


def _mad(v: np.ndarray) -> float:
    return float(np.median(np.abs(v - np.median(v))))


RULES: dict[str, Callable[[np.ndarray], float]] = {
    "p99": lambda v: fit_threshold("p99", v).value,
    "p95": lambda v: fit_threshold("p95", v).value,
    "mean+3std": lambda v: fit_threshold("3sigma", v).value,
    "median+3*1.4826*MAD": lambda v: float(np.median(v) + 3 * 1.4826 * _mad(v)),
    "max(p99, median+3*1.4826*MAD)": lambda v: max(
        float(np.percentile(v, 99)), float(np.median(v) + 3 * 1.4826 * _mad(v))
    ),
    "auto = median+4*1.4826*MAD": lambda v: fit_threshold("auto", v).value,
}


def run(val_frac: float, contaminate: bool) -> tuple[dict[str, tuple[float, float]], float]:
    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    fpr: dict[str, list[float]] = {k: [] for k in RULES}
    tpr: dict[str, list[float]] = {k: [] for k in RULES}
    n_val: list[int] = []
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        for digit in range(10):
            idx = rng.permutation(np.flatnonzero(y == digit))
            half = len(idx) // 2
            first, test = idx[:half], idx[half:]
            nv = max(2, round(val_frac * half))
            val, fit = first[:nv], first[nv:]
            others = np.flatnonzero(y != digit)
            if contaminate:
                val = np.r_[val[:-1], rng.choice(others, 1)]
            pca = PCA(n_components=8, random_state=0).fit(x[fit])

            def errors(a: np.ndarray, pca: PCA = pca) -> np.ndarray:
                return ((pca.inverse_transform(pca.transform(a)) - a) ** 2).mean(axis=1)

            v, normal, anomalous = errors(x[val]), errors(x[test]), errors(x[others])
            n_val.append(nv)
            for name, rule in RULES.items():
                t = rule(v)
                fpr[name].append(float((normal > t).mean()))
                tpr[name].append(float((anomalous > t).mean()))
    table = {k: (float(np.mean(fpr[k])), float(np.mean(tpr[k]))) for k in RULES}
    return table, float(np.mean(n_val))


def main() -> None:
    start = time.perf_counter()
    scenarios = [(0.1, False), (0.1, True), (0.5, False), (0.5, True)]
    results = []
    headers = []
    for frac, cont in scenarios:
        table, nv = run(frac, cont)
        results.append(table)
        headers.append(f"n~{nv:.0f}{' +1 anomaly' if cont else ''}")
    width = max(len(k) for k in RULES)
    print("Mean FPR on normal test images / TPR on other digits (digits, PCA-8)")
    print(f"{'rule':<{width}}  " + "  ".join(f"{h:>17}" for h in headers))
    print(f"{'':<{width}}  " + "  ".join(f"{'FPR    TPR':>17}" for _ in headers))
    for name in RULES:
        cells = "  ".join(f"{r[name][0]:>11.3f} {r[name][1]:.3f}" for r in results)
        print(f"{name:<{width}}  {cells}")
    print(f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
