"""Data-parallel training across processes, GPUs and machines (torch.distributed).

aetool does not start processes of its own: it runs under torch.distributed's
launcher, which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous variables for every process::

    torchrun --nproc-per-node 2 -m aetool train DIR -o model.safetensors
    torchrun --nnodes 2 --node-rank 0 --master-addr HOST --nproc-per-node 8 \\
        -m aetool train DIR ...                                  # multi-node

``aetool train --distributed --nproc N`` re-runs the same command under
``python -m torch.distributed.run --standalone --nproc-per-node N`` (one
machine).

How a run is split:

* Backend: NCCL when the device is CUDA, each process on ``cuda:LOCAL_RANK``;
  gloo on the CPU (``--device cpu``, or ``auto`` without a GPU).
* Data: every process decodes the inputs (a folder on shared storage) and
  makes the same seed-based train/validation split. Each epoch all processes
  draw the same permutation; every global batch of ``--batch-size`` indices
  is split into strided, disjoint per-process slices (:func:`shard_batch`),
  so ``--batch-size`` means the same as in a single-process run and every
  process takes the same number of steps.
* Gradients are averaged by :class:`~torch.nn.parallel.DistributedDataParallel`;
  the sparsity and contractive penalties go through it too (the model is
  wrapped in :class:`EncodeDecode`, whose forward returns ``(z, recon)``).
* Losses are summed over processes (:meth:`DistContext.sum`), so every
  process sees the same train and validation loss and makes the same
  early-stopping decision.
* Only rank 0 reports progress, writes the model file and prints its path.
  The model file is the same kind as a single-process run's; its training
  record adds ``world_size``, ``backend`` and per-rank weight checksums.
* ``--resume`` works under torchrun (every process reads the file). Ctrl-C
  makes torchrun stop every process, so a resumable file is written only when
  rank 0 gets that far; prefer ``--patience`` and ``--epochs`` to bound a run.
* ``torch.compile`` (``--compile``) compiles the DDP-wrapped module.
"""

from __future__ import annotations

import hashlib
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor, nn

from aetool.devices import resolve_device
from aetool.errors import ConfigError

__all__ = [
    "DistContext",
    "EncodeDecode",
    "launched_by_torchrun",
    "session",
    "setup",
    "shard_batch",
    "state_checksum",
    "teardown",
    "torchrun_command",
    "wrap",
]

#: How long a collective waits for a lagging process before failing (seconds).
TIMEOUT_S = float(os.environ.get("AETOOL_DIST_TIMEOUT", 1800))


@dataclass(frozen=True)
class DistContext:
    """This process's place in a distributed run."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sum(self, *values: float) -> list[float]:
        """All-reduce (sum) a few numbers; every process gets the same result."""
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(t)
        return t.tolist()

    def broadcast_buffers(self, model: nn.Module) -> None:
        """Copy rank 0's buffers (for example batch-norm statistics) to every process."""
        for buf in model.buffers():
            dist.broadcast(buf.data, 0)

    def gather_object(self, obj: object) -> list[object]:
        """Every process's ``obj``, in rank order, on every process."""
        out: list[object] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    @property
    def _comm_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")


def launched_by_torchrun() -> bool:
    """Whether this process was started by torch.distributed's launcher."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR"))


def _env_int(name: str) -> int:
    try:
        return int(os.environ[name])
    except (KeyError, ValueError):
        raise ConfigError(f"torchrun variable {name} is missing or not a number") from None


def _device_and_backend(spec: str, local_rank: int) -> tuple[torch.device, str]:
    requested = resolve_device(spec)  # validates the spec (and CUDA presence) as usual
    if requested.type != "cuda":
        return torch.device("cpu"), "gloo"
    n = torch.cuda.device_count()
    if local_rank >= n:
        raise ConfigError(
            f"process with LOCAL_RANK {local_rank} has no GPU: this machine has {n}; "
            f"use --nproc-per-node {n} or fewer"
        )
    # Each process owns one GPU, whatever index --device named.
    return torch.device("cuda", local_rank), "nccl"


def setup(device: str = "auto") -> DistContext | None:
    """Join the distributed run this process belongs to; None for a plain single process.

    Reuses a process group that is already initialised; otherwise, under
    torchrun, initialises one (gloo on CPU, NCCL on CUDA, rendezvous from the
    environment). Call :func:`teardown` at the end (or use :func:`session`).

    Raises:
        ConfigError: bad device spec, or more processes per node than GPUs.
    """
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
        backend = str(dist.get_backend())
        dev = torch.device("cuda", local) if backend == "nccl" else torch.device("cpu")
        return DistContext(rank, world, local, backend, dev)
    if not launched_by_torchrun():
        return None
    if not dist.is_available():
        raise ConfigError("this PyTorch build has no torch.distributed support")
    rank, world, local = _env_int("RANK"), _env_int("WORLD_SIZE"), _env_int("LOCAL_RANK")
    dev, backend = _device_and_backend(device, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(
        backend,
        timeout=timedelta(seconds=TIMEOUT_S),
        device_id=dev if dev.type == "cuda" else None,
    )
    return DistContext(rank, world, local, backend, dev)


def teardown() -> None:
    """Leave the process group (a no-op when there is none)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def session(device: str = "auto") -> Iterator[DistContext | None]:
    """:func:`setup` on entry and :func:`teardown` on exit, even after an error."""
    ctx = setup(device)
    try:
        yield ctx
    finally:
        if ctx is not None:
            teardown()


def shard_batch(batch: Tensor, ctx: DistContext | None) -> Tensor:
    """This process's slice of one global batch of indices.

    Slices are strided (``batch[rank::world_size]``), disjoint and differ in
    size by at most one. A final batch smaller than the world is repeated
    until every process gets at least one image, so all processes take the
    same number of steps (none waits forever in a collective).
    """
    if ctx is None or ctx.world_size == 1:
        return batch
    if len(batch) < ctx.world_size:
        batch = batch.repeat(-(-ctx.world_size // len(batch)))[: ctx.world_size]
    return batch[ctx.rank :: ctx.world_size]


class EncodeDecode(nn.Module):
    """``forward(x) -> (encode(x), decode(z))``: the latent as well as the reconstruction.

    The sparsity and contractive penalties need the latent. Calling
    ``model.encode``/``model.decode`` directly would bypass
    DistributedDataParallel's forward, so the gradients would not be averaged;
    wrapping this module instead keeps one DDP forward per step.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = self.model.encode(x)  # type: ignore[operator]
        return z, self.model.decode(z)  # type: ignore[operator]


def wrap(module: nn.Module, ctx: DistContext | None) -> nn.Module:
    """``module`` wrapped in DistributedDataParallel when distributed, else itself."""
    if ctx is None:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    # The contractive penalty's double backward leaves conv grads in another memory
    # layout; DDP copies them into its buckets correctly, only a little slower.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=False)


def state_checksum(module: nn.Module) -> str:
    """BLAKE2b of every parameter and buffer, to check that processes agree bit for bit."""
    h = hashlib.blake2b(digest_size=8)
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def torchrun_command(nproc: int, args: list[str]) -> list[str]:
    """The command that re-runs ``aetool ARGS`` under torchrun with ``nproc`` processes."""
    if nproc < 1:
        raise ConfigError("--nproc must be at least 1")
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "aetool",
        *args,
    ]
