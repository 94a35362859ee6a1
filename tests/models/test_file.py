from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from aetool.errors import ModelFileError
from aetool.models.file import FORMAT_VERSION, load_model, read_metadata, save_model
from aetool.models.registry import create_model


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    m = create_model("conv", channels=1, height=16, width=16, latent_dim=4)
    return save_model(tmp_path / "m.safetensors", m, {"preprocessing": {"channels": 1}})


def test_round_trip_identical_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    m = create_model("dense", channels=3, height=8, width=8, latent_dim=3).eval()
    p = save_model(tmp_path / "d.safetensors", m, {"training": {"seed": 3}})
    loaded = load_model(p)
    x = torch.rand(5, 3, 8, 8)
    assert torch.equal(loaded.model(x), m(x))
    assert loaded.metadata["arch"] == "dense" and loaded.metadata["training"]["seed"] == 3
    assert loaded.metadata["format_version"] == FORMAT_VERSION
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves no temp file


def test_not_a_model_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelFileError, match="not a safetensors"):
        load_model(junk)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(ModelFileError, match="not an aetool model"):
        load_model(plain)
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "missing.safetensors")


def _rewrite_meta(src: Path, dst: Path, change: dict) -> None:
    from safetensors import safe_open

    with safe_open(str(src), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        meta = json.loads(f.metadata()["aetool"])
    meta.update(change)
    if "drop" in change:
        tensors.pop(change["drop"])
    save_file(tensors, str(dst), metadata={"aetool": json.dumps(meta)})


def test_newer_format_is_refused(model_path: Path, tmp_path: Path) -> None:
    newer = tmp_path / "newer.safetensors"
    _rewrite_meta(model_path, newer, {"format_version": FORMAT_VERSION + 1})
    with pytest.raises(ModelFileError, match="newer aetool"):
        read_metadata(newer)


def test_mismatched_tensors_are_refused(model_path: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    _rewrite_meta(
        model_path, bad, {"arch_args": {"channels": 1, "height": 16, "width": 16, "latent_dim": 9}}
    )
    with pytest.raises(ModelFileError, match="do not match"):
        load_model(bad)


def test_library_never_unpickles() -> None:
    src = Path(__file__).parents[2] / "aetool"
    text = "\n".join(p.read_text() for p in src.rglob("*.py"))
    for banned in ("import pickle", "pickle.load", "torch.load(", "weights_only=False"):
        assert banned not in text
