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
    "ImageSet": "aetool.data.cache",
    "find_images": "aetool.data.inputs",
    "load_images": "aetool.data.cache",
    "decode_image": "aetool.data.decode",
    "ModelConfig": "aetool.models.registry",
    "create_model": "aetool.models.registry",
    "list_models": "aetool.models.registry",
    "TrainConfig": "aetool.training.config",
    "TrainResult": "aetool.training.record",
    "TrainCallback": "aetool.training.callbacks",
    "train": "aetool.training.loop",
    "save_model": "aetool.models.file",
    "load_model": "aetool.models.file",
    "read_metadata": "aetool.models.file",
    "score_images": "aetool.anomaly.pipeline",
    "ScoreRun": "aetool.anomaly.pipeline",
    "AnomalyDetector": "aetool.anomaly.detector",
    "export_model": "aetool.models.export",
    "ScoreOptions": "aetool.anomaly.options",
    "ScoreSummary": "aetool.anomaly.summary",
    "SCORE_KINDS": "aetool.anomaly.scores",
    "ScoreRow": "aetool.anomaly.results",
    "Threshold": "aetool.anomaly.thresholds",
    "fit_threshold": "aetool.anomaly.thresholds",
    "parse_threshold": "aetool.anomaly.thresholds",
    "infer_labels": "aetool.anomaly.labels",
    "compute_metrics": "aetool.anomaly.evaluation",
    "image_scores": "aetool.anomaly.scores",
    "error_maps": "aetool.anomaly.scores",
    "denoise_images": "aetool.denoise.pipeline",
    "denoise_array": "aetool.denoise.array",
    "encode_latents": "aetool.latents",
    "interpolate": "aetool.latents",
    "build_report": "aetool.report.collect",
    "write_report": "aetool.report.html",
    "ReportData": "aetool.report.data",
    "select_shard": "aetool.data.shards",
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
