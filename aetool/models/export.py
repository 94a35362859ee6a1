"""Export a model file to ONNX or TorchScript for deployment without aetool.

The exported graph is the model plus the scoring arithmetic of
:mod:`aetool.anomaly.scores`, so a runtime that knows nothing of aetool gets
the same numbers as ``aetool score``:

* Input ``image``: ``(N, C, H, W)`` float32 in [0, 1], already preprocessed
  as the model file describes (channels, size, resize mode, alpha background;
  all recorded in the exported metadata under ``aetool.preprocessing``).
  Models trained on patches (fully convolutional) accept any ``H`` and ``W``;
  the others only the recorded size. The batch size is free.
* Anomaly models return ``reconstruction`` ``(N, C, H, W)``, ``anomaly_map``
  ``(N, H, W)`` (the error map of the chosen score kind) and ``score`` ``(N,)``;
  an image is an anomaly when ``score > threshold`` (strictly).
* Denoisers (trained with ``--noise``) return ``denoised`` ``(N, C, H, W)``:
  one pass of the network, without the tiling, ensembling or refinement
  ``aetool denoise`` adds around it.

Metadata travels with the file: ONNX ``metadata_props`` and TorchScript
``_extra_files``, under the same keys (:func:`export_metadata`): ``aetool``
(the model file's own JSON metadata), ``aetool.preprocessing``,
``aetool.score_kind``, ``aetool.threshold`` and ``aetool.threshold_rule``,
``aetool.inputs`` and ``aetool.outputs``.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from aetool.anomaly.scores import SCORE_KINDS, error_maps, reduce_maps, resolve_score_kind
from aetool.anomaly.thresholds import fit_threshold, parse_threshold
from aetool.errors import ConfigError, OutputError
from aetool.files import atomic_path
from aetool.models.file import LoadedModel, load_model

__all__ = ["EXPORT_FORMATS", "ExportGraph", "export_metadata", "export_model", "is_denoiser"]

#: Formats :func:`export_model` writes.
EXPORT_FORMATS = ("onnx", "torchscript")
_ONNX_OPSET = 17


def is_denoiser(model: LoadedModel) -> bool:
    """Whether the model was trained to denoise (``training.noise`` recorded)."""
    return bool(model.metadata.get("training", {}).get("noise"))


class ExportGraph(nn.Module):
    """The network plus scoring: image in [0, 1] -> (reconstruction, map, score) or denoised."""

    def __init__(self, model: nn.Module, score_kind: str, denoiser: bool) -> None:
        super().__init__()
        self.model = model
        self.score_kind = score_kind
        self.denoiser = denoiser

    def forward(self, image: Tensor) -> Any:
        recon = self.model(image).float()
        if self.denoiser:
            return recon
        maps = error_maps(image, recon, self.score_kind)
        return recon, maps, reduce_maps(maps, self.score_kind)


def _input_shape(model: LoadedModel) -> tuple[int, int, int, bool]:
    """(channels, height, width, fixed size) of the exported input."""
    pre = model.preprocessing
    args = model.metadata.get("arch_args", {})
    channels = int(pre.get("channels") or args.get("channels") or 1)
    if pre.get("height"):
        return channels, int(pre["height"]), int(pre["width"]), True
    # Trained on patches: any size; trace with the patch size (or a safe default).
    side = int(model.metadata.get("training", {}).get("patch_size") or 64)
    return channels, side, side, False


def export_metadata(
    model: LoadedModel, score_kind: str, threshold: str, denoiser: bool
) -> dict[str, str]:
    """The key -> string metadata written into the exported file."""
    c, h, w, fixed = _input_shape(model)
    meta = {
        "aetool": json.dumps(model.metadata, separators=(",", ":"), allow_nan=False),
        "aetool.preprocessing": json.dumps(
            {
                **model.preprocessing,
                "input": f"(N, {c}, {h if fixed else 'H'}, {w if fixed else 'W'}) float32 "
                "in [0, 1]: pixel value / 255 after the recorded channel conversion and resize",
            }
        ),
    }
    if denoiser:
        meta["aetool.inputs"] = "image"
        meta["aetool.outputs"] = "denoised"
        return meta
    spec = parse_threshold(threshold)
    thr = fit_threshold(spec, model.validation_scores(score_kind))
    meta["aetool.score_kind"] = score_kind
    meta["aetool.threshold"] = repr(float(thr.value))
    meta["aetool.threshold_rule"] = thr.rule
    meta["aetool.inputs"] = "image"
    meta["aetool.outputs"] = "reconstruction,anomaly_map,score"
    meta["aetool.decision"] = "anomaly when score > threshold"
    return meta


def _export_onnx(graph: ExportGraph, example: Tensor, target: Path, dynamic_hw: bool) -> None:
    import onnx  # noqa: F401 - fail early with a clear message below when missing

    outputs = ["denoised"] if graph.denoiser else ["reconstruction", "anomaly_map", "score"]
    axes: dict[str, dict[int, str]] = {"image": {0: "N"}}
    if dynamic_hw:
        axes["image"].update({2: "H", 3: "W"})
    for name in outputs:
        axes[name] = {0: "N"} | ({1: "H", 2: "W"} if name == "anomaly_map" and dynamic_hw else {})
        if name in ("reconstruction", "denoised") and dynamic_hw:
            axes[name].update({2: "H", 3: "W"})
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated in favour of dynamo, which needs
        # extra packages and is slower; it is kept for as long as torch ships it.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            (example,),
            str(target),
            input_names=["image"],
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=_ONNX_OPSET,
            dynamo=False,
        )


def _add_onnx_metadata(path: Path, meta: dict[str, str]) -> None:
    import onnx

    proto = onnx.load(str(path))
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "aetool"
    onnx.save(proto, str(path))


def export_model(
    model: LoadedModel | str | os.PathLike[str],
    output: str | os.PathLike[str],
    fmt: str = "onnx",
    *,
    score_kind: str = "mse",
    threshold: str = "auto",
) -> Path:
    """Write the model (with its scoring) as an ONNX or TorchScript file.

    Example::

        export_model("model.safetensors", "model.onnx")
        # then, without aetool:
        # recon, amap, score = onnxruntime.InferenceSession("model.onnx").run(None, {"image": x})

    Args:
        model: a :class:`LoadedModel` or a model file path.
        output: the file to write (replaced atomically).
        fmt: ``onnx`` or ``torchscript``.
        score_kind: the score the graph computes (one of :data:`SCORE_KINDS`).
        threshold: the rule recorded as ``aetool.threshold`` (as ``aetool score -t``).

    Raises:
        ConfigError: unknown format or score kind, bad threshold, or the
            ``onnx`` package missing for ONNX export.
        OutputError: ``output`` is the model file itself.
    """
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; choose one of: {', '.join(EXPORT_FORMATS)}")
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    score_kind = resolve_score_kind(score_kind, loaded.model)
    if score_kind not in SCORE_KINDS:  # "model": a draem's own map
        raise ConfigError(
            f"export-model does not export {loaded.metadata.get('arch')} models (their own anomaly map) yet; "
            f"it exports the autoencoders with --score {', '.join(SCORE_KINDS)}"
        )
    target = Path(output)
    if target.exists() and target.resolve() == loaded.path.resolve():
        raise OutputError(f"refusing to overwrite the model file {target} with its export")
    denoiser = is_denoiser(loaded)
    meta = export_metadata(loaded, score_kind, threshold, denoiser)
    # A copy: the caller's model keeps its device and (channels-last) layout.
    net = copy.deepcopy(loaded.model).to("cpu").to(memory_format=torch.contiguous_format).eval()
    graph = ExportGraph(net, score_kind, denoiser).eval()
    c, h, w, fixed = _input_shape(loaded)
    example = torch.rand(2, c, h, w, generator=torch.Generator().manual_seed(0))
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401
        except ImportError:
            raise ConfigError(
                "ONNX export needs the onnx package: pip install 'aetool[export]'"
            ) from None
    with atomic_path(target) as tmp, torch.no_grad():
        if fmt == "onnx":
            _export_onnx(graph, example, tmp, dynamic_hw=not fixed)
            _add_onnx_metadata(tmp, meta)
        else:
            with warnings.catch_warnings():
                # TorchScript is deprecated in favour of torch.export, but it is what C++
                # (libtorch) and older deployments load; the warnings say nothing new here.
                warnings.simplefilter("ignore")
                traced = torch.jit.trace(graph, (example,), check_trace=False)
                torch.jit.save(traced, str(tmp), _extra_files=meta)
    return target
