"""The draem architecture: shapes, maps, the model file round trip, the auto rule."""

from __future__ import annotations

from pathlib import Path

import torch
from click.testing import CliRunner

from aetool.cli.main import cli
from aetool.models.draem import DraemModel
from aetool.models.file import load_model, save_model
from aetool.models.registry import create_model, list_models
from aetool.training.draem import choose_arch


def test_registered_and_any_size_gives_maps_in_unit_range() -> None:
    assert "draem" in list_models()
    torch.manual_seed(0)
    for rec in (False, True):
        m = create_model("draem", channels=3, base_channels=4, depth=2, reconstructive=rec).eval()
        x = torch.rand(2, 3, 37, 45)
        with torch.no_grad():
            amap, recon = m.anomaly_map(x), m(x)
        assert amap.shape == (2, 1, 37, 45) and recon.shape == x.shape
        assert 0 <= float(amap.min()) and float(amap.max()) <= 1
        assert not torch.isnan(amap).any()
        if not rec:
            assert torch.equal(recon, x)  # no reconstructive network: forward is the input


def test_model_file_round_trip_and_info(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = DraemModel(channels=1, height=32, width=32, base_channels=4, depth=2).eval()
    meta = {"preprocessing": {"channels": 1, "height": 32, "width": 32}}
    path = save_model(tmp_path / "d.safetensors", model, meta)
    loaded = load_model(path)
    assert loaded.metadata["arch"] == "draem"
    assert loaded.metadata["arch_args"]["base_channels"] == 4
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.anomaly_map(x), loaded.model.anomaly_map(x), atol=1e-6)
    res = CliRunner().invoke(cli, ["info", str(path)])
    assert res.exit_code == 0, res.output
    assert "draem" in res.stdout and '"depth": 2' in res.stdout


def test_flip_average_is_the_mean_of_the_mirrored_maps(tmp_path: Path) -> None:
    torch.manual_seed(2)
    plain = DraemModel(channels=1, height=32, width=32, base_channels=4, depth=2).eval()
    avg = DraemModel(channels=1, height=32, width=32, base_channels=4, depth=2, flip_average=True)
    avg.load_state_dict(plain.state_dict())
    avg.eval()
    x = torch.rand(2, 1, 32, 40)
    with torch.no_grad():
        want = (
            plain.anomaly_map(x)
            + plain.anomaly_map(x.flip(-1)).flip(-1)
            + plain.anomaly_map(x.flip(-2)).flip(-2)
        ) / 3
        got = avg.anomaly_map(x)
    assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(got, plain.anomaly_map(x), atol=1e-4)  # it does change the map
    meta = {"preprocessing": {"channels": 1, "height": 32, "width": 32}}
    loaded = load_model(save_model(tmp_path / "f.safetensors", avg, meta))
    assert loaded.metadata["arch_args"]["flip_average"] is True
    assert loaded.model.flip_average is True
    with torch.no_grad():
        assert torch.allclose(loaded.model.anomaly_map(x), got, atol=1e-6)


def test_auto_rule_keeps_conv_for_tiny_images() -> None:
    assert choose_arch([(8, 8)] * 3) == ("conv", None)
    assert choose_arch([(28, 28), (300, 300)]) == ("conv", None)
    assert choose_arch([(300, 300)] * 2) == ("draem", (128, 128))
    assert choose_arch([(64, 96)]) == ("conv", None)  # 64 px crops: draem no better
    assert choose_arch([(128, 128)]) == ("draem", (128, 128))
    assert choose_arch([(200, 300), (300, 200)]) == ("draem", (128, 128))
    assert choose_arch([]) == ("conv", None)


def test_files_without_centred_score_keep_the_plain_top_share(tmp_path: Path) -> None:
    """A file written before ``centred_score`` existed scores as it did (its stored
    validation scores were computed that way); new ones subtract the map's mean."""
    from aetool.anomaly.scores import centred_score, reduce_maps

    torch.manual_seed(3)
    model = DraemModel(channels=1, height=32, width=32, base_channels=4, depth=2).eval()
    meta = {"preprocessing": {"channels": 1, "height": 32, "width": 32}}
    path = save_model(tmp_path / "old.safetensors", model, meta)
    # the old arch_args had no centred_score
    import json as _json

    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), "pt") as f:
        header = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    m = _json.loads(header["aetool"])
    del m["arch_args"]["centred_score"]
    header["aetool"] = _json.dumps(m)
    save_file(tensors, str(path), metadata=header)
    old = load_model(path)
    assert "centred_score" not in old.metadata["arch_args"]
    assert centred_score(old.model) is False
    new = load_model(
        save_model(tmp_path / "new.safetensors", DraemModel(1, 32, 32, centred_score=True), meta)
    )
    assert centred_score(new.model) is True
    maps = torch.rand(2, 32, 32)
    assert torch.allclose(
        reduce_maps(maps, "model", centred_score(new.model)),
        reduce_maps(maps, "model") - maps.flatten(1).mean(1),
    )
