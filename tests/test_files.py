"""The one output rule (aetool/files.py): never an input, never existing without overwrite,
never out of its folder through a symlink, placed exclusively, failures as one line."""

from __future__ import annotations

import csv
import errno
import io
import os
import threading
from pathlib import Path

import pytest

from aetool.errors import OutputError
from aetool.files import atomic_path, atomic_write_bytes, check_output, display
from aetool.rows import csv_line


def test_check_output_refuses_inputs_read_files_existing_and_folders(tmp_path: Path) -> None:
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    (imgs / "a.png").write_bytes(b"png")
    model = tmp_path / "m.safetensors"
    model.write_bytes(b"model")
    with pytest.raises(OutputError, match="is one of the inputs"):
        check_output(imgs / "a.png", inputs=[imgs], overwrite=True)
    with pytest.raises(OutputError, match="is one of the inputs"):
        check_output(imgs / "a.png", inputs=[imgs / "a.png"], overwrite=True)
    with pytest.raises(OutputError, match="a file this command reads"):
        check_output(model, reads=[model], overwrite=True)
    with pytest.raises(OutputError, match="pass --overwrite"):
        check_output(model)
    with pytest.raises(OutputError, match="is a folder"):
        check_output(imgs, overwrite=True)
    check_output(model, overwrite=True)  # an ordinary existing file, with overwrite
    check_output(imgs / "new.json", inputs=[imgs])  # a new file beside the inputs
    # A link to an input is the input.
    (tmp_path / "link.png").symlink_to(imgs / "a.png")
    with pytest.raises(OutputError, match="is one of the inputs"):
        check_output(tmp_path / "link.png", inputs=[imgs / "a.png"], overwrite=True)


def test_symlinked_folder_out_of_root_is_refused(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "heat", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    victim = elsewhere / "x.png"
    victim.write_bytes(b"keep me")
    (root / "sub").symlink_to(elsewhere)
    with pytest.raises(OutputError, match="symbolic link"):
        atomic_write_bytes(root / "sub" / "x.png", b"heatmap", overwrite=True, root=root)
    assert victim.read_bytes() == b"keep me"
    atomic_write_bytes(root / "ok" / "x.png", b"heatmap", overwrite=False, root=root)
    assert (root / "ok" / "x.png").read_bytes() == b"heatmap"


def test_exclusive_placement_two_writers_one_winner(tmp_path: Path) -> None:
    target = tmp_path / "model.safetensors"
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def writer(i: int) -> None:
        try:
            with atomic_path(target, overwrite=False) as tmp:
                tmp.write_bytes(f"writer {i}".encode() * 1000)
                barrier.wait()  # all have passed the existence check; now race to place
            outcomes.append(f"ok {i}")
        except OutputError as exc:
            assert "exists" in str(exc)
            outcomes.append("refused")

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [o for o in outcomes if o.startswith("ok")]
    assert len(winners) == 1 and outcomes.count("refused") == 7
    i = int(winners[0].split()[1])
    assert target.read_bytes() == f"writer {i}".encode() * 1000  # whole, from the winner
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temp left


def test_failed_write_is_one_line_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out.json"
    target.write_bytes(b"old")

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OutputError, match=r"^cannot write .*out.json: No space left on device$"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    # A write that fails inside the block (the disk fills while writing) is the same line.
    monkeypatch.undo()
    with pytest.raises(OutputError, match="No space left"), atomic_path(tmp_path / "b") as tmp:
        tmp.write_bytes(b"x")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_long_names_keep_the_temporary_name_short(tmp_path: Path) -> None:
    name = "x" * 250 + ".png"  # near NAME_MAX: ".NAME.random.tmp" would not fit
    atomic_write_bytes(tmp_path / name, b"ok", overwrite=False)
    assert (tmp_path / name).read_bytes() == b"ok"


@pytest.mark.parametrize(
    "cell",
    ["a\rb", "a\nb", "c,d", 'e"f', "tab\there", "nul\x00x", "=1+2", "-x", "@y", "é\udcff", ""],
)
def test_csv_cells_round_trip_whatever_the_text(cell: str) -> None:
    line = csv_line(["p", cell])
    assert line.endswith("\n") and line.count("\n") == 1 + cell.count("\n")
    assert next(csv.reader(io.StringIO(line, newline=""))) == ["p", cell]
    # Formula-looking text is data: written as is (README, "Data rows").
    if cell.startswith(("=", "-", "@")):
        assert line == f"p,{cell}\n"


def test_display_escapes_control_characters_and_undecodable_bytes() -> None:
    assert display("a\rb.png") == "a\\rb.png"
    assert display(os.fsdecode(b"caf\xe9.png")) == "caf\\udce9.png"
    assert display("[bold]x[/].png") == "[bold]x[/].png"  # text; console.plain keeps it from rich
