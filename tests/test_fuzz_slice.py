"""A small slice of benchmarks/fuzz.py: mutated images and model files fail as clear errors."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "aetool_fuzz", Path(__file__).resolve().parents[1] / "benchmarks" / "fuzz.py"
)
assert _spec is not None and _spec.loader is not None
fuzz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz)


@pytest.fixture(scope="module")
def seeds() -> None:
    if not fuzz._SEEDS:
        fuzz._SEEDS.extend(fuzz.seed_images())


@pytest.mark.parametrize("kind", fuzz.KINDS)
def test_fuzz_slice_has_no_tracebacks(kind: str, seeds: None, tmp_path: Path) -> None:
    seed_path = fuzz.seed_model(tmp_path) if kind == "model" else None
    outcomes = [fuzz.run_case(kind, i, 7, tmp_path, seed_path) for i in range(60)]
    assert outcomes.count("traceback") == 0 and outcomes.count("hang") == 0
    # The mutations bite: most cases are refused, and each refusal was an AetoolError.
    assert outcomes.count("error") >= 20


def test_mutations_change_the_bytes() -> None:
    rng = random.Random(0)
    data = bytes(range(256)) * 4
    assert sum(fuzz.mutate_bytes(data, rng) != data for _ in range(50)) >= 45
