"""`--config FILE` (TOML) for any command, command-line options winning; `info --config`."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from click.testing import CliRunner

from aetool.cli.config import load_toml
from aetool.cli.main import cli
from aetool.models.file import read_metadata


def _score(*args: str) -> tuple[int, list[dict[str, str]], str]:
    res = CliRunner().invoke(cli, ["score", *args])
    return res.exit_code, list(csv.DictReader(io.StringIO(res.stdout))), res.stderr


def test_config_sets_options_and_the_command_line_wins(
    tmp_path: Path, score_tree: Path, score_model: Path
) -> None:
    cfg = tmp_path / "aetool.toml"
    cfg.write_text(
        f'device = "cpu"\n\n[score]\nmodel = "{score_model}"\nthreshold = "0.5"\n'
        f'score = "ssim"\nno-labels = true\n',
        encoding="utf-8",
    )
    blob = str(score_tree / "test" / "blob")
    code, rows, _ = _score(blob, "--config", str(cfg))
    assert code == 0
    assert {r["threshold"] for r in rows} == {"0.5"} and {r["score_kind"] for r in rows} == {"ssim"}
    assert "label" not in rows[0]
    # Options on the command line win over the file, whatever their position.
    code, rows, _ = _score("-t", "0.25", blob, "--config", str(cfg), "--score", "mse")
    assert code == 0
    assert {r["threshold"] for r in rows} == {"0.25"} and {r["score_kind"] for r in rows} == {"mse"}
    # Without the file: the built-in defaults.
    code, rows, _ = _score(blob, "-m", str(score_model))
    assert code == 0 and rows[0]["rule"].startswith("auto")


def test_top_level_keys_apply_to_commands_that_have_the_option(
    tmp_path: Path, score_tree: Path, score_model: Path
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('threshold = "p50"\nsteps = 4\n\n[train]\nepochs = 1\n', encoding="utf-8")
    code, rows, _ = _score(str(score_tree / "test" / "blob"), "-m", str(score_model),
                           "--config", str(cfg))  # fmt: skip
    assert code == 0 and {r["rule"].split()[0] for r in rows} == {"p50"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[score]\nthreshhold = 3\n", "[score] has no option `threshhold`"),
        ("[score\n", "not valid TOML"),
        ("[score]\nbatch-size = 0\n", "batch-size"),
    ],
)
def test_bad_config_is_a_usage_error(
    tmp_path: Path, score_tree: Path, score_model: Path, text: str, message: str
) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text, encoding="utf-8")
    res = CliRunner().invoke(
        cli, ["score", str(score_tree / "test"), "-m", str(score_model), "--config", str(cfg)]
    )
    assert res.exit_code == 2 and message in res.stderr, res.stderr


def test_info_config_reproduces_the_training(tmp_path: Path, blob_folder: Path) -> None:
    runner = CliRunner()
    first = tmp_path / "first.safetensors"
    res = runner.invoke(cli, ["train", str(blob_folder), "-o", str(first), "--epochs", "2",
                              "--batch-size", "16", "--latent-dim", "5", "--image-size", "12",
                              "--noise", "gaussian:0.1", "--seed", "3", "-q"])  # fmt: skip
    assert res.exit_code == 0, res.stderr
    res = runner.invoke(cli, ["info", str(first), "--config"])
    assert res.exit_code == 0 and res.stderr == ""
    table = load_toml(res.stdout)["train"]
    assert table["inputs"] == [str(blob_folder.resolve())] and table["latent-dim"] == 5
    assert table["image-size"] == "12x12" and table["noise"] == "gaussian:0.1"
    cfg = tmp_path / "train.toml"
    cfg.write_text(res.stdout, encoding="utf-8")
    second = tmp_path / "second.safetensors"
    res = runner.invoke(cli, ["train", "--config", str(cfg), "-o", str(second), "-q"])
    assert res.exit_code == 0, res.stderr
    a, b = read_metadata(first), read_metadata(second)
    for key in ("config", "model_config", "noise", "train_count", "val_count"):
        assert a["training"][key] == b["training"][key], key
    assert a["arch_args"] == b["arch_args"] and a["preprocessing"] == b["preprocessing"]
    # The same seed and data on the CPU give the same weights, so the same validation scores.
    assert a["validation"]["scores"] == b["validation"]["scores"]
    # --epochs on the command line wins over the file's.
    third = tmp_path / "third.safetensors"
    res = runner.invoke(cli, ["train", "--config", str(cfg), "-o", str(third), "--epochs", "1",
                              "-q"])  # fmt: skip
    assert res.exit_code == 0 and read_metadata(third)["training"]["epochs_run"] == 1


def test_info_config_and_json_exclude_each_other(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["info", str(tmp_path / "m.safetensors"), "--json", "--config"])
    assert res.exit_code == 2


def test_inputs_key_gives_the_arguments(
    tmp_path: Path, score_tree: Path, score_model: Path
) -> None:
    cfg = tmp_path / "c.toml"
    blob = score_tree / "test" / "blob"
    cfg.write_text(f'[score]\ninputs = ["{blob}"]\nmodel = "{score_model}"\n', encoding="utf-8")
    code, rows, _ = _score("--config", str(cfg))
    assert code == 0 and len(rows) == 8 and all("blob" in r["path"] for r in rows)
    out = tmp_path / "out"
    cfg.write_text(f'[denoise]\ninputs = ["{blob / "000.png"}", "{out}"]\nrefine = "off"\n')
    res = CliRunner().invoke(cli, ["denoise", "--config", str(cfg), "--device", "cpu"])
    assert res.exit_code == 0, res.stderr
    assert (out / "000.png").exists()
