"""Tests for `aetool export`, `aetool interpolate` and `aetool latent-map`."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from aetool.cli.main import cli
from aetool.models.file import load_model, save_model
from aetool.models.registry import create_model

# Small models run faster on one thread than on two busy ones.
pytestmark = pytest.mark.usefixtures("one_thread")


def _write(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = create_model("conv", channels=1, height=8, width=8, latent_dim=3)
    pre = {"channels": 1, "height": 8, "width": 8, "resize": "stretch"}
    return save_model(tmp_path / "conv.safetensors", model, {"preprocessing": pre})


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """MVTec-like layout: test/good (4 images), test/crack (3), test/scratch (2)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "test"
    for sub, n in (("good", 4), ("crack", 3), ("scratch", 2)):
        for i in range(n):
            _write(root / sub / f"{i}.png", rng.integers(0, 256, (8, 8), dtype=np.uint8))
    return root


def _run(*args: str, stdin: str | None = None, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, list(args), input=stdin, env=env)


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_export_csv_rows_codes_and_labels(dataset: Path, model_file: Path) -> None:
    res = _run("export", str(dataset), "-m", str(model_file))
    assert res.exit_code == 0, res.output
    rows = _rows(res.stdout)
    assert list(rows[0]) == ["path", "z0", "z1", "z2", "label"]
    assert len(rows) == 9
    labels = {Path(r["path"]).parent.name: r["label"] for r in rows}
    assert labels == {"good": "0", "crack": "1", "scratch": "1"}
    # The codes are the model's: compare one against a direct encode.
    loaded = load_model(model_file)
    x = np.asarray(Image.open(rows[0]["path"]), np.float32)[None, None] / 255
    with torch.no_grad():
        z = loaded.model.encode(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose([float(rows[0][f"z{i}"]) for i in range(3)], z, rtol=1e-4, atol=1e-5)
    assert "Exported 9 latent code(s) of dimension 3" in res.stderr
    assert "Exported" not in res.stdout


def test_export_without_folder_labels_has_no_label_column(tmp_path: Path, model_file: Path):
    for i in range(3):
        _write(tmp_path / "plain" / f"{i}.png", np.full((8, 8), i * 40, np.uint8))
    rows = _rows(_run("export", str(tmp_path / "plain"), "-m", str(model_file)).stdout)
    assert list(rows[0]) == ["path", "z0", "z1", "z2"] and len(rows) == 3


def test_export_jsonl_and_default_model_from_env(dataset: Path, model_file: Path) -> None:
    res = _run("export", str(dataset), "--format", "jsonl", env={"AETOOL_MODEL": str(model_file)})
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(rows) == 9 and all(len([k for k in r if k.startswith("z")]) == 3 for r in rows)
    assert {r["label"] for r in rows} == {0, 1}


def test_export_npy_writes_array_and_index(tmp_path: Path, dataset: Path, model_file: Path):
    out = tmp_path / "codes.npy"
    res = _run("export", str(dataset), "-m", str(model_file), "--format", "npy", "-o", str(out))
    assert res.exit_code == 0, res.output
    arr = np.load(out)
    assert arr.shape == (9, 3) and arr.dtype == np.float32
    index = _rows((tmp_path / "codes.paths.csv").read_text())
    assert list(index[0]) == ["path", "label"] and len(index) == 9
    csv_rows = _rows(_run("export", str(dataset), "-m", str(model_file)).stdout)
    assert [r["path"] for r in index] == [r["path"] for r in csv_rows]
    np.testing.assert_allclose(arr[4], [float(csv_rows[4][f"z{i}"]) for i in range(3)], rtol=1e-5)
    assert res.stdout.split() == [str(out), str(tmp_path / "codes.paths.csv")]
    again = _run("export", str(dataset), "-m", str(model_file), "--format", "npy", "-o", str(out))
    assert again.exit_code == 2 and "--overwrite" in again.stderr
    no_o = _run("export", str(dataset), "-m", str(model_file), "--format", "npy")
    assert no_o.exit_code == 2 and "-o" in no_o.stderr


def test_export_to_csv_file(tmp_path: Path, dataset: Path, model_file: Path) -> None:
    out = tmp_path / "codes.csv"
    res = _run("export", str(dataset), "-m", str(model_file), "-o", str(out))
    assert res.exit_code == 0 and res.stdout.strip() == str(out)
    assert len(_rows(out.read_text())) == 9


def test_export_shards_partition(dataset: Path, model_file: Path) -> None:
    full = sorted(
        r["path"] for r in _rows(_run("export", str(dataset), "-m", str(model_file)).stdout)
    )
    for n in range(1, 6):
        seen: list[str] = []
        for i in range(1, n + 1):
            res = _run("export", str(dataset), "-m", str(model_file), "--shard", f"{i}/{n}")
            assert res.exit_code == 0, res.output
            rows = _rows(res.stdout)
            seen += [r["path"] for r in rows]
            # Labels come from the whole set, so a shard without a `good` image keeps them.
            assert all(r["label"] in ("0", "1") for r in rows)
        assert sorted(seen) == full


def test_export_paths_from_stdin_and_unreadable(tmp_path: Path, dataset: Path, model_file: Path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    listed = f"{dataset / 'good' / '0.png'}\n{dataset / 'crack'}\n{bad}\n"
    for args in (["-"], []):
        res = _run("export", *args, "-m", str(model_file), stdin=listed)
        assert res.exit_code == 4, res.output  # the readable ones were exported
        assert len(_rows(res.stdout)) == 4  # 1 + 3 crack images; the broken file skipped
        assert "bad.png" in res.stderr and "1 unreadable or missing skipped" in res.stderr
    res = _run("export", "-m", str(model_file), "--strict", stdin=listed)
    assert res.exit_code == 1 and "bad.png" in res.stderr


def test_export_refuses_models_without_vector_latent(tmp_path: Path, dataset: Path) -> None:
    path = save_model(tmp_path / "d.safetensors", create_model("denoiser", base_channels=8), {})
    res = _run("export", str(dataset), "-m", str(path))
    assert res.exit_code == 1 and "vector latent" in res.stderr and res.stdout == ""
    missing = _run("export", str(dataset), "-m", str(tmp_path / "none.safetensors"))
    assert missing.exit_code == 1 and "not found" in missing.stderr


def test_interpolate_writes_strip(tmp_path: Path, dataset: Path, model_file: Path) -> None:
    out = tmp_path / "strip.png"
    a, b = dataset / "good" / "0.png", dataset / "crack" / "1.png"
    res = _run("interpolate", str(a), str(b), "-m", str(model_file), "--steps", "5", "-o", str(out))
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == str(out)
    img = Image.open(out)
    # The real A, a 6 px grey separator, 5 frames 1 px apart, a separator, the real B.
    assert img.size == (7 * 64 + 4 + 2 * 6, 64) and img.mode == "L"
    from aetool.latents import interpolate

    frames = interpolate(load_model(model_file), a, b, 5)
    px = np.asarray(img)
    real_a = np.asarray(Image.open(a).convert("L").resize((8, 8), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(px[::8, :64:8], real_a)  # undo the 8x enlargement
    assert (px[:, 64:70] == 128).all() and (px[:, -70:-64] == 128).all()
    first = px[::8, 70 : 70 + 64 : 8]
    np.testing.assert_array_equal(first, np.round(frames[0, 0] * 255).astype(np.uint8))
    real_b = np.asarray(Image.open(b).convert("L").resize((8, 8), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(px[::8, -64::8], real_b)
    assert _run("interpolate", str(a), str(b), "-m", str(model_file), "--steps", "1").exit_code == 2


def test_latent_map_png(tmp_path: Path, dataset: Path, model_file: Path) -> None:
    out = tmp_path / "map.png"
    res = _run("latent-map", str(dataset), "-m", str(model_file), "-o", str(out))
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == str(out)
    img = Image.open(out)
    assert img.format == "PNG" and img.width >= 400
    assert "Mapped 9 latent code(s) of dimension 3" in res.stderr
    again = _run("latent-map", str(dataset), "-m", str(model_file), "-o", str(out))
    assert again.exit_code == 2


def test_latent_map_with_an_unreadable_input_exits_4(
    tmp_path: Path, dataset: Path, model_file: Path
) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    out = tmp_path / "map.png"
    res = _run("latent-map", str(dataset), str(bad), "-m", str(model_file), "-o", str(out))
    assert res.exit_code == 4, res.output
    assert res.stdout.strip() == str(out) and Image.open(out).format == "PNG"
    assert (
        "Mapped 9 latent code(s)" in res.stderr and "1 input(s) could not be encoded" in res.stderr
    )


def test_outputs_never_replace_an_input_image_even_with_overwrite(
    tmp_path: Path, dataset: Path, model_file: Path
) -> None:
    victim = dataset / "good" / "0.png"
    before = victim.read_bytes()
    m = ("-m", str(model_file), "--overwrite")
    runs = [
        ("export", str(dataset), "-o", str(victim), *m),
        ("export", str(dataset), "--format", "npy", "-o", str(dataset / "good" / "x.npy"), *m),
        ("interpolate", str(victim), str(dataset / "crack" / "1.png"), "-o", str(victim), *m),
        ("latent-map", str(dataset), "-o", str(victim), *m),
    ]
    (dataset / "good" / "x.paths.csv").write_bytes(b"")  # not an image: may be replaced
    for args in runs[:1] + runs[2:]:
        res = _run(*args)
        assert res.exit_code == 1, args
        assert res.stderr.strip().endswith(f"{victim} is one of the input images; write elsewhere")
        assert victim.read_bytes() == before
    assert _run(*runs[1]).exit_code == 0  # the npy and its index are not inputs


def test_picture_outputs_must_be_png_names(tmp_path: Path, dataset: Path, model_file: Path):
    a, b = dataset / "good" / "0.png", dataset / "crack" / "1.png"
    for out in ("strip.jpg", "-"):
        res = _run("interpolate", str(a), str(b), "-m", str(model_file), "-o", out)
        assert res.exit_code == 2 and "use a .png name" in res.stderr
    res = _run("latent-map", str(dataset), "-m", str(model_file), "-o", str(tmp_path / "m.PNG"))
    assert res.exit_code == 0, res.stderr
    assert Image.open(tmp_path / "m.PNG").format == "PNG"


def test_a_missing_path_fails_one_shard_only(tmp_path: Path, dataset: Path, model_file: Path):
    codes = []
    for i in range(1, 6):
        res = _run(
            "export", str(dataset), "nothere.png", "-m", str(model_file), "--shard", f"{i}/5"
        )
        codes.append(res.exit_code)
        assert ("nothere.png" in res.stderr) == (res.exit_code == 4), res.output
    assert sorted(codes) == [0, 0, 0, 0, 4]
