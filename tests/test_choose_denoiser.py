"""pretrained/choose_denoiser.py: the rule that picks a denoiser file by validation PSNR."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from aetool.models.bundled import bundled_model_path
from aetool.models.file import load_model, save_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def chooser(monkeypatch: pytest.MonkeyPatch):
    path = Path(__file__).resolve().parent.parent / "pretrained" / "choose_denoiser.py"
    spec = importlib.util.spec_from_file_location("choose_denoiser", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def _s(a: float, b: float, c: float) -> dict[str, float]:
    return {"sigma15": a, "sigma25": b, "sigma50": c}


def test_the_best_eligible_mean_is_chosen_if_it_clears_the_margin(chooser) -> None:
    base = _s(36.0, 34.0, 32.0)
    cands = {
        "worse at 50": _s(37.0, 35.0, 31.98),  # best mean, but 0.02 below the base at 50
        "good": _s(36.05, 34.05, 32.0),
        "better": _s(36.2, 34.0, 31.995),  # 0.005 below at 50: within the tolerance
    }
    chosen, eligible = chooser.choose(base, cands)
    assert eligible == {"worse at 50": False, "good": True, "better": True}
    assert chosen == "better"
    # a margin above every eligible gain keeps the base
    assert chooser.choose(base, cands, margin=0.1)[0] is None
    # a looser tolerance lets the best mean in
    assert chooser.choose(base, cands, tolerance=0.05)[0] == "worse at 50"
    # equal scores are no gain
    assert chooser.choose(base, {"same": dict(base)})[0] is None


def test_main_scores_the_files_and_prints_only_the_choice(
    chooser, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = bundled_model_path()
    loaded = load_model(base)
    with torch.no_grad():  # a damaged copy: every weight scaled down 20%
        for p in loaded.model.parameters():
            p.mul_(0.8)
    worse = save_model(tmp_path / "worse.safetensors", loaded.model, loaded.metadata)
    same = tmp_path / "same.safetensors"
    same.write_bytes(base.read_bytes())
    args = ["--base", str(base), str(worse), str(same), "--crop", "64", "--threads", "1"]
    assert chooser.main(args) == 1  # neither beats the base
    out, err = capsys.readouterr()
    assert out == ""
    assert "no candidate chosen" in err and "not eligible" in err
    # with a negative margin the copy (equal to the base, so eligible) is chosen
    assert chooser.main([*args, "--margin", "-1"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [str(same)]


def test_main_refuses_a_file_that_is_not_a_denoiser(chooser, tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model")
    with pytest.raises(SystemExit) as exc:
        chooser.main(["--base", str(bundled_model_path()), str(bad), "--crop", "32"])
    assert exc.value.code == 2


def test_main_refuses_the_base_among_the_candidates(chooser) -> None:
    base = str(bundled_model_path())
    with pytest.raises(SystemExit) as exc:
        chooser.main(["--base", base, base, "--crop", "32"])
    assert exc.value.code == 2
