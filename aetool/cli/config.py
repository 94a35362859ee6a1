"""``--config FILE``: any command's options from a TOML file, command-line options winning.

The file holds one table per command, named as the command (``[train]``,
``[score]``, ``[latent-map]``); keys are option names without the dashes
(``latent-dim`` or ``latent_dim``), and ``inputs`` gives a command's INPUT
arguments. Top-level keys (``device = "cpu"``) apply to every command that has
such an option. A key the command does not know is a usage error, so a typo
is never silently ignored::

    device = "cpu"

    [train]
    inputs = ["data/good"]
    epochs = 50
    image-size = "128x128"

    [score]
    threshold = "p99.5"

The values become the command's defaults (Click's ``default_map``), which is
exactly the precedence wanted: an option given on the command line wins over
the file, the file over the built-in default. ``aetool info MODEL --config``
writes the ``[train]`` table that reproduces a model (:func:`training_toml`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

__all__ = ["add_config_option", "command_defaults", "read_config", "training_toml"]

CONFIG_HELP = (
    "Read options from this TOML file: its [COMMAND] table, and top-level keys for every "
    "command; options on the command line win."
)


def load_toml(text: str) -> dict[str, Any]:
    """Parse TOML text (tomllib, or tomli before Python 3.11)."""
    return _tomllib().loads(text)


def _tomllib() -> Any:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    return tomllib


def read_config(path: Path) -> dict[str, Any]:
    """The parsed TOML file; a bad file is a usage error naming the line."""
    tomllib = _tomllib()
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise click.BadParameter(f"{path}: not valid TOML: {exc}", param_hint="--config") from None
    except OSError as exc:
        raise click.BadParameter(f"{path}: {exc.strerror}", param_hint="--config") from None


def _param_names(command: click.Command) -> dict[str, click.Parameter]:
    """Every spelling a config key may use for a parameter: its Python name and its long
    option names without dashes, with ``-`` or ``_``; ``inputs``/``paths`` for arguments."""
    names: dict[str, click.Parameter] = {}
    for p in command.params:
        if p.name is None or p.name == "config" or not p.expose_value:
            continue
        spellings = {p.name}
        spellings |= {o.lstrip("-") for o in p.opts if o.startswith("--")}
        if isinstance(p, click.Argument) and p.nargs == -1:
            spellings.add("inputs")  # denoise's [INPUT]... OUT is one argument, `paths`
        for s in spellings:
            names[s] = names[s.replace("-", "_")] = names[s.replace("_", "-")] = p
    return names


def _convert(param: click.Parameter, value: Any) -> Any:
    # Choices are strings (--channels 1); TOML users will write numbers.
    if isinstance(param.type, click.Choice) and isinstance(value, int | float):
        if not isinstance(value, bool):
            return str(value)
    if param.nargs == -1 or getattr(param, "multiple", False):
        return tuple(value) if isinstance(value, list) else (value,)
    return value


def command_defaults(data: Mapping[str, Any], command: click.Command) -> dict[str, Any]:
    """The defaults a config file gives ``command``, by parameter name.

    Raises:
        click.UsageError: the command's table names an option it does not have.
    """
    known = _param_names(command)
    out: dict[str, Any] = {}
    for key, value in data.items():  # top level: for every command that has the option
        if not isinstance(value, dict) and key in known:
            param = known[key]
            out[str(param.name)] = _convert(param, value)
    table = data.get(command.name or "", {})
    if not isinstance(table, dict):
        raise click.UsageError(f"--config: `{command.name}` must be a table ([{command.name}])")
    for key, value in table.items():
        if key not in known:
            choices = sorted({k for k in known if "_" not in k})
            raise click.UsageError(
                f"--config: [{command.name}] has no option `{key}`; known: {', '.join(choices)}"
            )
        param = known[key]
        out[str(param.name)] = _convert(param, value)
    return out


def _apply_config(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    if value is None:
        return
    defaults = command_defaults(read_config(value), ctx.command)
    ctx.default_map = {**(ctx.default_map or {}), **defaults}


def add_config_option(command: click.Command) -> None:
    """Give ``command`` a ``--config FILE`` option. It is eager, so the file is read before
    the other options take their values, and its values are only defaults."""
    command.params.append(
        click.Option(
            ["--config"],
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            is_eager=True,
            expose_value=False,
            callback=_apply_config,
            help=CONFIG_HELP,
        )
    )


# ---------------------------------------------------------------------------
# aetool info MODEL --config


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    # A JSON string (escapes included) is a valid TOML basic string.
    return json.dumps(str(value), ensure_ascii=False)


#: TrainConfig fields left out of a reproducing config: where to run is not how to train.
_MACHINE_FIELDS = {"device"}


def training_options(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The ``aetool train`` options (option names) that reproduce a model's training.

    Raises:
        click.ClickException: the model file has no training record.
    """
    t = meta.get("training")
    if not t or "config" not in t:
        raise click.ClickException("the model file has no training record to reproduce")
    pre = meta.get("preprocessing", {})
    mc = t.get("model_config", {})
    opts: dict[str, Any] = {"inputs": list(t.get("data", []))}
    opts["arch"] = mc.get("arch", meta.get("arch"))
    if mc.get("latent_dim") is not None:
        opts["latent-dim"] = mc["latent_dim"]
    if pre.get("height") and pre.get("width"):
        opts["image-size"] = f"{pre['height']}x{pre['width']}"
    if pre.get("channels"):
        opts["channels"] = str(pre["channels"])
    for key in ("resize", "alpha_background"):
        if pre.get(key) is not None:
            opts[key.replace("_", "-")] = pre[key]
    for key, value in t["config"].items():
        if value is not None and key not in _MACHINE_FIELDS:
            opts[key.replace("_", "-")] = value
    return opts


def training_toml(meta: Mapping[str, Any], model_path: str) -> str:
    """A TOML config whose ``[train]`` table reproduces the model's training."""
    lines = [
        f"# The training of {model_path}, as aetool train options.",
        "# Reproduce it with: aetool train --config THIS_FILE -o NEW.safetensors",
    ]
    extra = meta.get("training", {}).get("model_config", {}).get("extra")
    if extra:
        lines.append(f"# Architecture arguments not settable as options: {json.dumps(extra)}")
    lines.append("")
    lines.append("[train]")
    lines += [f"{key} = {_toml_value(value)}" for key, value in training_options(meta).items()]
    return "\n".join(lines) + "\n"
