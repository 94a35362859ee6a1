"""Hostile inputs, names, streams and races: one clear line on failure, nothing lost.

Each case checks the exit status, that stderr holds one ``Error:`` line and no
traceback, that the inputs are byte-identical afterwards and that outputs are
whole or absent. Commands run in-process (CliRunner) under a watchdog, so a
hang fails the test instead of stopping the suite; cases that need real file
descriptors (/dev/full, a closed stdout) run ``python -m aetool``.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from aetool.cli.main import cli

REPO = Path(__file__).resolve().parents[2]


def invoke(args: list[str], timeout: float = 120, input: str | None = None) -> Result:
    """Run ``aetool ARGS`` in-process; fail (instead of hanging) after ``timeout`` seconds."""
    box: list[Result] = []
    t = threading.Thread(
        target=lambda: box.append(CliRunner().invoke(cli, args, input=input)), daemon=True
    )
    t.start()
    t.join(timeout)
    assert box, f"aetool {' '.join(args)} hung for {timeout} s"
    return box[0]


def one_error_line(res: Result, code: int = 1) -> str:
    assert res.exit_code == code, (res.exit_code, res.stderr, res.exception)
    assert "Traceback" not in res.stderr
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1, res.stderr
    return lines[0]


def digest(*paths: Path) -> dict[str, str]:
    out = {}
    for root in paths:
        files = sorted(root.rglob("*")) if root.is_dir() else [root]
        for f in files:
            if f.is_file() and not f.is_symlink():
                out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


@pytest.fixture
def imgs(tmp_path: Path) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray((rng.random((24, 24)) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    return folder


# ---------------------------------------------------------------------------
# data loss


def test_report_onto_an_input_or_the_model_is_refused(
    imgs: Path, score_model: Path, tmp_path: Path
) -> None:
    model = tmp_path / "m.safetensors"
    shutil.copy(score_model, model)
    before = digest(imgs, model)
    for target in (imgs / "0.png", model):
        for extra in ([], ["--overwrite"]):
            res = invoke(["score", str(imgs), "-m", str(model), "--report", str(target), *extra])
            assert "write elsewhere" in one_error_line(res)
            assert res.stdout == ""  # refused before any row
    assert digest(imgs, model) == before


def test_report_and_heatmaps_never_replace_without_overwrite(
    imgs: Path, score_model: Path, tmp_path: Path
) -> None:
    report, heat = tmp_path / "r.json", tmp_path / "heat"
    base = ["score", str(imgs), "-m", str(score_model), "--device", "cpu"]
    assert invoke([*base, "--report", str(report)]).exit_code == 0
    first = report.read_bytes()
    assert "pass --overwrite" in one_error_line(invoke([*base, "--report", str(report)]))
    assert report.read_bytes() == first
    assert invoke([*base, "--report", str(report), "--overwrite"]).exit_code == 0
    json.loads(report.read_text())
    assert invoke([*base, "--heatmaps", str(heat)]).exit_code == 0
    assert "pass --overwrite" in one_error_line(invoke([*base, "--heatmaps", str(heat)]))
    assert invoke([*base, "--heatmaps", str(heat), "--overwrite"]).exit_code == 0


def test_heatmaps_do_not_follow_a_symlink_out_of_their_folder(
    imgs: Path, score_model: Path, tmp_path: Path
) -> None:
    # The heatmap of imgs/sub/0.png goes to heat/sub/0.png; heat/sub leads elsewhere.
    (imgs / "sub").mkdir()
    shutil.copy(imgs / "0.png", imgs / "sub" / "0.png")
    heat, victim = tmp_path / "heat", tmp_path / "victim"
    heat.mkdir()
    victim.mkdir()
    (victim / "0.png").write_bytes(b"precious")
    (heat / "sub").symlink_to(victim)
    res = invoke(["score", str(imgs), "-m", str(score_model), "--heatmaps", str(heat),
                  "--overwrite", "--device", "cpu"])  # fmt: skip
    assert "symbolic link" in one_error_line(res)
    assert (victim / "0.png").read_bytes() == b"precious"


def test_train_never_writes_over_an_input(imgs: Path) -> None:
    before = digest(imgs)
    res = invoke(["train", str(imgs), "-o", str(imgs / "0.png"), "--overwrite", "--epochs", "1"])
    assert "is one of the inputs" in one_error_line(res)
    assert digest(imgs) == before


def test_demo_keeps_an_earlier_demo_without_overwrite(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / ".aetool-demo").write_text("written by `aetool demo`; safe to delete\n")
    (demo / "model.safetensors").write_bytes(b"earlier model")
    res = invoke(["demo", str(demo)])
    assert "pass --overwrite" in one_error_line(res)
    assert (demo / "model.safetensors").read_bytes() == b"earlier model"


def test_train_rescues_the_model_when_the_final_write_fails(
    imgs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aetool.training.record as record
    from aetool.errors import OutputError

    out = tmp_path / "out" / "m.safetensors"
    real = record.save_model
    calls: list[Path] = []

    def failing_first(path, *a, **k):  # noqa: ANN001, ANN202 - the first target's disk is full
        calls.append(Path(path))
        if len(calls) == 1:
            raise OutputError(f"cannot write {path}: No space left on device")
        return real(path, *a, **k)

    monkeypatch.setattr(record, "save_model", failing_first)
    monkeypatch.setattr("aetool.models.file.save_model", failing_first)
    monkeypatch.chdir(tmp_path)
    res = invoke(["train", str(imgs), "-o", str(out), "--epochs", "1", "--device", "cpu"])
    line = one_error_line(res)
    assert "No space left on device; the trained model was saved to" in line
    rescued = Path(line.rsplit(" saved to ", 1)[1])
    assert rescued.exists() and rescued.parent == out.parent
    from aetool.models.file import load_model

    assert load_model(rescued).metadata["training"]["epochs_run"] == 1


# ---------------------------------------------------------------------------
# hostile model files, built in code


def _model_parts(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    with safe_open(str(path), "pt") as f:
        meta = json.loads((f.metadata() or {})["aetool"])
        return meta, {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118


def _edit(meta: dict, change: Callable[[dict], object]) -> dict:
    m = copy.deepcopy(meta)
    change(m)
    return m


HOSTILE_META: dict[str, Callable[[dict], object]] = {
    "arch_args a list": lambda m: m.update(arch_args=[1, 2]),
    "height as text": lambda m: m["arch_args"].update(height="16"),
    "huge latent (2 GB model)": lambda m: m["arch_args"].update(latent_dim=60000),
    "huge base channels": lambda m: m["arch_args"].update(base_channels=60000),
    "no arch": lambda m: m.pop("arch"),
    "unknown arch": lambda m: m.update(arch="../../etc"),
    "channels 0": lambda m: m["arch_args"].update(channels=0),
    "channels a list": lambda m: m["arch_args"].update(channels=[1]),
    "preprocessing a list": lambda m: m.update(preprocessing=[]),
    "channels as text": lambda m: m["preprocessing"].update(channels="x"),
    "resize unknown": lambda m: m["preprocessing"].update(resize="zoom"),
    "validation scores text": lambda m: m.update(validation={"scores": {"mse": "abc"}}),
    "training a list": lambda m: m.update(training=[]),
    "noise a number": lambda m: m["training"].update(noise=3),
    "version text": lambda m: m.update(format_version="1"),
    "version true": lambda m: m.update(format_version=True),
}

HOSTILE_RAW = {
    "deeply nested": '{"format":"aetool-model","format_version":1,"x":' + "[" * 50000
    + "]" * 50000 + "}",
    "5000-digit version": '{"format":"aetool-model","format_version":' + "9" * 5000 + "}",
    "not json": "{nope",
    "json list": "[1, 2]",
}  # fmt: skip


@pytest.mark.parametrize("case", [*HOSTILE_META, *HOSTILE_RAW, "NaN weight", "inf weight"])
def test_hostile_model_files_are_one_line(
    case: str, imgs: Path, score_model: Path, tmp_path: Path
) -> None:
    meta, tensors = _model_parts(score_model)
    raw = HOSTILE_RAW.get(case)
    if case in HOSTILE_META:
        raw = json.dumps(_edit(meta, HOSTILE_META[case]))
    elif raw is None:
        key = next(k for k in tensors if k.startswith("model.") and k.endswith("weight"))
        tensors = dict(tensors)
        tensors[key] = tensors[key].clone()
        tensors[key].view(-1)[3] = float("nan") if case == "NaN weight" else float("inf")
        raw = json.dumps(meta)
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata={"aetool": raw})
    res = invoke(["score", str(imgs), "-m", str(bad)])
    assert str(bad) in one_error_line(res) and res.stdout == ""
    # `info` reads only the metadata: shown when its shape is right, else one line.
    res = invoke(["info", str(bad)])
    assert res.exit_code in (0, 1) and "Traceback" not in res.stderr
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception


def test_a_large_arch_is_refused_before_allocating(score_model: Path, tmp_path: Path) -> None:
    from aetool.errors import ModelFileError
    from aetool.models.schema import MAX_PARAMETERS, plan_model

    meta, _ = _model_parts(score_model)
    meta["arch_args"].update(latent_dim=1 << 16, height=4096, width=4096)
    with pytest.raises(ModelFileError, match=f"more than aetool loads \\({MAX_PARAMETERS:,}\\)"):
        plan_model(tmp_path / "x", meta, {})


# ---------------------------------------------------------------------------
# special files never block


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_fifos_never_block(imgs: Path, score_model: Path, tmp_path: Path) -> None:
    os.mkfifo(imgs / "pipe.png")
    os.mkfifo(tmp_path / "model.safetensors")
    os.mkfifo(tmp_path / "labels.csv")
    base = ["--device", "cpu"]
    res = invoke(["score", str(imgs), "-m", str(score_model), *base], timeout=60)
    assert res.exit_code == 0, res.stderr
    assert "pipe.png" not in res.stdout  # left out of the folder's images
    res = invoke(["score", str(imgs / "pipe.png"), str(imgs / "0.png"), "-m", str(score_model),
                  *base], timeout=60)  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert res.exit_code == 4 and "not a regular file" in rows[0]["error"]
    res = invoke(["score", str(imgs), "-m", str(tmp_path / "model.safetensors")], timeout=60)
    assert "not a regular file" in one_error_line(res)
    res = invoke(["score", str(imgs), "-m", str(score_model), "--labels",
                  str(tmp_path / "labels.csv"), *base], timeout=60)  # fmt: skip
    assert "labels.csv: not a regular file" in one_error_line(res)
    res = invoke(["denoise", str(imgs), str(tmp_path / "out")], timeout=120)
    assert res.exit_code == 4 and "not a regular file" in res.stderr  # skipped, and said
    assert len(list((tmp_path / "out").iterdir())) == 6


def test_malformed_files_are_their_own_error_rows(
    imgs: Path, score_model: Path, tmp_path: Path
) -> None:
    from PIL import Image as PILImage

    frames = [PILImage.new("L", (24, 24), v) for v in (10, 90, 200)]
    buf = io.BytesIO()
    frames[0].save(buf, "TIFF", save_all=True, append_images=frames[1:])
    data = bytearray(buf.getvalue())
    data[len(data) // 2 :] = os.urandom(len(data) - len(data) // 2)  # garble the later IFDs
    (imgs / "multi.tif").write_bytes(bytes(data))
    (imgs / "trunc.png").write_bytes((imgs / "0.png").read_bytes()[:60])
    res = invoke(["score", str(imgs), "-m", str(score_model), "--device", "cpu"])
    rows = {Path(r["path"]).name: r for r in csv.DictReader(io.StringIO(res.stdout))}
    assert res.exit_code in (0, 4) and "Traceback" not in res.stderr
    assert rows["trunc.png"]["error"] and rows["0.png"]["score"]
    res = invoke(["denoise", str(imgs), str(tmp_path / "dn"), "-q"])
    rows = {Path(r["src"]).name: r for r in csv.DictReader(io.StringIO(res.stdout))}
    assert res.exit_code == 4 and rows["trunc.png"]["status"] == "error"
    assert rows["0.png"]["status"] == "written"


def test_a_mask_bomb_and_a_huge_labels_field(
    score_tree: Path, score_model: Path, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(score_tree / "test", tree / "test")
    shutil.copytree(score_tree / "ground_truth", tree / "ground_truth")
    bomb = tree / "ground_truth" / "blob" / "000_mask.png"
    Image.new("1", (30000, 30000)).save(bomb)  # 9e8 pixels: over Pillow's bomb guard
    res = invoke(["score", str(tree / "test"), "-m", str(score_model), "--device", "cpu"])
    assert res.exit_code == 0, res.stderr
    assert "cannot read mask" in res.stderr and "Traceback" not in res.stderr
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\na.png," + "x" * 200_000 + "\n")
    res = invoke(["score", str(tree / "test"), "-m", str(score_model), "--labels", str(labels)])
    assert "field larger than field limit" in one_error_line(res)


# ---------------------------------------------------------------------------
# any file name


def test_any_file_name_in_rows_shards_and_exports(score_model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "names"
    folder.mkdir()
    rng = np.random.default_rng(1)
    names = ["cr\rname.png", "new\nline.png", "[bold]markup.png", "=cmd,1.png", 'q"uote.png']
    for name in names:
        Image.fromarray((rng.random((24, 24)) * 255).astype(np.uint8)).save(folder / name)
    raw = os.fsencode(folder) + b"/caf\xe9.png"  # not UTF-8
    shutil.copy(folder / names[0], raw)
    base = ["--device", "cpu", "-m", str(score_model)]
    res = invoke(["score", str(folder), *base])
    assert res.exit_code == 0, res.stderr
    text = res.stdout_bytes.decode("utf-8", "surrogateescape")  # the name's bytes, unchanged
    got = {Path(r["path"]).name for r in csv.DictReader(io.StringIO(text, newline=""))}
    assert got == {*names, os.fsdecode(b"caf\xe9.png")}
    shards = [invoke(["score", str(folder), "--shard", f"{i}/2", *base]) for i in (1, 2)]
    assert all(r.exit_code == 0 for r in shards)
    counts = [len(list(csv.DictReader(io.StringIO(r.stdout, newline="")))) for r in shards]
    assert sum(counts) == len(names) + 1
    out = tmp_path / "codes.csv"
    res = invoke(["export", str(folder), *base, "-o", str(out)])
    assert res.exit_code == 0, res.stderr
    text = out.read_bytes().decode("utf-8", "surrogateescape")
    assert len(list(csv.DictReader(io.StringIO(text, newline="")))) == len(names) + 1
    res = invoke(["report", str(folder), *base, "-o", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.stderr
    # A name that rich would read as markup is printed as it is (missing file: warning).
    res = invoke(["score", str(folder / "[red]gone.png"), str(folder / names[1]), *base])
    assert res.exit_code == 4 and "[red]gone.png" in res.stderr


def test_an_over_long_name_is_an_error_row(score_model: Path, tmp_path: Path) -> None:
    long = tmp_path / ("x" * 300 + ".png")
    res = invoke(["score", str(long), "-m", str(score_model), "--device", "cpu"])
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert res.exit_code == 1 and len(rows) == 1 and rows[0]["error"]
    assert "Traceback" not in res.stderr


def test_a_non_finite_score_is_an_error_row(
    imgs: Path, score_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aetool.anomaly.pipeline as pipeline

    real = pipeline.reduce_maps
    monkeypatch.setattr(pipeline, "reduce_maps", lambda *a: real(*a) * float("nan"))
    res = invoke(["score", str(imgs), "-m", str(score_model), "--device", "cpu",
                  "--fail-on-anomaly"])  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert all(r["is_anomaly"] == "" and "not a finite number" in r["error"] for r in rows)
    assert res.exit_code == 1  # nothing could be scored: never a quiet exit 0


# ---------------------------------------------------------------------------
# usage errors


@pytest.mark.parametrize(
    "args",
    [
        ["train", "IMGS", "--image-size", "0"],
        ["train", "IMGS", "--arch", "nope"],
        ["train", "IMGS", "--device", "tpu"],
        ["train", "IMGS", "--noise", "gaussian:-1"],
        ["train", "IMGS", "--lr", "nan"],
        ["train", "IMGS", "--lr", "inf"],
        ["train", "IMGS", "--sparsity", "x"],
        ["score", "IMGS", "--device", "tpu"],
        ["report", "IMGS", "-t", "p101"],
    ],
)
def test_usage_errors_exit_2(args: list[str], imgs: Path) -> None:
    res = invoke([a.replace("IMGS", str(imgs)) for a in args])
    assert res.exit_code == 2, res.stderr
    assert res.stderr.count("Error:") == 1 and "Traceback" not in res.stderr


def test_resume_with_other_options_or_images(imgs: Path, tmp_path: Path) -> None:
    from aetool.data.cache import load_images
    from aetool.models.registry import ModelConfig
    from aetool.training.callbacks import TrainCallback
    from aetool.training.config import TrainConfig
    from aetool.training.loop import train

    class Stop(TrainCallback):
        def on_epoch_end(self, record, samples):  # noqa: ANN001
            raise KeyboardInterrupt

    cfg = TrainConfig(epochs=3, batch_size=4, device="cpu")
    res = train(load_images([imgs]), ModelConfig(latent_dim=4), cfg, [Stop()])
    model = res.save(tmp_path / "m.safetensors")
    before = digest(model)
    r = invoke(["train", str(imgs), "-o", str(model), "--resume", "--latent-dim", "8"])
    assert "holds a model with --latent-dim 4, not 8" in one_error_line(r, 2)
    r = invoke(["train", str(imgs), "-o", str(model), "--resume", "--arch", "dense"])
    assert "--arch conv, not dense" in one_error_line(r, 2)
    other = tmp_path / "other"
    other.mkdir()
    for i in range(6):
        Image.new("L", (32, 32), i * 30).save(other / f"{i}.png")
    r = invoke(["train", str(other), "-o", str(model), "--resume", "--device", "cpu"])
    assert "image size 24x24, this run asks for 32x32" in one_error_line(r)
    assert digest(model) == before


# ---------------------------------------------------------------------------
# real streams: /dev/full, closed stdout and stdin, junk on stdin


def _aetool(args: list[str], **kw: object) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "aetool", *args], capture_output=False, env=env, timeout=120, **kw
    )


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
def test_full_and_closed_streams(imgs: Path, score_model: Path, tmp_path: Path) -> None:
    args = ["score", str(imgs), "-m", str(score_model), "--device", "cpu", "-q"]
    with open("/dev/full", "wb") as full:
        p = _aetool(args, stdout=full, stderr=subprocess.PIPE)
    err = p.stderr.decode()
    assert p.returncode == 1 and err.strip() == (
        "Error: cannot write the output: No space left on device"
    ), err
    with open("/dev/full", "wb") as full:
        p = _aetool(["denoise", str(imgs), str(tmp_path / "dn"), "-q"], stdout=full,
                    stderr=subprocess.PIPE)  # fmt: skip
    assert p.returncode == 1 and "Traceback" not in p.stderr.decode()  # not a C++ abort (-6)
    junk = ["score", "-", "-m", str(score_model), "--device", "cpu", "-q"]
    p = _aetool(junk, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, input=os.urandom(2000))
    assert p.returncode in (1, 2, 4) and b"Traceback" not in p.stderr
    # A closed stdout: Python sees None; one usage line.
    p = _aetool(args, stderr=subprocess.PIPE, stdout=None, preexec_fn=lambda: os.close(1))
    assert p.returncode == 2 and b"standard output is closed" in p.stderr
