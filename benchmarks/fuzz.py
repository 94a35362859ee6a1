"""Fuzz aetool's readers: mutated images and model files must fail as one clear error.

Every case is one mutated file fed to the readers the commands use:
``decode_image`` (train, score, export, report), ``read_image`` (denoise),
``load_mask`` (score's masks, where the caller catches anything) and
``load_model`` (every command that takes -m). An outcome is

- ``ok``: read;
- ``error``: refused with an :class:`~aetool.errors.AetoolError` (one line in the CLI);
- ``traceback``: any other exception (would be a traceback or a lost row);
- ``hang``: over ``--case-timeout`` seconds;
- ``abort``: the worker process died (a C-level crash).

Cases run in worker processes, a chunk each, so an abort or hang costs only
its case: the parent restarts the worker after it. Target: zero tracebacks,
hangs and aborts. Figures go to BENCHMARKS.md ("Hostile input")::

    python benchmarks/fuzz.py --cases 3000 --seed 0
"""

from __future__ import annotations

import argparse
import collections
import copy
import io
import json
import os
import random
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

KINDS = ("image", "model")


class _Timeout(Exception):
    pass


# ---------------------------------------------------------------------------
# seeds


def seed_images() -> list[tuple[str, bytes]]:
    """Small valid images in the formats and modes aetool reads."""
    rng = np.random.default_rng(0)
    gray = (rng.random((20, 24)) * 255).astype(np.uint8)
    rgb = (rng.random((20, 24, 3)) * 255).astype(np.uint8)
    out: list[tuple[str, bytes]] = []

    def save(ext: str, img: Image.Image, **kw: Any) -> None:
        buf = io.BytesIO()
        img.save(buf, format=kw.pop("format", ext.upper().lstrip(".")), **kw)
        out.append((ext, buf.getvalue()))

    save(".png", Image.fromarray(gray))
    save(".png", Image.fromarray(rgb).convert("RGBA"))
    save(".png", Image.fromarray(rgb).convert("P"))
    save(".png", Image.fromarray(gray.astype(np.uint16) * 257), format="PNG")
    save(".jpg", Image.fromarray(rgb), format="JPEG")
    save(".bmp", Image.fromarray(gray))
    save(".gif", Image.fromarray(gray))
    save(".webp", Image.fromarray(rgb), format="WEBP")
    frames = [Image.fromarray(gray), Image.fromarray(255 - gray)]
    save(".tif", frames[0], format="TIFF", save_all=True, append_images=frames[1:])
    save(".tif", Image.fromarray(rgb).convert("CMYK"), format="TIFF")
    return out


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """One of: flip bytes, truncate, insert junk, duplicate a span, set sizes to extremes."""
    b = bytearray(data)
    how = rng.randrange(5)
    if how == 0:
        for _ in range(rng.randint(1, 16)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif how == 1:
        b = b[: rng.randrange(len(b))]
    elif how == 2:
        at = rng.randrange(len(b))
        b[at:at] = os.urandom(rng.randint(1, 64))
    elif how == 3:
        i, j = sorted(rng.randrange(len(b)) for _ in range(2))
        b[j:j] = b[i:j]
    else:  # a size or dimension field to an extreme (width/height, chunk lengths)
        at = rng.randrange(max(1, min(len(b) - 4, 64)))
        b[at : at + 4] = struct.pack(">I", rng.choice([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 65535]))
    return bytes(b)


# ---------------------------------------------------------------------------
# model files


def seed_model(folder: Path) -> Path:
    """A tiny trained-like conv model file (random weights, real metadata)."""
    from aetool.models.file import save_model
    from aetool.models.registry import create_model

    model = create_model("conv", channels=1, height=16, width=16, latent_dim=4, base_channels=4)
    meta = {
        "preprocessing": {"channels": 1, "height": 16, "width": 16, "resize": "stretch",
                          "alpha_background": "black"},
        "training": {"noise": None, "val_count": 2},
        "validation": {"scores": {"mse": [0.01, 0.02]}, "summary": {}},
    }  # fmt: skip
    return save_model(folder / "seed.safetensors", model, meta)


_EXTREMES: list[Any] = [None, True, -1, 0, 2**40, 1e308, float("nan"), "x", "", [], {}, [1] * 3,
                        {"a": {"b": {}}}, "9" * 50]  # fmt: skip


def mutate_meta(meta: dict[str, Any], rng: random.Random) -> str:
    """The metadata JSON with one field (at any depth) replaced, deleted or deeply nested."""
    m = copy.deepcopy(meta)
    paths: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for k, v in list(items):
            paths.append((node, k))
            if isinstance(v, (dict, list)) and len(paths) < 400:
                walk(v)

    walk(m)
    parent, key = rng.choice(paths)
    how = rng.randrange(3)
    if how == 0 and isinstance(parent, dict):
        del parent[key]
    elif how == 1:  # written as text: json.dumps itself cannot nest 5,000 deep
        depth = rng.choice([5, 50, 5000])
        parent[key] = "@NEST@"
        return json.dumps(m).replace('"@NEST@"', "[" * depth + "1" + "]" * depth, 1)
    else:
        parent[key] = rng.choice(_EXTREMES)
    return json.dumps(m, allow_nan=True)


def write_model_case(seed_path: Path, dest: Path, rng: random.Random) -> None:
    """A model file with mutated metadata, or mutated raw bytes (header or tensors)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    if rng.random() < 0.6:
        with safe_open(str(seed_path), "pt") as f:
            meta = json.loads((f.metadata() or {})["aetool"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        save_file(tensors, str(dest), metadata={"aetool": mutate_meta(meta, rng)})
    else:
        data = seed_path.read_bytes()
        n = struct.unpack("<Q", data[:8])[0]
        if rng.random() < 0.7:  # the header: length and JSON
            head = mutate_bytes(data[: 8 + n], rng)
            dest.write_bytes(head + data[8 + n :])
        else:
            dest.write_bytes(mutate_bytes(data, rng))


# ---------------------------------------------------------------------------
# running cases


def run_case(kind: str, index: int, seed: int, work: Path, seed_path: Path | None) -> str:
    """Build case ``index`` and feed it to the readers; return its outcome."""
    from aetool.anomaly.evaluation import load_mask
    from aetool.data.decode import decode_image
    from aetool.denoise.imageio import read_image
    from aetool.errors import AetoolError
    from aetool.models.file import load_model

    rng = random.Random(f"{seed}-{kind}-{index}")
    if kind == "image":
        ext, data = rng.choice(_SEEDS)
        path = work / f"case{index}{ext}"
        path.write_bytes(mutate_bytes(data, rng))
        readers = [
            lambda: decode_image(path, channels=rng.choice([None, 1, 3])),
            lambda: read_image(path),
        ]
    else:
        assert seed_path is not None
        path = work / f"case{index}.safetensors"
        write_model_case(seed_path, path, rng)
        readers = [lambda: load_model(path)]
    worst = "ok"
    for read in readers:
        try:
            read()
        except AetoolError:
            worst = "error" if worst == "ok" else worst
        except _Timeout:
            return "hang"
        except Exception as exc:  # noqa: BLE001 - exactly what this counts
            print(f"case {index}: {type(exc).__name__}: {str(exc)[:200]}", file=sys.stderr)
            return "traceback"
    if kind == "image":
        try:  # the score pipeline catches anything from a mask: only hangs count here
            load_mask(path, (8, 8), "stretch", True)
        except _Timeout:
            return "hang"
        except Exception:  # noqa: BLE001, S110
            pass
    path.unlink(missing_ok=True)
    return worst


_SEEDS: list[tuple[str, bytes]] = []


def worker(kind: str, seed: int, start: int, count: int, case_timeout: float) -> None:
    """Print ``index outcome`` per case (flushed, so the parent knows where a crash was)."""
    import torch

    torch.set_num_threads(1)
    _SEEDS.extend(seed_images())

    def alarm(signum: int, frame: Any) -> None:
        raise _Timeout

    signal.signal(signal.SIGALRM, alarm)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        seed_path = seed_model(work) if kind == "model" else None
        for i in range(start, start + count):
            signal.setitimer(signal.ITIMER_REAL, case_timeout)
            try:
                outcome = run_case(kind, i, seed, work, seed_path)
            except _Timeout:
                outcome = "hang"
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            print(i, outcome, flush=True)


def run_kind(kind: str, cases: int, seed: int, chunk: int, case_timeout: float) -> tuple[
    collections.Counter[str], list[int]
]:  # fmt: skip
    """All cases of one kind through worker processes; counts and the failing case numbers."""
    counts: collections.Counter[str] = collections.Counter()
    bad: list[int] = []
    next_case = 0
    while next_case < cases:
        n = min(chunk, cases - next_case)
        cmd = [sys.executable, __file__, "--worker", kind, "--seed", str(seed),
               "--start", str(next_case), "--cases", str(n), "--case-timeout", str(case_timeout)]  # fmt: skip
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=60 + n * case_timeout
            )
            out, rc = proc.stdout, proc.returncode
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            rc = None
        done = [line.split() for line in out.splitlines() if line.strip()]
        for i_s, outcome in done:
            counts[outcome] += 1
            if outcome in ("traceback", "hang"):
                bad.append(int(i_s))
        last = int(done[-1][0]) if done else next_case - 1
        if rc == 0 and last == next_case + n - 1:
            next_case += n
            continue
        # The worker died (abort) or stuck in C code (hang) on the case after the last one.
        counts["abort" if rc is not None else "hang"] += 1
        bad.append(last + 1)
        next_case = last + 2
    return counts, bad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=3000, help="cases per kind")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chunk", type=int, default=500)
    ap.add_argument("--case-timeout", type=float, default=20.0)
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--worker", choices=KINDS, help=argparse.SUPPRESS)
    ap.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.seed, args.start, args.cases, args.case_timeout)
        return
    for kind in args.kinds.split(","):
        t0 = time.perf_counter()
        counts, bad = run_kind(kind, args.cases, args.seed, args.chunk, args.case_timeout)
        took = time.perf_counter() - t0
        summary = ", ".join(f"{k} {counts[k]}" for k in ("ok", "error", "traceback", "hang",
                                                         "abort"))  # fmt: skip
        print(f"{kind}: {sum(counts.values())} cases in {took:.0f} s: {summary}")
        if bad:
            print(f"  failing cases (rerun with --worker {kind} --start N --cases 1): {bad[:20]}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
