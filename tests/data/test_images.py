from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import make_blob_images, write_folder
from PIL import Image

from aetool.data.cache import iter_batches, load_images
from aetool.data.decode import DEFAULT_SIZE, decode_image, parse_size
from aetool.data.inputs import find_images
from aetool.errors import ConfigError, ImageError, NoImagesError


def test_walk_is_sorted_skips_hidden_and_non_images(tmp_path: Path) -> None:
    img = Image.new("L", (8, 8), 100)
    for rel in ["b/2.png", "b/1.png", "a/z.jpg", ".hidden/x.png", "a/.y.png", "a/notes.txt"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".txt"):
            p.write_text("hello")
        else:
            img.save(p)
    refs, _ = find_images([tmp_path])
    assert [r.relpath for r in refs] == ["a/z.jpg", "b/1.png", "b/2.png"]


def test_symlink_loop_does_not_hang(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "d" / "a.png")
    os.symlink(tmp_path, tmp_path / "d" / "loop")
    refs, _ = find_images([tmp_path])
    assert [r.relpath for r in refs] == ["d/a.png"]


def test_missing_path_raises(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="does not exist"):
        find_images([tmp_path / "nope"])


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".tif", ".webp", ".gif", ".pgm"])
def test_formats_decode(tmp_path: Path, ext: str) -> None:
    arr = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))
    Image.fromarray(arr).save(tmp_path / f"x{ext}")
    out = decode_image(tmp_path / f"x{ext}")
    # WebP has no grayscale mode: Pillow stores it as RGB.
    assert out.shape == ((3, 16, 16) if ext == ".webp" else (1, 16, 16))
    tol = 0.05 if ext in (".jpg", ".webp") else 1e-6
    assert np.abs(out[0] - arr / 255).max() <= tol


