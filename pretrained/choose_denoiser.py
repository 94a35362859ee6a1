"""Choose between trained denoiser files by validation PSNR, by a rule fixed in advance.

The rule used for every stage of the bundled denoiser since the GPU fine-tunings
(``pretrained/README.md``), made executable so that it is applied the same way each
time and never on the test pictures::

    python pretrained/choose_denoiser.py --base aetool/models/pretrained/denoiser-gray.safetensors \\
        cand1.safetensors cand2.safetensors ...

Every file (the base and each candidate) is scored here, on the CPU, as it is stored
(float16 weights loaded into float32), by ``validation_psnr`` of
``pretrained/train_pretrained_denoiser.py``: mean PSNR over the validation pictures
(:data:`VAL_IMAGES`, top-left ``--crop`` x ``--crop``) at sigma 15, 25 and 50,
unclipped noise, fixed seeds. A candidate is *eligible* if no sigma scores more than
``--tolerance`` dB below the base; the eligible candidate with the best mean over the
three sigmas is *chosen* if that mean beats the base's by ``--margin`` dB or more.

The table goes to stderr; the chosen file's path is the only line on stdout. Exit
status: 0 a candidate was chosen, 1 none was (keep the base), 2 bad arguments (a file
named twice, the base among the candidates say, is one).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_pretrained_denoiser import (  # noqa: E402
    VAL_IMAGES,
    VAL_SIGMAS,
    load_pictures,
    validation_psnr,
)

from aetool.errors import ModelFileError  # noqa: E402
from aetool.models.file import load_model  # noqa: E402


def mean(scores: dict[str, float]) -> float:
    return sum(scores.values()) / len(scores)


def choose(
    base: dict[str, float],
    candidates: dict[str, dict[str, float]],
    margin: float = 0.01,
    tolerance: float = 0.01,
) -> tuple[str | None, dict[str, bool]]:
    """The chosen candidate's name (or None) and whether each candidate was eligible.

    ``base`` and each candidate map ``sigma15``, ``sigma25``, ``sigma50`` to PSNR (dB).
    """
    eligible = {
        name: all(s[k] >= base[k] - tolerance - 1e-9 for k in base)
        for name, s in candidates.items()
    }
    ranked = sorted((n for n, ok in eligible.items() if ok), key=lambda n: -mean(candidates[n]))
    if ranked and mean(candidates[ranked[0]]) >= mean(base) + margin - 1e-9:
        return ranked[0], eligible
    return None, eligible


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidates", nargs="+", type=Path, help="denoiser model files")
    parser.add_argument("--base", type=Path, required=True, help="the file to beat")
    parser.add_argument("--margin", type=float, default=0.01, help="dB (default 0.01)")
    parser.add_argument("--tolerance", type=float, default=0.01, help="dB (default 0.01)")
    parser.add_argument("--crop", type=int, default=512, help="validation crop side (512)")
    parser.add_argument("--pictures", type=Path, default=None, metavar="NPZ")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.crop < 16:
        parser.error("--crop must be at least 16")
    paths = [p.resolve() for p in [args.base, *args.candidates]]
    if len(set(paths)) < len(paths):
        parser.error("a file is named twice (the base among the candidates?)")
    torch.set_num_threads(args.threads)
    pictures = [im[: args.crop, : args.crop] for im in load_pictures(VAL_IMAGES, args.pictures)]
    scores: dict[str, dict[str, float]] = {}
    for path in [args.base, *args.candidates]:
        try:
            loaded = load_model(path)
        except (ModelFileError, OSError) as exc:
            parser.error(str(exc))
        if loaded.metadata.get("arch") != "denoiser":
            parser.error(f"{path} is a {loaded.metadata.get('arch')!r} model, not a denoiser")
        scores[str(path)] = validation_psnr(loaded.model, pictures, torch.device("cpu"))
    base = scores.pop(str(args.base))
    chosen, eligible = choose(base, scores, args.margin, args.tolerance)
    head = " / ".join(f"σ{s}" for s in VAL_SIGMAS)
    print(f"validation PSNR ({', '.join(VAL_IMAGES)}), {head}, mean:", file=sys.stderr)
    rows = [(str(args.base), base, "base")]
    rows += [
        (n, s, "chosen" if n == chosen else "eligible" if eligible[n] else "not eligible")
        for n, s in scores.items()
    ]
    for name, s, note in rows:
        vals = " / ".join(f"{v:.3f}" for v in s.values())
        print(f"  {name}: {vals}  mean {mean(s):.3f}  {note}", file=sys.stderr)
    if chosen is None:
        print("no candidate chosen: keep the base", file=sys.stderr)
        return 1
    print(chosen)
    return 0


if __name__ == "__main__":
    sys.exit(main())
