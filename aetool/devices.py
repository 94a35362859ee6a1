"""Device selection shared by every command."""

from __future__ import annotations

from typing import TypeVar

import torch

from aetool.errors import ConfigError

__all__ = ["autocast_dtype", "fast_layout", "place", "resolve_device"]

ModuleT = TypeVar("ModuleT", bound=torch.nn.Module)


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """Turn ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` into a :class:`torch.device`.

    ``auto`` picks the current CUDA device when one is present, else the CPU.
    CUDA devices always carry their index (``cuda`` becomes ``cuda:0``), since
    a tensor's ``.device`` does and ``cuda != cuda:0``.

    Raises:
        ConfigError: the spec is unknown or names a CUDA device that is absent.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)  # validated like the string: a CUDA device must be present
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return _indexed(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        index_s = spec.partition(":")[2]
        if index_s and not index_s.isdigit():
            raise ConfigError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N")
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {spec}: no CUDA device is available here; use cpu or auto")
        dev = torch.device("cuda", int(index_s)) if index_s else torch.device("cuda")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            n = torch.cuda.device_count()
            raise ConfigError(f"--device {spec}: only {n} CUDA device(s) present (cuda:0..{n - 1})")
        return _indexed(dev)
    raise ConfigError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N")


def _indexed(dev: torch.device) -> torch.device:
    """``cuda`` -> ``cuda:N`` (the current device), so devices compare equal to tensors'.

    Before CUDA is initialised the current device is 0; asking
    ``current_device()`` then would create a context on GPU 0 in every
    process (torchrun ranks call this before picking their own GPU).
    """
    if dev.type == "cuda" and dev.index is None:
        index = torch.cuda.current_device() if torch.cuda.is_initialized() else 0
        return torch.device("cuda", index)
    return dev


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The mixed-precision dtype for a device: bf16 where supported, else fp16; None on CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def fast_layout(model: ModuleT, device: torch.device | str) -> ModuleT:
    """Lay out a model's weights the fastest way for ``device``; in place, returns ``model``.

    On the CPU, oneDNN's convolutions work in channels-last layout; with the
    weights stored that way they skip a layout conversion per layer, which
    makes convolutional models faster to run and to train (``benchmarks/cpu_layout.py``;
    BENCHMARKS.md gives the figures). Elsewhere (CUDA) the
    weights go back to torch's default layout, so a model loaded on the CPU and
    moved to a GPU runs as it always did. Only architectures that declare
    ``channels_last_ok`` (aetool's ``conv`` and ``denoiser``) are touched; the
    values, shapes, ``state_dict`` keys and saved files stay the same. Safe
    inside ``torch.inference_mode()``: the model stays trainable.
    """
    if not getattr(model, "channels_last_ok", False):
        return model
    dev = torch.device(device) if isinstance(device, str) else device
    fmt = torch.channels_last if dev.type == "cpu" else torch.contiguous_format
    # Converted weights must not become inference tensors when called in inference mode
    # (the model would no longer train); weights made in inference mode stay as they are.
    made_in_inference = any(p.is_inference() for p in model.parameters())
    with torch.inference_mode(made_in_inference):
        model.to(memory_format=fmt)
    return model


def place(model: ModuleT, device: torch.device | str) -> ModuleT:
    """``model.to(device)`` in the layout :func:`fast_layout` picks for that device."""
    return fast_layout(model.to(device), device)
