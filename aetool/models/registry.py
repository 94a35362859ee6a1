"""The autoencoder base class and the registry that builds architectures by name.

Every model maps a batch ``(N, C, H, W)`` of images in [0, 1] to a
reconstruction of the same shape in [0, 1]. ``encode`` gives the latent code
(``(N, k)`` for models with a dense bottleneck) and ``decode`` maps it back.
A model is rebuilt from its file by calling :func:`create_model` with the
recorded ``arch`` and :meth:`AutoEncoder.arch_args`, so constructor arguments
must be JSON-serialisable.

Architectures live one per module (:mod:`aetool.models.conv`,
:mod:`aetool.models.dense`, :mod:`aetool.models.unet`,
:mod:`aetool.models.draem`) and register
themselves with :func:`register_model` when imported; :func:`create_model` and
:func:`list_models` import them on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from aetool.errors import ConfigError

__all__ = [
    "AutoEncoder",
    "ModelConfig",
    "count_parameters",
    "create_model",
    "list_models",
    "model_from_config",
    "register_model",
]


@dataclass
class ModelConfig:
    """What to build: architecture name and its size arguments.

    ``height``/``width``/``channels`` normally come from the data; ``extra``
    holds architecture-specific keyword arguments.
    """

    arch: str = "conv"
    latent_dim: int = 16
    channels: int = 1
    height: int = 28
    width: int = 28
    extra: dict[str, Any] | None = None


class AutoEncoder(nn.Module):
    """Base class: ``forward(x) == decode(encode(x))``."""

    #: True when the model accepts any spatial size (no dense layer).
    fully_convolutional: bool = False
    #: True when ``encode`` returns one vector per image (usable by export/latent-map).
    has_vector_latent: bool = True
    #: True when ``forward`` works on channels-last tensors (no ``.view`` of a conv
    #: output, 4-D tensors only): the model then runs channels-last on the CPU
    #: (:func:`aetool.devices.fast_layout`). Off unless an architecture declares it.
    channels_last_ok: bool = False

    def __init__(self) -> None:
        super().__init__()
        self._arch_args: dict[str, Any] = {}

    def arch_args(self) -> dict[str, Any]:
        """The constructor arguments, as recorded in the model file."""
        return dict(self._arch_args)

    def encode(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def decode(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))


_REGISTRY: dict[str, tuple[Callable[..., AutoEncoder], str]] = {}


def register_model(name: str, description: str) -> Callable[[type[AutoEncoder]], type[AutoEncoder]]:
    """Class decorator that makes an architecture available by ``name``."""

    def deco(cls: type[AutoEncoder]) -> type[AutoEncoder]:
        _REGISTRY[name] = (cls, description)
        cls.arch_name = name  # type: ignore[attr-defined]
        return cls

    return deco


def list_models() -> dict[str, str]:
    """Registered architecture names and one-line descriptions."""
    _load_plugins()
    return {name: desc for name, (_, desc) in sorted(_REGISTRY.items())}


def create_model(arch: str, **kwargs: Any) -> AutoEncoder:
    """Build a registered architecture.

    Args:
        arch: registered name (see :func:`list_models`).
        **kwargs: constructor arguments (``channels``, ``height``, ``width``,
            ``latent_dim`` and architecture-specific ones).
    """
    _load_plugins()
    if arch not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise ConfigError(f"unknown architecture {arch!r}; choose one of: {known}")
    cls, _ = _REGISTRY[arch]
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad arguments for architecture {arch!r}: {exc}") from exc


def model_from_config(cfg: ModelConfig) -> AutoEncoder:
    """Build the model a :class:`ModelConfig` describes."""
    return create_model(
        cfg.arch,
        channels=cfg.channels,
        height=cfg.height,
        width=cfg.width,
        latent_dim=cfg.latent_dim,
        **(cfg.extra or {}),
    )


def _load_plugins() -> None:
    # Each architecture module registers its classes on import. They import this module
    # for the base class and the decorator, so it imports them only here, when a name is
    # looked up, never at module level (that would be an import cycle).
    import aetool.models.conv
    import aetool.models.dense
    import aetool.models.draem
    import aetool.models.unet  # noqa: F401


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@torch.no_grad()
def _smoke(arch: str = "conv") -> tuple[int, ...]:  # pragma: no cover - debugging aid
    m = create_model(arch)
    return tuple(m(torch.rand(2, 1, 28, 28)).shape)
