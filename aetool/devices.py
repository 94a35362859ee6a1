"""Device selection shared by every command."""

from __future__ import annotations

import torch

from aetool.errors import ConfigError

__all__ = ["autocast_dtype", "fast_layout", "resolve_device"]


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


def fast_layout(model: torch.nn.Module, device: torch.device | str) -> torch.nn.Module:
    """Store a convolutional model's 4-D weights channels-last when it runs on the CPU.

    oneDNN's CPU convolutions work in channels-last layout; with the weights
    stored that way they skip a layout conversion per layer, which makes
    convolutional models 1.2-1.8x faster to run and train on the CPU
    (``benchmarks/cpu_layout.py``). Only the memory layout changes: values,
    shapes, ``state_dict`` keys and saved files are the same, and inputs may
    stay in the usual layout. Other devices and models without convolutions
    are left alone. Converts ``model`` in place and returns it.
    """
    dev = torch.device(device) if isinstance(device, str) else device
    conv = (torch.nn.Conv2d, torch.nn.ConvTranspose2d)
    if dev.type == "cpu" and any(isinstance(m, conv) for m in model.modules()):
        model.to(memory_format=torch.channels_last)
    return model
