"""The shape of a model file's metadata, checked before anything is built from it.

A model file may come from anywhere, so its JSON metadata is checked for
types, ranges and nesting depth (:func:`check_metadata`), and the module it
describes is first built on PyTorch's ``meta`` device, where nothing is
allocated (:func:`plan_model`): the parameter count is bounded and every
tensor shape is compared with the file's before a byte of weights is
allocated. A 500 KB file cannot make aetool allocate gigabytes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from aetool.errors import ModelFileError
from aetool.models.registry import AutoEncoder, create_model, list_models

__all__ = ["MAX_DEPTH", "MAX_PARAMETERS", "check_metadata", "plan_model"]

#: Deepest nesting of lists and objects a metadata document may have.
MAX_DEPTH = 16
#: Most parameters a model file may describe (float32: 2 GB of weights).
MAX_PARAMETERS = 500_000_000
#: Largest integer architecture argument (sizes, widths, depths).
_MAX_ARG = 1 << 16
_MAX_SIDE = 1 << 16


def check_metadata(path: Path, meta: Any) -> None:
    """Check the metadata's shape: what is read later has the type and range it needs.

    Raises:
        ModelFileError: naming the first field that is wrong.
    """
    if not isinstance(meta, dict):
        raise ModelFileError(f"{path}: the aetool metadata is not a JSON object")
    _check_depth(path, meta)
    arch = meta.get("arch")
    if not isinstance(arch, str) or arch not in list_models():
        raise ModelFileError(
            f"{path}: unknown architecture {str(arch)[:40]!r}; this aetool knows "
            f"{', '.join(list_models())}"
        )
    args = meta.get("arch_args", {})
    if not isinstance(args, dict):
        raise ModelFileError(f"{path}: arch_args is not an object")
    for key, value in args.items():
        _check_arch_arg(path, key, value)
    for section in ("preprocessing", "training", "validation"):
        if not isinstance(meta.get(section, {}), dict):
            raise ModelFileError(f"{path}: {section} is not an object")
    _check_preprocessing(path, meta.get("preprocessing", {}))
    _check_validation(path, meta.get("validation", {}))
    noise = meta.get("training", {}).get("noise")
    if noise is not None and not isinstance(noise, str):
        raise ModelFileError(f"{path}: training.noise is not text")


def _check_depth(path: Path, doc: Any) -> None:
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ModelFileError(f"{path}: the metadata is nested deeper than {MAX_DEPTH} levels")
        children = (
            item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        )
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_arch_arg(path: Path, key: str, value: Any) -> None:
    if isinstance(value, bool):  # an architecture's switch (draem's ``reconstructive``)
        return
    values = value if isinstance(value, list) and len(value) <= 64 else [value]
    ok = all(_is_int(v) and 0 <= v <= _MAX_ARG for v in values)
    if key == "channels":
        ok = ok and _is_int(value) and 1 <= value <= 4
    if not ok:
        raise ModelFileError(
            f"{path}: arch_args.{key[:40]} is {repr(value)[:40]}; expected a whole number "
            f"from 0 to {_MAX_ARG} (or true/false)"
        )


def _check_preprocessing(path: Path, pre: Mapping[str, Any]) -> None:
    checks = {
        "channels": lambda v: v in (1, 3) and _is_int(v),
        "height": lambda v: v is None or (_is_int(v) and 1 <= v <= _MAX_SIDE),
        "width": lambda v: v is None or (_is_int(v) and 1 <= v <= _MAX_SIDE),
        "patch_size": lambda v: v is None or (_is_int(v) and 1 <= v <= _MAX_SIDE),
        "resize": lambda v: v in (None, "stretch", "crop"),
        "alpha_background": lambda v: v in (None, "black", "white"),
    }
    for key, good in checks.items():
        if key in pre and not good(pre[key]):
            raise ModelFileError(
                f"{path}: preprocessing.{key} is {str(pre[key])[:40]!r}, which aetool cannot use"
            )


def _check_validation(path: Path, val: Mapping[str, Any]) -> None:
    scores = val.get("scores", {})
    if not isinstance(scores, dict):
        raise ModelFileError(f"{path}: validation.scores is not an object")
    for kind, values in scores.items():
        if not isinstance(values, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
        ):
            raise ModelFileError(f"{path}: validation.scores.{kind[:40]} is not a list of numbers")
    if not isinstance(val.get("summary", {}), dict):
        raise ModelFileError(f"{path}: validation.summary is not an object")


def plan_model(path: Path, meta: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Build the architecture on the ``meta`` device (nothing allocated) and compare it
    with the file: parameter count under :data:`MAX_PARAMETERS`, same tensor names and shapes.

    Args:
        path: the model file (for messages).
        meta: checked metadata (:func:`check_metadata`).
        shapes: the file's ``model.*`` tensor shapes, without the prefix.

    Raises:
        ModelFileError: the architecture cannot be built, is too large, or does not
            match the tensors in the file.
    """
    try:
        with torch.device("meta"):
            model: AutoEncoder = create_model(meta["arch"], **meta.get("arch_args", {}))
    except Exception as exc:  # noqa: BLE001 - any failure to build is the file's fault
        raise ModelFileError(
            f"{path}: cannot rebuild architecture {meta['arch']!r}: {str(exc)[:200]}"
        ) from None
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    n_params = sum(math.prod(s) for s in expected.values())
    if n_params > MAX_PARAMETERS:
        raise ModelFileError(
            f"{path}: its arch_args describe {n_params:,} parameters, more than aetool loads "
            f"({MAX_PARAMETERS:,}); the file is damaged or not meant for this tool"
        )
    if expected != dict(shapes):
        missing = sorted(set(expected) - set(shapes))[:3]
        extra = sorted(set(shapes) - set(expected))[:3]
        wrong = [k for k in expected if k in shapes and expected[k] != tuple(shapes[k])][:3]
        detail = "; ".join(
            part
            for part in (
                f"missing {', '.join(missing)}" if missing else "",
                f"unexpected {', '.join(extra)}" if extra else "",
                f"wrong shape for {', '.join(wrong)}" if wrong else "",
            )
            if part
        )
        raise ModelFileError(
            f"{path}: the tensors do not match the {meta['arch']!r} architecture ({detail[:300]})"
        )