def test_sixteen_bit_is_scaled_not_clipped(tmp_path: Path) -> None:
    arr = np.array([[0, 1000], [30000, 65535]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "deep.png")
    out = decode_image(tmp_path / "deep.png")
    np.testing.assert_allclose(out[0], arr / 65535, atol=1e-6)
    cached = load_images([tmp_path]).data[0, 0]
    np.testing.assert_array_equal(cached, np.round(arr / 65535 * 255).astype(np.uint8))


@pytest.mark.parametrize("background,expected", [("black", 0), ("white", 255)])
def test_alpha_composited_on_background(tmp_path: Path, background: str, expected: int) -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red, fully transparent except one pixel
    rgba[0, 0, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    s = load_images([tmp_path], alpha_background=background)
    assert s.channels == 3
    assert tuple(s.data[0, :, 0, 0]) == (255, 0, 0)
    assert tuple(s.data[0, :, 3, 3]) == (expected, expected, expected)


def test_palette_cmyk_and_channel_decision(tmp_path: Path) -> None:
    pal = Image.new("P", (8, 8))
    pal.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    pal.putpixel((1, 1), 1)
    pal.save(tmp_path / "p.png")
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    s = load_images([tmp_path])
    assert s.channels == 3
    p = s.data[[r.relpath for r in s.refs].index("p.png")]
    assert tuple(p[:, 1, 1]) == (200, 10, 10)
    c = s.data[[r.relpath for r in s.refs].index("c.jpg")]
    assert c[0].mean() > 200 and c[1].mean() < 40  # CMYK (0,255,255,0) is red
    gray = load_images([tmp_path], channels=1)
    assert gray.data.shape[1] == 1


def test_grayscale_only_folder_gives_one_channel(blob_folder: Path) -> None:
    s = load_images([blob_folder])
    assert s.channels == 1 and s.size == (16, 16) and s.data.shape == (48, 1, 16, 16)
    assert s.data.dtype == np.uint8


def test_exif_orientation_applied(tmp_path: Path) -> None:
    arr = np.zeros((4, 8), dtype=np.uint8)
    arr[0, 0] = 255
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    img.save(tmp_path / "o.jpg", exif=exif, quality=100)
    out = decode_image(tmp_path / "o.jpg")
    assert out.shape == (1, 8, 4)
    s = load_images([tmp_path])
    assert s.size == (8, 4)


def test_mixed_sizes_use_default_or_given_size(tmp_path: Path) -> None:
    Image.new("L", (10, 12)).save(tmp_path / "a.png")
    Image.new("L", (20, 10)).save(tmp_path / "b.png")
    assert load_images([tmp_path]).size == DEFAULT_SIZE
    s = load_images([tmp_path], size="6x9", resize="crop")
    assert s.data.shape == (2, 1, 6, 9)
    native = load_images([tmp_path], native_size=True)
    assert [a.shape for a in native.data] == [(1, 12, 10), (1, 10, 20)]


def test_parse_size() -> None:
    assert parse_size("64") == (64, 64)
    assert parse_size("48x32") == (48, 32)
    from aetool.errors import ConfigError

    for bad in ("x", "0", "1x2x3", "big"):
        with pytest.raises(ConfigError):
            parse_size(bad)


def test_bad_files_are_skipped_with_reasons(tmp_path: Path) -> None:
    write_folder(tmp_path, make_blob_images(4))
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image")
    good = (tmp_path / "img000.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(good[: len(good) // 2])
    s = load_images([tmp_path])
    assert len(s) == 4
    reasons = {Path(k.path).name: k.reason for k in s.skipped}
    assert set(reasons) == {"zero.png", "text.png", "trunc.png"}
    assert "0 bytes" in reasons["zero.png"]
    with pytest.raises(ImageError, match=r"(zero|text|trunc)\.png"):
        load_images([tmp_path], strict=True)


def test_empty_and_unreadable_folders(tmp_path: Path) -> None:
    with pytest.raises(NoImagesError, match="no image files"):
        load_images([tmp_path])
    (tmp_path / "bad.png").write_text("nope")
    with pytest.raises(NoImagesError, match="could be"):
        load_images([tmp_path])


def test_memmap_cache_when_over_budget(blob_folder: Path) -> None:
    (blob_folder / "broken.png").write_text("x")
    s = load_images([blob_folder], memory_budget=100)
    assert isinstance(s.data, np.memmap)
    ref = load_images([blob_folder])
    np.testing.assert_array_equal(np.asarray(s.data), ref.data)


def test_iter_batches_streams_in_order(blob_folder: Path) -> None:
    (blob_folder / "img010.png").write_text("broken in the middle")
    refs, _ = find_images([blob_folder])
    batches = list(iter_batches(refs, channels=1, size=(8, 8), batch_size=10))
    assert [len(b.refs) + len(b.failed) for b in batches] == [10, 10, 10, 10, 8]
    assert batches[1].failed[0][0].relpath == "img010.png"
    assert all(b.data.shape[1:] == (1, 8, 8) for b in batches)


def test_iter_batches_in_processes_equals_threads(blob_folder: Path) -> None:
    (blob_folder / "img010.png").write_text("broken in the middle")
    (blob_folder / "img020.png").write_bytes(b"")
    refs, _ = find_images([blob_folder])
    kw = dict(channels=3, size=(12, 10), batch_size=7)
    threads = list(iter_batches(refs, processes=0, **kw))
    procs = list(iter_batches(refs, processes=2, **kw))
    assert len(procs) == len(threads) == 7
    for a, b in zip(threads, procs, strict=True):
        assert a.refs == b.refs and a.failed == b.failed
        np.testing.assert_array_equal(a.data, b.data)
    reasons = dict((r.relpath, why) for b in procs for r, why in b.failed)
    assert set(reasons) == {"img010.png", "img020.png"}
    assert reasons["img020.png"] == "empty file (0 bytes)"


def test_iter_batches_process_pool_closes_when_the_caller_stops(blob_folder: Path) -> None:
    refs, _ = find_images([blob_folder])
    it = iter_batches(refs, channels=1, size=(8, 8), batch_size=4, processes=2)
    first = next(it)
    it.close()  # the pool shuts down; no hang, no stray worker
    assert len(first.refs) == 4 and first.data.shape == (4, 1, 8, 8)


def test_iter_batches_without_working_processes_decodes_here(
    blob_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    def broken(self: object, *a: object, **k: object) -> None:
        raise BrokenProcessPool("a worker died")

    refs, _ = find_images([blob_folder])
    want = list(iter_batches(refs, channels=1, size=(8, 8), batch_size=5, processes=0))
    monkeypatch.setattr(ProcessPoolExecutor, "submit", broken)
    got = list(iter_batches(refs, channels=1, size=(8, 8), batch_size=5, processes=2))
    assert [b.refs for b in got] == [b.refs for b in want]
    np.testing.assert_array_equal(np.concatenate([b.data for b in got]),
                                  np.concatenate([b.data for b in want]))  # fmt: skip


def test_decode_processes_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    from aetool.data import cache

    monkeypatch.delenv(cache.PROCESSES_ENV, raising=False)
    monkeypatch.setattr(cache.os, "cpu_count", lambda: 32)
    assert cache.decode_processes(100) == 0  # few images: threads
    assert cache.decode_processes(10_000) == 16
    monkeypatch.setattr(cache.os, "cpu_count", lambda: 2)
    assert cache.decode_processes(10_000) == 2
    monkeypatch.setenv(cache.PROCESSES_ENV, "0")
    assert cache.decode_processes(10_000) == 0
    monkeypatch.setenv(cache.PROCESSES_ENV, "3")
    assert cache.decode_processes(10) == 3
    monkeypatch.setenv(cache.PROCESSES_ENV, "many")
    with pytest.raises(ConfigError, match="AETOOL_DECODE_PROCESSES"):
        cache.decode_processes(10)


def test_decompression_bomb_guard_stays_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_folder(tmp_path, make_blob_images(2))
    Image.new("L", (64, 64)).save(tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64x64 > 2x the limit
    s = load_images([tmp_path])
    assert len(s) == 2 and [Path(k.path).name for k in s.skipped] == ["huge.png"]
    assert "decompression bomb" in s.skipped[0].reason


def test_unreadable_folders_are_reported_not_silently_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aetool.data.inputs as images_mod

    (tmp_path / "ok").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "ok" / "a.png")
    real_walk = os.walk

    def walk(top, **kw):  # the folder "locked" cannot be listed (root ignores chmod)
        kw["onerror"](PermissionError(13, "Permission denied", str(tmp_path / "locked")))
        yield from real_walk(top, **kw)

    monkeypatch.setattr(images_mod.os, "walk", walk)
    refs, skipped = find_images([tmp_path])
    assert [r.relpath for r in refs] == ["ok/a.png"]
    assert [(s.path, s.reason) for s in skipped] == [
        (str(tmp_path / "locked"), "cannot read folder (Permission denied)")
    ]
