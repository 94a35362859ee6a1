"""aetool: anomaly detection and denoising with autoencoders.

The command line (``aetool``) is a thin layer over these functions::

    from aetool import ModelConfig, TrainConfig, load_images, load_model, score_images, train

    result = train(load_images(["good/"]), ModelConfig(arch="conv"), TrainConfig(epochs=50))
    result.save("model.safetensors")
    for row in score_images(["new/"], load_model("model.safetensors")):
        print(row.path, row.score, row.is_anomaly)
"""

from __future__ import annotations

import os
from importlib import import_module
from typing import Any

# OpenMP threads that spin while waiting make torch crawl on busy or shared CPUs: the demo
# took 4.6 minutes instead of 17 s with one other job running (BENCHMARKS.md). Sleeping
# waiters cost nothing measurable on an idle machine. Only effective when aetool is
# imported before torch starts its thread pool, as in the CLI; a user's setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

# Public name -> defining module. Imported on first use, so `import aetool` stays light
# and `aetool --help` does not pay for torch before it needs it.
_EXPORTS = {
    "AetoolError": "aetool.errors",
    "ImageSet": "aetool.images",
    "find_images": "aetool.images",
    "load_images": "aetool.images",
    "decode_image": "aetool.images",
    "ModelConfig": "aetool.models",
    "create_model": "aetool.models",
    "list_models": "aetool.models",
    "TrainConfig": "aetool.training",
    "TrainResult": "aetool.training",
    "TrainCallback": "aetool.training",
    "train": "aetool.training",
    "save_model": "aetool.modelfile",
    "load_model": "aetool.modelfile",
    "read_metadata": "aetool.modelfile",
    "score_images": "aetool.scorer",
    "ScoreRun": "aetool.scorer",
    "ScoreSummary": "aetool.scorer",
    "SCORE_KINDS": "aetool.scoring",
    "ScoreRow": "aetool.scoring",
    "Threshold": "aetool.scoring",
    "fit_threshold": "aetool.scoring",
    "parse_threshold": "aetool.scoring",
    "infer_labels": "aetool.scoring",
    "compute_metrics": "aetool.scoring",
    "image_scores": "aetool.scoring",
    "error_maps": "aetool.scoring",
    "denoise_images": "aetool.denoising",
    "denoise_array": "aetool.denoising",
    "encode_latents": "aetool.latents",
    "interpolate": "aetool.latents",
    "build_report": "aetool.reporting",
    "write_report": "aetool.report",
    "ReportData": "aetool.report",
    "select_shard": "aetool.sharding",
    "run_demo": "aetool.demo",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'aetool' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
