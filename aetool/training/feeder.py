"""Feeding the loop: the train/validation split and batches served from the image cache.

Images stay uint8 in the decoded cache and become float tensors on the device
one batch at a time. Fixed-size caches are indexed directly; native-size
caches (patch training) serve random square crops, drawn in proportion to
each image's area so large images are not under-sampled.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from aetool.data.cache import ImageSet
from aetool.errors import ConfigError

__all__ = ["BatchFeeder", "index_batches", "split_indices"]


class BatchFeeder:
    """Serves uint8 batches from the cache as float tensors on the device.

    Fixed-size caches are indexed directly; on CUDA the whole cache goes to
    the GPU when it is small, else batches are gathered into pinned memory.
    Native-size caches (patch training) serve random crops.
    """

    def __init__(self, images: ImageSet, device: torch.device, patch: int | None) -> None:
        self.device = device
        self.patch = patch
        self.cache: Tensor | None
        if isinstance(images.data, list):
            if patch is None:
                raise ConfigError("images of different sizes need --patch-size (or --image-size)")
            self.arrays = images.data
            too_small = [a.shape for a in self.arrays if min(a.shape[1:]) < patch]
            if too_small:
                raise ConfigError(
                    f"--patch-size {patch} is larger than {len(too_small)} image(s) "
                    f"(smallest {min(min(s[1:]) for s in too_small)} px); use a smaller patch"
                )
            area = np.array([a.shape[1] * a.shape[2] for a in self.arrays], dtype=np.float64)
            self.weights = torch.from_numpy(area / area.sum())
            self.cache = None
        else:
            cache = torch.from_numpy(np.asarray(images.data))
            self.pinned: Tensor | None = None
            if device.type == "cuda":
                free = torch.cuda.mem_get_info(device)[0]
                if cache.numel() < free // 4:
                    cache = cache.to(device)
            self.cache = cache

    def count(self) -> int:
        """How many images the cache holds."""
        return len(self.arrays) if self.cache is None else self.cache.shape[0]

    def batch(self, idx: Tensor, gen: torch.Generator | None = None) -> Tensor:
        """The images at ``idx`` (random crops of them in patch mode) as floats in [0, 1]."""
        if self.cache is None:
            return self._patches(idx, gen)
        if self.cache.device.type == self.device.type:  # resident (on the GPU, or CPU training)
            x = self.cache.index_select(0, idx.to(self.device))
        else:
            if self.device.type == "cuda":
                shape = (len(idx), *self.cache.shape[1:])
                if self.pinned is None or self.pinned.shape[0] < len(idx):
                    self.pinned = torch.empty(shape, dtype=torch.uint8).pin_memory()
                buf = self.pinned[: len(idx)]
                torch.index_select(self.cache, 0, idx, out=buf)
                x = buf.to(self.device, non_blocking=True)
            else:
                x = self.cache.index_select(0, idx)
        return x.float().div_(255.0)

    def _patches(self, idx: Tensor, gen: torch.Generator | None) -> Tensor:
        p = self.patch
        assert p is not None
        out = []
        for i in idx.tolist():
            a = self.arrays[i]
            h, w = a.shape[1:]
            top = int(torch.randint(0, h - p + 1, (1,), generator=gen))
            left = int(torch.randint(0, w - p + 1, (1,), generator=gen))
            crop = torch.from_numpy(np.ascontiguousarray(a[:, top : top + p, left : left + p]))
            k = int(torch.randint(0, 8, (1,), generator=gen))  # flips and rotations
            if k & 1:
                crop = crop.flip(-1)
            crop = torch.rot90(crop, k >> 1, (1, 2))
            out.append(crop)
        return torch.stack(out).to(self.device).float().div_(255.0)


def split_indices(n: int, val_split: float, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Sorted (train, validation) indices: a random ``val_split`` share, at least one image
    when there are two or more, and never all of them."""
    perm = torch.randperm(n, generator=gen)
    n_val = int(round(n * val_split)) if n >= 2 and val_split > 0 else 0
    n_val = min(max(n_val, 1 if val_split > 0 and n >= 2 else 0), n - 1)
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def index_batches(
    idx: Tensor, batch_size: int, gen: torch.Generator, shuffle: bool
) -> Iterator[Tensor]:
    """``idx`` in batches of ``batch_size`` (shuffled first when asked)."""
    order = idx[torch.randperm(len(idx), generator=gen)] if shuffle else idx
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]
