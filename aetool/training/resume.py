"""Continuing an interrupted run.

Ctrl-C during training still writes a model file: its weights are the best
epoch's (usable at once), and extra ``resume.*`` tensors hold what is needed
to carry on exactly: the last epoch's weights, the optimizer state, the
batch-order RNG and the epoch reached. ``train(..., resume_from=PATH)``
reads them back; a finished run's file has none and cannot be resumed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from aetool.errors import ConfigError
from aetool.models.file import load_model
from aetool.models.registry import AutoEncoder, ModelConfig

__all__ = [
    "Interrupted",
    "capture_resume_state",
    "check_resume_matches",
    "load_interrupted",
    "restore_resume_state",
]


@dataclass
class Interrupted:
    """An interrupted run read back from its model file."""

    #: The model with the last epoch's weights, to train on.
    model: AutoEncoder
    #: The best epoch's weights (what the file's model holds).
    best_state: dict[str, Tensor]
    #: The file's run record (``metadata["training"]``).
    record: dict[str, Any]
    #: The ``resume.*`` tensors.
    extra: dict[str, Tensor]

    @property
    def epoch(self) -> int:
        """The last epoch the interrupted run finished."""
        return int(self.extra["resume.epoch"].item())


def load_interrupted(path: str | Path) -> Interrupted:
    """Read an interrupted run's model file; a finished run's is a :class:`ConfigError`."""
    loaded = load_model(path)
    record = loaded.metadata.get("training", {})
    if record.get("completed", True) or "resume.epoch" not in loaded.extra:
        raise ConfigError(f"{path} holds a finished run; nothing to resume")
    model = loaded.model
    best_state = copy.deepcopy(model.state_dict())
    model.load_state_dict(
        {
            k[len("resume.model.") :]: v
            for k, v in loaded.extra.items()
            if k.startswith("resume.model.")
        }
    )
    return Interrupted(model, best_state, record, loaded.extra)


def check_resume_matches(model: AutoEncoder, mcfg: ModelConfig, path: str | Path | None) -> None:
    """The interrupted run's model must be the one asked for, on images of its shape.

    Raises:
        ConfigError: another architecture, latent size, channel count or (for a
            model with dense layers) image size than the file's.
    """
    args = model.arch_args()
    arch = getattr(type(model), "arch_name", "?")
    wanted = {"architecture": (arch, mcfg.arch), "latent size": (args.get("latent_dim"),
              mcfg.latent_dim), "channels": (args.get("channels"), mcfg.channels)}  # fmt: skip
    if not model.fully_convolutional:
        wanted["image size"] = (
            f"{args.get('height')}x{args.get('width')}",
            f"{mcfg.height}x{mcfg.width}",
        )
    for what, (have, want) in wanted.items():
        if have is not None and have != want:
            raise ConfigError(
                f"--resume: {path} was trained with {what} {have}, this run asks for {want}; "
                "resume with the same images and options, or train a new model"
            )


def capture_resume_state(
    model: torch.nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator, epoch: int
) -> dict[str, Tensor]:
    """The ``resume.*`` tensors that let a later run continue after ``epoch``."""
    state: dict[str, Tensor] = {
        f"resume.model.{k}": v.detach().clone() for k, v in model.state_dict().items()
    }
    osd = opt.state_dict()
    for pid, pstate in osd["state"].items():
        for name, val in pstate.items():
            t = val if isinstance(val, Tensor) else torch.tensor(val)
            state[f"resume.optim.{pid}.{name}"] = t.detach().clone()
    state["resume.rng"] = gen.get_state()
    state["resume.epoch"] = torch.tensor(epoch)
    return state


def restore_resume_state(
    extra: dict[str, Tensor], opt: torch.optim.Optimizer, gen: torch.Generator
) -> None:
    """Load the optimizer state and the batch-order RNG from ``resume.*`` tensors."""
    osd = opt.state_dict()
    for key, val in extra.items():
        if key.startswith("resume.optim."):
            pid_s, name = key[len("resume.optim.") :].split(".", 1)
            osd["state"].setdefault(int(pid_s), {})[name] = val
    opt.load_state_dict(osd)
    gen.set_state(extra["resume.rng"])
