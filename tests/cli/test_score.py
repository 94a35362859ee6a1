"""Tests for `aetool score` (fixtures score_tree / score_model live in conftest.py)."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from aetool.cli.main import cli

CORE = ["path", "score", "threshold", "is_anomaly", "percentile"]
COLUMNS_LABELLED = CORE + ["label", "error", "score_kind", "rule"]
COLUMNS_UNLABELLED = CORE + ["error", "score_kind", "rule"]


def run(args: list[str], input: str | None = None, env: dict | None = None) -> Result:
    return CliRunner().invoke(cli, ["score", "--device", "cpu", *args], input=input, env=env)


def parse_csv(text: str) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text))
    rows = list(reader)
    return list(reader.fieldnames or []), rows


def test_csv_columns_labels_and_flags(score_tree: Path, score_model: Path) -> None:
    res = run([str(score_tree / "test"), "-m", str(score_model)])
    assert res.exit_code == 0, res.stderr
    header, rows = parse_csv(res.stdout)
    assert header == COLUMNS_LABELLED
    assert len(rows) == 32
    assert {r["label"] for r in rows} == {"0", "1"}
    assert sum(r["label"] == "1" for r in rows) == 16
    rules = {r["rule"] for r in rows}
    thresholds = {r["threshold"] for r in rows}
    assert len(rules) == 1 and rules.pop().startswith("auto: median + 4*1.4826*MAD of")
    assert len(thresholds) == 1
    t = float(thresholds.pop())
    for r in rows:
        assert r["score_kind"] == "mse" and r["error"] == ""
        score = float(r["score"])
        assert 0 <= score <= 1
        assert r["is_anomaly"] == ("true" if score > t else "false")
        assert 0 <= float(r["percentile"]) <= 100
    # The summary goes to stderr only.
    assert "Scoring summary" in res.stderr and "ROC AUC" in res.stderr
    assert "Scoring summary" not in res.stdout


def test_jsonl_has_the_same_rows(score_tree: Path, score_model: Path) -> None:
    folder = str(score_tree / "test" / "good")
    csv_res = run([folder, "-m", str(score_model)])
    jl_res = run([folder, "-m", str(score_model), "--format", "jsonl"])
    assert jl_res.exit_code == 0, jl_res.stderr
    _, rows = parse_csv(csv_res.stdout)
    objs = [json.loads(line) for line in jl_res.stdout.splitlines()]
    assert [list(o) for o in objs] == [COLUMNS_LABELLED] * 16
    assert [o["path"] for o in objs] == [r["path"] for r in rows]
    for o, r in zip(objs, rows, strict=True):
        assert o["score"] == pytest.approx(float(r["score"]), rel=1e-5)
        assert o["label"] == 0 and o["error"] is None and isinstance(o["is_anomaly"], bool)


def test_table_format(score_tree: Path, score_model: Path) -> None:
    res = run([str(score_tree / "test" / "blob"), "-m", str(score_model), "-f", "table"])
    assert res.exit_code == 0, res.stderr
    assert "is_anomaly" in res.stdout and res.stdout.count("blob/") == 8


def test_paths_from_stdin_and_dash(score_tree: Path, score_model: Path) -> None:
    paths = sorted(str(p) for p in (score_tree / "test" / "scratch").glob("*.png"))[:3]
    res = run(["-m", str(score_model)], input="\n".join(paths) + "\n\n")
    assert res.exit_code == 0, res.stderr
    header, rows = parse_csv(res.stdout)
    assert header == COLUMNS_UNLABELLED  # no good/ folder among them: labels unknown
    assert [r["path"] for r in rows] == paths
    # '-' mixes stdin paths with folders.
    good = score_tree / "test" / "good"
    res2 = run([str(good), "-", "-m", str(score_model)], input="\n".join(paths))
    assert res2.exit_code == 0, res2.stderr
    _, rows2 = parse_csv(res2.stdout)
    assert len(rows2) == 16 + 3
    assert [r["path"] for r in rows2[16:]] == paths


def test_no_input_on_a_terminal_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, score_model: Path
) -> None:
    monkeypatch.setattr("aetool.cli.options.stdin_is_terminal", lambda: True)
    res = run(["-m", str(score_model)])
    assert res.exit_code == 2
    assert "pass image files or folders" in res.stderr and res.stdout == ""


def test_model_from_environment(score_tree: Path, score_model: Path) -> None:
    folder = str(score_tree / "test" / "good")
    res = run([folder], env={"AETOOL_MODEL": str(score_model)})
    assert res.exit_code == 0, res.stderr
    assert len(parse_csv(res.stdout)[1]) == 16
    missing = run([folder], env={"AETOOL_MODEL": str(score_tree / "nope.safetensors")})
    assert missing.exit_code == 1 and "nope.safetensors not found" in missing.stderr


def test_fail_on_anomaly_exit_codes(score_tree: Path, score_model: Path) -> None:
    m = str(score_model)
    flagged = run([str(score_tree / "test"), "-m", m, "--fail-on-anomaly"])
    assert flagged.exit_code == 3
    assert any(r["is_anomaly"] == "true" for r in parse_csv(flagged.stdout)[1])
    clean = run([str(score_tree / "test"), "-m", m, "--fail-on-anomaly", "--threshold", "1.0"])
    assert clean.exit_code == 0
    rows = parse_csv(clean.stdout)[1]
    assert {r["is_anomaly"] for r in rows} == {"false"} and {r["rule"] for r in rows} == {
        "explicit"
    }


@pytest.mark.parametrize("spec", ["p90", "2.5sigma", "0.004"])
def test_threshold_rules_appear_in_every_row(
    score_tree: Path, score_model: Path, spec: str
) -> None:
    res = run([str(score_tree / "test"), "-m", str(score_model), "-t", spec])
    assert res.exit_code == 0, res.stderr
    rows = parse_csv(res.stdout)[1]
    rule = {"p90": "p90 of", "2.5sigma": "mean + 2.5*std of", "0.004": "explicit"}[spec]
    assert all(r["rule"].startswith(rule) for r in rows)
    if spec == "0.004":
        assert {r["threshold"] for r in rows} == {"0.004"}


def test_bad_threshold_is_a_usage_error(score_model: Path, score_tree: Path) -> None:
    res = run([str(score_tree / "test"), "-m", str(score_model), "-t", "p200"])
    assert res.exit_code == 2 and "p0..p100" in res.stderr


def _corrupt_folder(tmp_path: Path, score_tree: Path) -> Path:
    folder = tmp_path / "mixed"
    folder.mkdir()
    src = sorted((score_tree / "test" / "good").glob("*.png"))
    for i, name in enumerate(["a.png", "b.png", "d.png", "e.png", "f.png"]):
        shutil.copy(src[i], folder / name)
    (folder / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    return folder


def test_unreadable_file_mid_batch_becomes_an_error_row(
    tmp_path: Path, score_tree: Path, score_model: Path
) -> None:
    folder = _corrupt_folder(tmp_path, score_tree)
    rep = tmp_path / "r.json"
    res = run([str(folder), "-m", str(score_model), "--batch-size", "4", "--report", str(rep)])
    assert res.exit_code == 4, res.stderr  # the others were scored; one input failed
    assert "1 input(s) could not be scored (exit code 4" in res.stderr
    header, rows = parse_csv(res.stdout)
    assert header == COLUMNS_UNLABELLED
    assert [Path(r["path"]).name for r in rows] == [f"{c}.png" for c in "abcdef"]
    bad = rows[2]
    assert bad["score"] == "" and bad["is_anomaly"] == "" and bad["percentile"] == ""
    assert bad["error"] and bad["rule"]  # the reason, and the rule still present
    assert all(r["score"] and not r["error"] for i, r in enumerate(rows) if i != 2)
    assert "c.png" in res.stderr and "warning" in res.stderr
    report = json.loads(rep.read_text())
    assert report["counts"]["unreadable"] == 1 and report["counts"]["scored"] == 5
    assert report["unreadable"][0]["path"].endswith("c.png")


def test_strict_makes_an_unreadable_file_fatal(
    tmp_path: Path, score_tree: Path, score_model: Path
) -> None:
    folder = _corrupt_folder(tmp_path, score_tree)
    res = run([str(folder), "-m", str(score_model), "--strict", "--batch-size", "4"])
    assert res.exit_code == 1
    assert res.stderr.startswith("Error:") and "c.png" in res.stderr
    assert "Traceback" not in res.stderr
    # Rows before the bad file were already streamed; none after it.
    assert [Path(r["path"]).name for r in parse_csv(res.stdout)[1]] == ["a.png", "b.png"]


def test_missing_stdin_path_is_a_row(score_tree: Path, score_model: Path) -> None:
    good = sorted(str(p) for p in (score_tree / "test" / "good").glob("*.png"))[:2]
    res = run(["-m", str(score_model)], input="\n".join([good[0], "nope/x.png", good[1]]))
    assert res.exit_code == 4, res.stderr
    rows = parse_csv(res.stdout)[1]
    assert len(rows) == 3
    missing = [r for r in rows if r["path"] == "nope/x.png"]
    assert missing and missing[0]["error"] == "no such file or folder"


def test_mvtec_tree_labels_auc_and_report(
    tmp_path: Path, score_tree: Path, score_model: Path
) -> None:
    rep = tmp_path / "report.json"
    res = run([str(score_tree), "-m", str(score_model), "--report", str(rep)])
    assert res.exit_code == 0, res.stderr
    rows = parse_csv(res.stdout)[1]
    assert not any("ground_truth" in r["path"] for r in rows)  # masks are not scored
    assert len(rows) == 48 + 32
    report = json.loads(rep.read_text())
    assert report["counts"]["excluded_masks"] == 16
    assert report["labels"] == {
        "known": 80,
        "normal": 64,
        "anomalous": 16,
        "source": "folder layout",
    }
    m = report["metrics"]
    assert m["roc_auc"] >= 0.9 and m["average_precision"] >= 0.8
    cm = m["confusion"]
    assert cm["tn"] + cm["fp"] + cm["fn"] + cm["tp"] == 80
    assert cm["tp"] + cm["fp"] == report["counts"]["anomalies"]
    assert report["threshold"]["rule"] == rows[0]["rule"]
    assert report["threshold"]["value"] == pytest.approx(float(rows[0]["threshold"]), rel=1e-5)
    assert report["threshold"]["decides_is_anomaly"] is True
    best = report["best_f1"]
    assert best["decides_is_anomaly"] is False and best["metrics"]["f1"] >= m["f1"]
    assert report["pixel"]["images_with_masks"] == 16 and report["pixel"]["roc_auc"] >= 0.9
    assert "pixel ROC AUC" in res.stderr and "F1-optimal" in res.stderr


def test_labels_csv_overrides_folders(tmp_path: Path, score_tree: Path, score_model: Path) -> None:
    good = score_tree / "test" / "good"
    names = sorted(p.name for p in good.glob("*.png"))
    lab = tmp_path / "labels.csv"
    lab.write_text(
        "path,label\n" + "".join(f"{n},{'bad' if i < 4 else 'good'}\n" for i, n in enumerate(names))
    )
    rep = tmp_path / "r.json"
    res = run([str(good), "-m", str(score_model), "--labels", str(lab), "--report", str(rep)])
    assert res.exit_code == 0, res.stderr
    rows = parse_csv(res.stdout)[1]
    assert [r["label"] for r in rows] == ["1"] * 4 + ["0"] * 12
    report = json.loads(rep.read_text())
    assert report["labels"]["source"] == "labels file" and report["labels"]["anomalous"] == 4


def _image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


def test_heatmaps_mirror_paths_at_input_size_and_odd_images_convert(
    tmp_path: Path, score_tree: Path, score_model: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(score_tree / "test" / "blob", data / "blob")
    rng = np.random.default_rng(0)
    odd = data / "odd"
    odd.mkdir()
    Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(odd / "rgb.png")
    Image.fromarray(rng.integers(0, 255, (30, 30, 4), dtype=np.uint8), "RGBA").save(odd / "a.png")
    Image.fromarray(rng.integers(0, 255, (24, 24), dtype=np.uint8)).save(odd / "j.jpg")
    out = tmp_path / "heat"
    res = run([str(data), "-m", str(score_model), "--heatmaps", str(out)])
    assert res.exit_code == 0, res.stderr
    rows = parse_csv(res.stdout)[1]
    assert len(rows) == 11 and all(r["score"] and not r["error"] for r in rows)
    for r in rows:
        rel = Path(r["path"]).relative_to(data)
        name = rel if rel.suffix == ".png" else rel.with_name(rel.name + ".png")
        heat = out / name
        assert heat.is_file(), heat
        # A panel: image | error map | overlay | colour bar (no masks outside the MVTec
        # layout), each cell the input enlarged by a whole factor to at least 256 px.
        w, h = _image_size(Path(r["path"]))
        k = -(-256 // max(w, h))
        pw, ph = _image_size(heat)
        assert ph == h * k + 20 + 2 * 4
        assert 3 * (w * k + 4) < pw < 4 * (w * k + 4)
    assert _image_size(out / "odd" / "rgb.png")[1] == 40 * 5 + 28  # 56 x 40: 5x enlarged
    assert not list(out.rglob("*.tmp"))
    # In the MVTec layout the ground-truth mask gets its own cell, after the image.
    mvtec = tmp_path / "heat-mvtec"
    res = run([str(score_tree / "test" / "blob"), "-m", str(score_model), "--heatmaps", str(mvtec)])
    assert res.exit_code == 0, res.stderr
    panel = np.asarray(Image.open(mvtec / "000.png").convert("RGB"))
    k = -(-256 // 24)
    assert 4 * (24 * k + 4) < panel.shape[1] < 5 * (24 * k + 4)
    cell = panel[24 : 24 + 24 * k : k, 4 : 4 + 24 * k : k, 0]
    original = np.asarray(Image.open(score_tree / "test" / "blob" / "000.png"))
    np.testing.assert_array_equal(cell, original)  # nearest-neighbour enlargement
    mask = np.asarray(Image.open(score_tree / "ground_truth" / "blob" / "000_mask.png")) > 0
    truth = panel[24 : 24 + 24 * k : k, 8 + 24 * k : 8 + 48 * k : k, 0] > 127
    np.testing.assert_array_equal(truth, mask)
    # A heatmap folder inside a scored folder is refused before anything is written.
    inside = run([str(data), "-m", str(score_model), "--heatmaps", str(data / "heat")])
    assert inside.exit_code == 1 and "inside the scored folder" in inside.stderr
    assert inside.stdout == "" and not (data / "heat").exists()


def test_shards_partition_the_rows(score_tree: Path, score_model: Path) -> None:
    args = [str(score_tree / "test"), "-m", str(score_model), "-q"]
    full = {r["path"]: r["score"] for r in parse_csv(run(args).stdout)[1]}
    assert len(full) == 32
    for n in range(1, 6):
        seen: list[str] = []
        for i in range(1, n + 1):
            res = run([*args, "--shard", f"{i}/{n}"])
            assert res.exit_code == 0, res.stderr
            for r in parse_csv(res.stdout)[1]:
                # Batch composition changes float rounding in the last digits only.
                assert float(r["score"]) == pytest.approx(float(full[r["path"]]), rel=1e-4)
                assert r["label"] in ("0", "1")  # labels come from the whole set
                seen.append(r["path"])
        assert len(seen) == len(set(seen)) == 32 and set(seen) == set(full)
    bad = run([*args, "--shard", "6/5"])
    assert bad.exit_code == 2 and "I/N" in bad.stderr


def test_quiet_silences_stderr(score_tree: Path, score_model: Path) -> None:
    res = run([str(score_tree / "test" / "good"), "-m", str(score_model), "-q"])
    assert res.exit_code == 0 and res.stderr == "" and len(parse_csv(res.stdout)[1]) == 16


def test_closed_pipe_ends_quietly(score_tree: Path, score_model: Path) -> None:
    # cli() without main()'s SIGPIPE reset: exercises the BrokenPipeError handler.
    code = "import sys; from aetool.cli import cli; cli(sys.argv[1:])"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    args = ["score", str(score_tree), "-m", str(score_model), "--batch-size", "1"]
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    header = proc.stdout.readline().decode()
    assert header.startswith("path,score,threshold,is_anomaly,percentile")
    proc.stdout.close()  # like `| head -n 1`
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_fail_on_anomaly_outranks_partial_failure(
    tmp_path: Path, score_tree: Path, score_model: Path
) -> None:
    folder = _corrupt_folder(tmp_path, score_tree)
    args = [str(folder), "-m", str(score_model), "--threshold", "0"]
    assert run(args).exit_code == 4  # every readable image is flagged, one is unreadable
    assert run([*args, "--fail-on-anomaly"]).exit_code == 3


# --- issue 19: empty shards, -o, labels, threshold hint, full precision ---------------------


def test_empty_shard_writes_header_and_exits_0(score_tree: Path, score_model: Path) -> None:
    """Two images over 8 shards leave most shards empty: each still gives the header."""
    imgs = sorted((score_tree / "test" / "good").glob("*.png"))[:2]
    outputs = [run([*map(str, imgs), "-m", str(score_model), "--shard", f"{i}/8"])
               for i in range(1, 9)]  # fmt: skip
    assert all(r.exit_code == 0 for r in outputs), [r.stderr for r in outputs]
    headers = {r.stdout.splitlines()[0] for r in outputs}
    assert len(headers) == 1  # every shard, empty or not, has the same columns
    rows = [row for r in outputs for row in parse_csv(r.stdout)[1]]
    assert sorted(row["path"] for row in rows) == sorted(map(str, imgs))
    assert sum(len(r.stdout.splitlines()) == 1 for r in outputs) >= 6  # header only


def test_output_file_and_overwrite(tmp_path: Path, score_tree: Path, score_model: Path) -> None:
    out = tmp_path / "scores.csv"
    res = run([str(score_tree / "test" / "blob"), "-m", str(score_model), "-o", str(out)])
    assert res.exit_code == 0, res.stderr
    assert res.stdout == ""
    header, rows = parse_csv(out.read_text())
    assert header == COLUMNS_UNLABELLED and len(rows) == 8
    again = run([str(score_tree / "test" / "blob"), "-m", str(score_model), "-o", str(out)])
    assert again.exit_code == 2 and "--overwrite" in again.stderr
    res = run([str(score_tree / "test" / "good"), "-m", str(score_model), "-o", str(out),
               "--overwrite"])  # fmt: skip
    assert res.exit_code == 0 and "good/" in out.read_text() and "blob/" not in out.read_text()


def test_folder_labels_warn_and_no_labels(score_tree: Path, score_model: Path) -> None:
    res = run([str(score_tree / "test"), "-m", str(score_model)])
    assert res.exit_code == 0
    assert "labels come from folder names: 16 normal, 16 anomalous" in res.stderr
    assert "defect" in res.stderr and "--no-labels" in res.stderr
    res = run([str(score_tree / "test"), "-m", str(score_model), "--no-labels"])
    assert res.exit_code == 0, res.stderr
    header, rows = parse_csv(res.stdout)
    assert header == COLUMNS_UNLABELLED and len(rows) == 32
    assert "folder names" not in res.stderr and "ROC AUC / AP" not in res.stderr
    bad = run([str(score_tree / "test"), "-m", str(score_model), "--no-labels", "--labels",
               str(score_tree / "nope.csv")])  # fmt: skip
    assert bad.exit_code == 2


def test_good_images_under_defect_folder_are_called_anomalous_with_a_warning(
    tmp_path: Path, score_tree: Path, score_model: Path
) -> None:
    batch = tmp_path / "incoming" / "defect"
    shutil.copytree(score_tree / "test" / "good", batch)
    res = run([str(tmp_path / "incoming"), "-m", str(score_model)])
    assert "0 normal, 16 anomalous" in res.stderr
    res = run([str(tmp_path / "incoming"), "-m", str(score_model), "--no-labels"])
    assert "label" not in parse_csv(res.stdout)[0]


@pytest.mark.parametrize(("value", "hint"), [("3", True), ("10", True), ("0.5", False),
                                              ("3sigma", False), ("12", False)])  # fmt: skip
def test_small_whole_threshold_gets_a_sigma_hint(
    score_tree: Path, score_model: Path, value: str, hint: bool
) -> None:
    res = run([str(score_tree / "test" / "blob"), "-m", str(score_model), "-t", value])
    assert res.exit_code == 0
    assert ("hint:" in res.stderr and f"-t {value}sigma" in res.stderr) is hint


def test_csv_floats_read_back_exactly(score_tree: Path, score_model: Path) -> None:
    res = run([str(score_tree / "test" / "blob"), "-m", str(score_model)])
    jl = run([str(score_tree / "test" / "blob"), "-m", str(score_model), "-f", "jsonl"])
    csv_rows = parse_csv(res.stdout)[1]
    json_rows = [json.loads(line) for line in jl.stdout.splitlines()]
    for c, j in zip(csv_rows, json_rows, strict=True):
        assert float(c["score"]) == j["score"] and float(c["threshold"]) == j["threshold"]
        assert float(c["percentile"]) == j["percentile"]
    assert max(len(r["score"]) for r in csv_rows) > 8  # more than the old 6 digits


def test_decoding_processes_give_the_same_rows_and_a_bad_setting_is_one_error(
    score_tree: Path, score_model: Path
) -> None:
    args = [str(score_tree / "test"), "-m", str(score_model), "--batch-size", "5"]
    threads = run(args, env={"AETOOL_DECODE_PROCESSES": "0"})
    procs = run(args, env={"AETOOL_DECODE_PROCESSES": "2"})
    assert threads.exit_code == procs.exit_code == 0, procs.stderr
    assert procs.stdout == threads.stdout and len(parse_csv(procs.stdout)[1]) > 10
    bad = run(args, env={"AETOOL_DECODE_PROCESSES": "lots"})
    assert bad.exit_code == 1 and bad.stdout == ""
    assert "AETOOL_DECODE_PROCESSES must be a whole number" in bad.stderr
