"""Deterministic, disjoint shards of an input list for batch jobs (``--shard I/N``).

An image belongs to shard ``I`` of ``N`` when a stable hash (BLAKE2b) of its
relative path, taken modulo ``N``, equals ``I - 1``. Every machine or job
that sees the same inputs makes the same choice, the shards are disjoint and
their union is the whole input, whatever order the inputs arrive in.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from typing import Protocol, TypeVar

from aetool.errors import ConfigError

__all__ = ["in_shard", "missing_in_shard", "parse_shard", "path_key", "select_shard"]


class _Relative(Protocol):
    @property
    def relpath(self) -> str: ...


class _Named(Protocol):
    @property
    def path(self) -> str | os.PathLike[str]: ...


T = TypeVar("T", bound=_Relative)
P = TypeVar("P", bound=_Named)


def parse_shard(spec: str | None) -> tuple[int, int] | None:
    """``"I/N"`` with 1 <= I <= N -> ``(I, N)``; None stays None."""
    if spec is None:
        return None
    i_s, sep, n_s = spec.partition("/")
    try:
        i, n = int(i_s), int(n_s)
    except ValueError:
        i = n = 0
    if not sep or n < 1 or not 1 <= i <= n:
        raise ConfigError(f"--shard {spec!r} is not I/N with 1 <= I <= N (for example 2/8)")
    return i, n


def in_shard(key: str, index: int, count: int) -> bool:
    """Whether ``key`` (a relative path) falls in shard ``index`` (1-based) of ``count``."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count == index - 1


def missing_in_shard(paths: Iterable[P], shard: tuple[int, int] | str | None) -> list[P]:
    """The missing input paths (objects with ``.path``) that one shard reports: each
    belongs to one shard by its path as given, as ``aetool score`` assigns them."""
    if isinstance(shard, str):
        shard = parse_shard(shard)
    return [m for m in paths if shard is None or in_shard(path_key(str(m.path)), *shard)]


def path_key(path: str) -> str:
    """A path as given, normalised for matching: ``/`` separators, no leading ``./``."""
    key = path.strip().replace("\\", "/")
    while key.startswith("./"):
        key = key[2:]
    return key


def select_shard(refs: Iterable[T], shard: tuple[int, int] | str | None) -> Iterator[T]:
    """Yield the refs of one shard (all of them when ``shard`` is None)."""
    if isinstance(shard, str):
        shard = parse_shard(shard)
    for ref in refs:
        if shard is None or in_shard(ref.relpath, *shard):
            yield ref
