"""Input corruption for denoising training: ``gaussian:SIGMA``, ``mask:P``, ``saltpepper:P``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from aetool.errors import ConfigError

__all__ = ["NoiseSpec", "parse_noise"]

_KINDS = ("gaussian", "mask", "saltpepper")


@dataclass(frozen=True)
class NoiseSpec:
    """A corruption: kind and a level, or a range of levels drawn per image.

    * ``gaussian:S`` adds N(0, S^2) noise (pixel units in [0, 1]); ``gaussian:A-B``
      draws S uniformly from [A, B] per image (blind denoising). The result is
      clipped to [0, 1], as in any noisy image stored in a file, so a model
      trained this way denoises real files (dark and bright areas included).
    * ``mask:P`` sets each pixel (all channels) to 0 with probability P.
    * ``saltpepper:P`` sets each pixel to 0 or 1 (even odds) with probability P.
    """

    kind: str
    low: float
    high: float

    def __str__(self) -> str:
        level = f"{self.low:g}" if self.low == self.high else f"{self.low:g}-{self.high:g}"
        return f"{self.kind}:{level}"

    def apply(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Corrupt a batch ``(N, C, H, W)``; draws come from ``generator`` (on x's device)."""
        n = x.shape[0]
        level = torch.rand(n, 1, 1, 1, generator=generator, device=x.device, dtype=x.dtype)
        level = self.low + (self.high - self.low) * level
        if self.kind == "gaussian":
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            return (x + noise * level).clamp_(0.0, 1.0)
        shape = (n, 1, *x.shape[2:])
        u = torch.rand(shape, generator=generator, device=x.device, dtype=x.dtype)
        hit = u < level
        if self.kind == "mask":
            return x.masked_fill(hit, 0.0)
        salt = torch.rand(shape, generator=generator, device=x.device, dtype=x.dtype) < 0.5
        out = x.masked_fill(hit & salt, 1.0)
        return out.masked_fill(hit & ~salt, 0.0)


def parse_noise(spec: str | None) -> NoiseSpec | None:
    """Parse ``KIND:LEVEL`` or ``KIND:LOW-HIGH``; None or ``none`` means no corruption."""
    if spec is None or spec.strip().lower() in ("", "none"):
        return None
    kind, sep, level = spec.strip().lower().partition(":")
    if kind not in _KINDS or not sep:
        raise ConfigError(
            f"noise {spec!r} is not KIND:LEVEL with KIND one of {', '.join(_KINDS)} "
            "(for example gaussian:0.1, gaussian:0.02-0.2, mask:0.3, saltpepper:0.05)"
        )
    try:
        if "-" in level.lstrip("-"):
            a, b = level.split("-", 1)
            low, high = float(a), float(b)
        else:
            low = high = float(level)
    except ValueError:
        raise ConfigError(f"noise level in {spec!r} is not a number or LOW-HIGH range") from None
    if not (0 <= low <= high):
        raise ConfigError(f"noise level in {spec!r} must be >= 0 with LOW <= HIGH")
    if kind != "gaussian" and high > 1:
        raise ConfigError(f"{kind} noise in {spec!r} is a probability and must be <= 1")
    return NoiseSpec(kind, low, high)
