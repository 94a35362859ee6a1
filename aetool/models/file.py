"""The single-file model: safetensors tensors plus JSON metadata in the header.

The header's ``__metadata__`` holds one key, ``aetool``, whose value is a JSON
document: format name and version, ``arch`` and ``arch_args`` (enough to
rebuild the module), ``preprocessing``, ``training`` and ``validation``
records. Model weights are stored under ``model.``; an interrupted run also
stores ``resume.*`` tensors (current weights, optimizer state, RNG state).
Loading rebuilds the module from the metadata and loads tensors: nothing is
ever unpickled.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from aetool.devices import place
from aetool.errors import ModelFileError
from aetool.files import UMASK, atomic_path
from aetool.models.registry import AutoEncoder, create_model
from aetool.models.schema import check_metadata, plan_model

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "LoadedModel",
    "atomic_path",
    "load_model",
    "read_metadata",
    "save_model",
]

FORMAT = "aetool-model"
FORMAT_VERSION = 1
_META_KEY = "aetool"
os.umask(UMASK)


@dataclass
class LoadedModel:
    """A model rebuilt from its file, its metadata and the tensors not part of the module."""

    model: AutoEncoder
    metadata: dict[str, Any]
    path: Path
    extra: dict[str, torch.Tensor]

    @property
    def preprocessing(self) -> dict[str, Any]:
        return self.metadata.get("preprocessing", {})

    def validation_scores(self, kind: str) -> list[float]:
        """Sorted per-image validation scores of one kind (empty when absent)."""
        return list(self.metadata.get("validation", {}).get("scores", {}).get(kind, []))


def save_model(
    path: str | os.PathLike[str],
    model: AutoEncoder,
    metadata: dict[str, Any],
    extra: dict[str, torch.Tensor] | None = None,
    *,
    overwrite: bool = True,
) -> Path:
    """Write the model atomically (temp file + rename) and return its path.

    Args:
        path: destination ``.safetensors`` file.
        model: the module; its ``arch_args()`` are recorded.
        metadata: the rest of the metadata (preprocessing, training, validation).
        extra: more tensors to store under their own names (resume state).
        overwrite: replace an existing file; without it the file is created
            exclusively and an existing one is an :class:`~aetool.errors.OutputError`.
    """
    meta = dict(metadata)
    meta["format"] = FORMAT
    meta["format_version"] = FORMAT_VERSION
    meta["arch"] = type(model).arch_name  # type: ignore[attr-defined]
    meta["arch_args"] = model.arch_args()
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for k, v in (extra or {}).items():
        tensors[k] = v.detach().cpu().contiguous()
    header = {_META_KEY: json.dumps(meta, separators=(",", ":"), allow_nan=False)}
    target = Path(path)
    with atomic_path(target, overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return target


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON metadata of a model file, checked for format and version."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(
            f"model file {path} not found; train one with `aetool train DIR` or pass --model"
        )
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder, not a model file")
    if not path.is_file():  # a FIFO or device would block or never end: never opened
        raise ModelFileError(f"{path} is not a regular file, so not a model file")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{path} is not a safetensors model file ({exc})") from None
    return _parse_header(path, header)


def _parse_header(path: Path, header: dict[str, str]) -> dict[str, Any]:
    if _META_KEY not in header:
        raise ModelFileError(f"{path} is a safetensors file but not an aetool model")
    try:
        meta = json.loads(header[_META_KEY])
    except (ValueError, RecursionError) as exc:  # also a 5,000-digit number, deep nesting
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise ModelFileError(f"{path}: the aetool metadata is not valid JSON ({reason})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{path} is a safetensors file but not an aetool model")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFileError(f"{path}: the metadata has no valid format version")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} was written in model format {version} by a newer aetool; this one reads "
            f"format {FORMAT_VERSION} and older: upgrade aetool"
        )
    check_metadata(path, meta)
    return meta


def load_model(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild a model from its file: architecture from the metadata, then the weights.

    The weights are laid out the fastest way for ``device`` (channels-last on
    the CPU for aetool's convolutional models: :func:`~aetool.devices.fast_layout`).

    The metadata is checked (:func:`~aetool.models.schema.check_metadata`) and the
    architecture planned on the ``meta`` device against the file's tensor shapes
    (:func:`~aetool.models.schema.plan_model`) before anything is allocated.

    Raises:
        ModelFileError: missing file, not an aetool model, newer format, metadata
            of the wrong shape, an architecture too large or not matching the
            tensors, or weights that are not finite.
    """
    path = Path(path)
    meta = read_metadata(path)
    state: dict[str, torch.Tensor] = {}
    extra: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            keys = list(f.keys())
            shapes = {k[len("model.") :]: tuple(f.get_slice(k).get_shape()) for k in keys
                      if k.startswith("model.")}  # fmt: skip
            plan_model(path, meta, shapes)
            for key in keys:
                if key.startswith("model."):
                    state[key[len("model.") :]] = f.get_tensor(key)
                else:
                    extra[key] = f.get_tensor(key)
    except (SafetensorError, OSError, ValueError, TypeError) as exc:
        raise ModelFileError(f"{path}: cannot read the tensors ({str(exc)[:200]})") from None
    for key, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ModelFileError(f"{path}: the weights hold NaN or infinite values ({key})")
    try:
        model = create_model(meta["arch"], **meta.get("arch_args", {}))
    except Exception as exc:  # noqa: BLE001 - plan_model built it; this is belt and braces
        raise ModelFileError(
            f"{path}: cannot rebuild architecture {meta.get('arch')!r}: {exc}"
        ) from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise ModelFileError(
            f"{path}: the tensors do not match the {meta['arch']!r} architecture ({detail[:300]})"
        ) from None
    place(model, device).eval()
    return LoadedModel(model=model, metadata=meta, path=path, extra=extra)
