"""Autoencoder modules and the registry that builds them by name.

Every model maps a batch ``(N, C, H, W)`` of images in [0, 1] to a
reconstruction of the same shape in [0, 1]. ``encode`` gives the latent code
(``(N, k)`` for models with a dense bottleneck) and ``decode`` maps it back.
A model is rebuilt from its file by calling :func:`create_model` with the
recorded ``arch`` and :meth:`AutoEncoder.arch_args`, so constructor arguments
must be JSON-serialisable.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from aetool.errors import ConfigError

__all__ = [
    "AutoEncoder",
    "ConvAutoEncoder",
    "DenseAutoEncoder",
    "ModelConfig",
    "create_model",
    "list_models",
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
    # Architectures defined in other modules register themselves on import.
    import aetool.models.unet  # noqa: F401


def _pow2_near(x: float, lo: int, hi: int) -> int:
    return int(min(hi, max(lo, 2 ** round(math.log2(max(x, 1.0))))))


@register_model("dense", "fully connected encoder/decoder (784-256-128-k for 28x28)")
class DenseAutoEncoder(AutoEncoder):
    """The classic fully connected autoencoder.

    Hidden widths scale with the input: about a third of the input size,
    rounded to a power of two, then half of that (784 -> 256 -> 128 -> k).
    """

    def __init__(
        self,
        channels: int = 1,
        height: int = 28,
        width: int = 28,
        latent_dim: int = 16,
        hidden: list[int] | None = None,
    ) -> None:
        super().__init__()
        d = channels * height * width
        if hidden is None:
            h1 = _pow2_near(d / 3, 32, 1024)
            hidden = [h1, max(16, h1 // 2)]
        self._arch_args = dict(
            channels=channels,
            height=height,
            width=width,
            latent_dim=latent_dim,
            hidden=list(hidden),
        )
        self.shape = (channels, height, width)
        enc: list[nn.Module] = [nn.Flatten()]
        prev = d
        for h in hidden:
            enc += [nn.Linear(prev, h), nn.ReLU(inplace=True)]
            prev = h
        enc.append(nn.Linear(prev, latent_dim))
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = []
        prev = latent_dim
        for h in reversed(hidden):
            dec += [nn.Linear(prev, h), nn.ReLU(inplace=True)]
            prev = h
        dec += [nn.Linear(prev, d), nn.Sigmoid(), nn.Unflatten(1, self.shape)]
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)


def conv_stages(height: int, width: int, min_side: int = 4) -> list[tuple[int, int]]:
    """Spatial sizes after each stride-2 stage: halve while the short side stays >= min_side.

    28x28 gives [(14, 14), (7, 7)] (the classic design); 8x8 gives [(4, 4)].
    """
    sizes: list[tuple[int, int]] = []
    h, w = height, width
    while min(h, w) / 2 >= min_side and len(sizes) < 7:
        h, w = math.ceil(h / 2), math.ceil(w / 2)
        sizes.append((h, w))
    return sizes


@register_model("conv", "strided-conv encoder, transposed-conv decoder, dense bottleneck")
class ConvAutoEncoder(AutoEncoder):
    """Convolutional autoencoder with a dense bottleneck of ``latent_dim``.

    Each stage is a 3x3 stride-2 convolution (28 -> 14 -> 7); stages are added
    while the short side stays at least 4 pixels, channels double from
    ``base_channels`` up to 256. The decoder mirrors it with transposed
    convolutions whose output padding restores odd sizes exactly.
    """

    channels_last_ok = True  # flatten/unflatten only; Linear outputs are viewed

    def __init__(
        self,
        channels: int = 1,
        height: int = 28,
        width: int = 28,
        latent_dim: int = 16,
        base_channels: int = 32,
    ) -> None:
        super().__init__()
        self._arch_args = dict(
            channels=channels,
            height=height,
            width=width,
            latent_dim=latent_dim,
            base_channels=base_channels,
        )
        sizes = conv_stages(height, width)
        if not sizes:
            raise ConfigError(
                f"image size {height}x{width} is too small for the conv model (needs at least 7x7)"
            )
        chans = [min(256, base_channels * 2**i) for i in range(len(sizes))]
        enc: list[nn.Module] = []
        prev = channels
        for c in chans:
            enc += [nn.Conv2d(prev, c, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
            prev = c
        self.features = nn.Sequential(*enc)
        fh, fw = sizes[-1]
        self.feature_shape = (chans[-1], fh, fw)
        flat = chans[-1] * fh * fw
        self.to_latent = nn.Linear(flat, latent_dim)
        self.from_latent = nn.Sequential(nn.Linear(latent_dim, flat), nn.ReLU(inplace=True))
        dec: list[nn.Module] = []
        targets = [(height, width)] + sizes[:-1]  # size each decoder stage must produce
        out_chans = [channels] + chans[:-1]
        for i in reversed(range(len(sizes))):
            th, tw = targets[i]
            op = (1 - th % 2, 1 - tw % 2)  # (in-1)*2 - 2 + 3 + op == target
            dec.append(
                nn.ConvTranspose2d(chans[i], out_chans[i], 3, 2, padding=1, output_padding=op)
            )
            dec.append(nn.ReLU(inplace=True) if i > 0 else nn.Sigmoid())
        self.reconstruct = nn.Sequential(*dec)

    def encode(self, x: Tensor) -> Tensor:
        return self.to_latent(self.features(x).flatten(1))

    def decode(self, z: Tensor) -> Tensor:
        return self.reconstruct(self.from_latent(z).view(-1, *self.feature_shape))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@torch.no_grad()
def _smoke(arch: str = "conv") -> tuple[int, ...]:  # pragma: no cover - debugging aid
    m = create_model(arch)
    return tuple(m(torch.rand(2, 1, 28, 28)).shape)
