"""Input discovery shared by every command: arguments, stdin, missing paths, shards."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from aetool.data.inputs import (
    InputArgumentError,
    NoInputsError,
    collect_images,
    read_input_args,
    select_inputs,
)
from aetool.errors import ImageError, NoImagesError


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_read_input_args_dash_and_stdin() -> None:
    stdin = io.StringIO("a.png\n\n  b.png \n")
    assert read_input_args(["x", "-"], stdin, stdin_is_terminal=False) == ["x", "a.png", "b.png"]
    piped = io.StringIO("c.png\n")
    assert read_input_args([], piped, stdin_is_terminal=False) == ["c.png"]
    with pytest.raises(NoInputsError):
        read_input_args([], io.StringIO(""), stdin_is_terminal=True)
    with pytest.raises(InputArgumentError, match="only once"):
        read_input_args(["-", "-"], io.StringIO("a\n"), stdin_is_terminal=False)
    with pytest.raises(InputArgumentError, match="no image paths"):
        read_input_args(["-"], io.StringIO("\n"), stdin_is_terminal=False)


def test_select_inputs_missing_paths_shards_and_strict(tmp_path: Path) -> None:
    for i in range(12):
        _touch(tmp_path / "in" / f"{i:02d}.png")
    paths = [str(tmp_path / "in"), str(tmp_path / "gone.png")]
    seen: list[list[str]] = []
    total_missing = 0
    rows: set[str] = set()
    for i in (1, 2, 3):
        sel = select_inputs(paths, shard=(i, 3), on_missing=lambda m: seen.append(m))
        assert len(sel.found) == 12
        rows |= {r.relpath for r in sel.refs}
        total_missing += len(sel.missing)
    assert len(rows) == 12 and total_missing == 1  # a missing path counts in one shard only
    assert sum(len(m) for m in seen) == 1 and len(seen) == 3  # warned once in all
    with pytest.raises(ImageError, match="gone.png: no such file or folder"):
        select_inputs(paths, strict=True)
    with pytest.raises(NoImagesError, match="no image files found"):
        select_inputs([str(tmp_path / "gone.png")])


def test_collect_images_keeps_layout_of_named_files(tmp_path: Path) -> None:
    a = _touch(tmp_path / "test" / "good" / "a.png")
    b = _touch(tmp_path / "test" / "bad" / "b.png")
    _touch(tmp_path / "test" / "ground_truth" / "bad" / "b_mask.png")
    refs, missing, excluded = collect_images([a, b, tmp_path / "nope.png"])
    assert [r.relpath for r in refs] == ["good/a.png", "bad/b.png"]
    assert missing == [str(tmp_path / "nope.png")] and excluded == 0
    refs, _, excluded = collect_images([tmp_path / "test"])
    assert sorted(r.relpath for r in refs) == ["bad/b.png", "good/a.png"] and excluded == 1
