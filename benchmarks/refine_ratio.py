"""The refinement's cost against the network's on one picture: ``(network + refinement) / network``.

camera's top-left 481x321 with Gaussian noise of sigma 20, denoised by the bundled
denoiser through :func:`aetool.denoise.array.denoise_array` without and with
``refine=True``, and :func:`aetool.denoise.refine.wiener_refine` alone; each the best of
``--rounds`` rounds, at ``--threads`` torch threads. For a before/after on the same
machine, run it against each tree (``PYTHONPATH=/that/tree``), alternating.

    python benchmarks/refine_ratio.py --threads 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from skimage import data

    from aetool.denoise.array import denoise_array
    from aetool.denoise.refine import wiener_refine
    from aetool.models.bundled import bundled_model_path
    from aetool.models.file import load_model

    model = load_model(bundled_model_path()).model.eval()
    clean = data.camera()[:321, :481].astype(np.float32) / 255
    rng = np.random.default_rng(0)
    noisy = (clean + rng.normal(0, 20 / 255, clean.shape)).astype(np.float32)
    best = {"network": np.inf, "network + refinement": np.inf, "refinement alone": np.inf}
    pilot = denoise_array(model, noisy, device="cpu")
    for _ in range(args.rounds):
        for name, fn in (
            ("network", lambda: denoise_array(model, noisy, device="cpu")),
            (
                "network + refinement",
                lambda: denoise_array(model, noisy, device="cpu", refine=True),
            ),
            ("refinement alone", lambda: wiener_refine(noisy, pilot, 20 / 255)),
        ):
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    ratio = best["network + refinement"] / best["network"]
    print(f"{args.threads} thread(s): " + ", ".join(f"{k} {v:.3f} s" for k, v in best.items())
          + f"; ratio {ratio:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
