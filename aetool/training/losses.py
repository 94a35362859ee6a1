"""Training losses: reconstruction (MSE, BCE, SSIM) and the latent penalties.

The SSIM loss uses the same :func:`aetool.metrics.ssim_map` as the ``ssim``
anomaly score, so a model trained on it is judged by what it optimised. The
sparsity and contractive penalties act on the latent code ``z``, which only
vector-latent architectures have.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from aetool.metrics import ssim_map

__all__ = ["contractive_penalty", "kl_sparsity", "reconstruction_loss"]


def reconstruction_loss(kind: str, recon: Tensor, target: Tensor) -> Tensor:
    """Mean ``mse``, ``bce`` or ``1 - SSIM`` between a reconstruction and its target."""
    if kind == "mse":
        return F.mse_loss(recon, target)
    if kind == "bce":
        return F.binary_cross_entropy(recon.clamp(1e-6, 1 - 1e-6), target.clamp(0, 1))
    return 1 - ssim_map(recon, target).mean()


def kl_sparsity(z: Tensor, rho: float) -> Tensor:
    """KL divergence between the target activation ``rho`` and each unit's mean activation."""
    rho_hat = torch.sigmoid(z).mean(0).clamp(1e-6, 1 - 1e-6)
    return (rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))).sum()


def contractive_penalty(model: torch.nn.Module, x: Tensor, z: Tensor, probes: int = 1) -> Tensor:
    """Unbiased estimate of the mean squared Frobenius norm of the encoder Jacobian.

    Uses ``E_v ||J^T v||^2 = ||J||_F^2`` for ``v ~ N(0, I)`` (Hutchinson): one
    vector-Jacobian product per probe, cheap for conv encoders. ``x`` must
    require grad and ``z = model.encode(x)``.
    """
    total = x.new_zeros(())
    for _ in range(probes):
        v = torch.randn_like(z)
        (g,) = torch.autograd.grad(z, x, v, create_graph=True)
        total = total + g.pow(2).flatten(1).sum(1).mean()
    return total / probes
