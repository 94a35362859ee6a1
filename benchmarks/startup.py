"""How long ``aetool --help``, ``--version``, a command's ``--help`` and a Tab of shell
completion take, against ``python -c pass`` and against importing torch.

Each is run as a fresh process (as a shell runs it), N times in an interleaved
order, so a machine that slows down during the run moves all of them alike;
reported is the median wall time, the median minus ``python -c pass`` (what
aetool itself costs) and the ratio to ``python -c pass``.

    python benchmarks/startup.py            # about 30 s
    python benchmarks/startup.py --rounds 21
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

PY = sys.executable
CLI = "from aetool.cli.main import main; import sys; sys.argv[0] = 'aetool'; main()"

CASES: dict[str, tuple[list[str], dict[str, str]]] = {
    "python -c pass": ([PY, "-c", "pass"], {}),
    "aetool --version": ([PY, "-c", CLI, "--version"], {}),
    "aetool --help": ([PY, "-c", CLI, "--help"], {}),
    "aetool score --help": ([PY, "-c", CLI, "score", "--help"], {}),
    "aetool train --help": ([PY, "-c", CLI, "train", "--help"], {}),
    "Tab: aetool score --sh<TAB>": (
        [PY, "-c", CLI],
        {"_AETOOL_COMPLETE": "bash_complete", "COMP_WORDS": "aetool score --sh", "COMP_CWORD": "2"},
    ),
    "python -c 'import torch' (for scale)": ([PY, "-c", "import torch"], {}),
}


def _time(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, **env}, check=False)  # fmt: skip
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for cmd, env in CASES.values():  # warm the file cache
        _time(cmd, env)
    for _ in range(args.rounds):
        for name, (cmd, env) in CASES.items():
            times[name].append(_time(cmd, env))
    base = statistics.median(times["python -c pass"])
    print(f"median of {args.rounds} rounds, Python {sys.version.split()[0]}")
    print("| command | median (s) | minus `python -c pass` (s) | ratio to `python -c pass` |")
    print("| --- | --- | --- | --- |")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"| {name} | {m:.3f} | {m - base:.3f} | {m / base:.1f}x |")


if __name__ == "__main__":
    main()
