"""--shard I/N at the library level: disjoint shards whose union is the whole input."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from aetool.data.inputs import ImageRef, find_images
from aetool.data.shards import in_shard, parse_shard, select_shard
from aetool.errors import ConfigError


def _realistic_relpaths() -> list[str]:
    """An MVTec-AD-like tree, flat camera dumps, odd names and unicode: 1,000 paths."""
    paths = []
    for cat in ("bottle", "metal_nut", "screw"):
        paths += [f"{cat}/train/good/{i:03d}.png" for i in range(120)]
        for defect in ("good", "broken_large", "scratch"):
            paths += [f"{cat}/test/{defect}/{i:03d}.png" for i in range(30)]
    paths += [f"camera-2/IMG_{i:04d}.JPG" for i in range(300)]
    paths += [f"nested/a/b/c/d/frame {i}.tif" for i in range(40)]
    paths += [f"unicode/größe_{i}.webp" for i in range(5)] + ["日本/写真.png", "x.png"]
    paths += [f"dup-names/{d}/same.png" for d in range(23)]
    assert len(paths) == len(set(paths)) == 1000
    return paths


REFS = [ImageRef(Path("/data") / p, p) for p in _realistic_relpaths()]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_shards_are_disjoint_and_their_union_is_everything(n: int) -> None:
    shards = [list(select_shard(REFS, (i, n))) for i in range(1, n + 1)]
    union = [r for s in shards for r in s]
    assert len(union) == len(REFS)  # no image in two shards, none lost
    assert sorted(r.relpath for r in union) == sorted(r.relpath for r in REFS)
    for s in shards:  # each shard keeps the input order
        assert s == [r for r in REFS if r in set(s)]
    if n > 1:  # BLAKE2b spreads them evenly: every shard within 20% of its share
        assert all(abs(len(s) - len(REFS) / n) < 0.2 * len(REFS) / n for s in shards)


@pytest.mark.parametrize("n", [2, 3, 5])
def test_membership_does_not_depend_on_order_root_or_machine(n: int) -> None:
    shuffled = REFS[:]
    random.Random(7).shuffle(shuffled)
    elsewhere = [ImageRef(Path("/mnt/other/root") / r.relpath, r.relpath) for r in shuffled]
    for i in range(1, n + 1):
        a = {r.relpath for r in select_shard(REFS, (i, n))}
        assert a == {r.relpath for r in select_shard(shuffled, (i, n))}
        assert a == {r.relpath for r in select_shard(elsewhere, (i, n))}


def test_assignment_is_frozen_across_versions() -> None:
    """Jobs split across machines running different aetool versions must still agree."""
    keys = ["good/000.png", "good/001.png", "crack/000.png", "crack/001.png"]
    keys += ["scratch/000.png", "a b/ü.png", "x.png", "y.jpg"]
    refs = [ImageRef(Path("/d") / k, k) for k in keys]
    got = [[r.relpath for r in select_shard(refs, (i, 3))] for i in (1, 2, 3)]
    assert got == [
        ["crack/001.png"],
        ["good/000.png", "good/001.png", "scratch/000.png"],
        ["crack/000.png", "a b/ü.png", "x.png", "y.jpg"],
    ]
    assert [in_shard(k, 1, 1) for k in keys] == [True] * len(keys)


def test_string_spec_and_none() -> None:
    assert list(select_shard(REFS, "2/4")) == list(select_shard(REFS, (2, 4)))
    assert list(select_shard(REFS, None)) == REFS
    assert list(select_shard(iter(REFS), "1/1")) == REFS  # any iterable, consumed lazily


def test_shards_of_a_found_folder_cover_it(tmp_path: Path) -> None:
    for rel in ["good/a.png", "good/b.png", "bad/c.png", "bad/deep/d.png", "e.png", "f.jpg"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")  # sharding looks at names only
    refs, _ = find_images([tmp_path])
    assert len(refs) == 6
    for n in range(1, 6):
        got = sorted(r.relpath for i in range(1, n + 1) for r in select_shard(refs, (i, n)))
        assert got == sorted(r.relpath for r in refs)


@pytest.mark.parametrize(
    "spec, expected", [("1/1", (1, 1)), ("3/5", (3, 5)), ("8/8", (8, 8)), (" 2 / 4 ", (2, 4))]
)
def test_parse_shard_accepts(spec: str, expected: tuple[int, int]) -> None:
    assert parse_shard(spec) == expected


def test_parse_shard_none_means_no_sharding() -> None:
    assert parse_shard(None) is None


@pytest.mark.parametrize(
    "spec", ["0/3", "4/3", "3", "a/b", "1/0", "", "-1/2", "1/2/3", "/", "1/-2"]
)
def test_parse_shard_rejects_with_an_example(spec: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_shard(spec)
    msg = str(err.value)
    assert repr(spec) in msg and "I/N" in msg and "1 <= I <= N" in msg and "\n" not in msg
