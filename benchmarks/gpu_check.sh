#!/usr/bin/env bash
# Device check for a machine with an NVIDIA GPU, in one go (steps 1-3 took < 8 minutes on
# one H100; step 4 runs under its own timeout, E2E_TIMEOUT).
#
#   bash benchmarks/gpu_check.sh [--device cpu] [FIGURES_FILE]   # default: $OUT/gpu_figures.txt,
#                                                                # else ./gpu_figures.txt
#
# 1. Python: $PY if set; else .venv/bin/python when it already imports aetool and
#    torch; else `python3 -m venv .venv && .venv/bin/pip install -e '.[dev]'` from
#    this tree (nothing else is installed; torch comes from the local wheel cache).
# 2. `pytest -m gpu` (the CUDA tests; they skip without a GPU).
# 3. benchmarks/gpu_bench.py: training (AMP x torch.compile), scoring and
#    denoising throughput on CUDA.
# 4. benchmarks/end_to_end.py: `aetool denoise` of 1,000 PNGs at 256x256 with and
#    without the refinement, and `aetool score` of 10,000 28x28 PNGs, end to end in a
#    fresh process (start-up included) beside the model-only figure of each.
# Every figure, the GPU name and the test summary go to FIGURES_FILE.
#
# On a CPU: `bash benchmarks/gpu_check.sh --device cpu /tmp/figs.txt` runs the same
# steps with smaller counts (gpu_bench --quick; end to end on DENOISE_IMAGES=100 and
# SCORE_IMAGES=2000 images unless set).
#
# On a machine without internet whose python3 already has the dependencies (torch,
# click, rich, ...): PY=python3 PYTHONPATH=$PWD bash benchmarks/gpu_check.sh
# Timeouts (seconds): TEST_TIMEOUT (default 200) for the tests, BENCH_TIMEOUT (270),
# E2E_TIMEOUT (270) for step 4, DECODE_TIMEOUT (60) for step 5 (decode_pool.py).
# Without a GPU the gpu tests report as skipped.
set -uo pipefail
cd "$(dirname "$0")/.."

DEVICE="${DEVICE:-cuda}"
if [[ "${1:-}" == "--device" ]]; then
    DEVICE="$2"
    shift 2
fi
FIG="${1:-${OUT:-.}/gpu_figures.txt}"
QUICK="${QUICK:-}"
if [[ "$DEVICE" == "cpu" ]]; then
    QUICK="${QUICK:-1}"
    DENOISE_IMAGES="${DENOISE_IMAGES:-100}"
    SCORE_IMAGES="${SCORE_IMAGES:-2000}"
fi
mkdir -p "$(dirname "$FIG")"
: >"$FIG"
log() { echo "$*" | tee -a "$FIG"; }
t_start=$(date +%s)

log "# aetool gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
log "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$FIG"
else
    log "nvidia-smi: not found"
fi

# --- 1. the project in a virtual environment --------------------------------
if [[ -n "${PY:-}" ]]; then
    :
elif [[ -x .venv/bin/python ]] && .venv/bin/python -c "import aetool, torch" 2>/dev/null; then
    PY=.venv/bin/python
else
    log "installing: python3 -m venv .venv && .venv/bin/pip install -e '.[dev]'"
    python3 -m venv .venv
    if ! .venv/bin/pip install -q -e '.[dev]' 2>&1 | tail -5; then :; fi
    if ! .venv/bin/python -c "import aetool, torch, pytest" 2>/dev/null; then
        log "retrying with --no-build-isolation"
        .venv/bin/pip install -q --no-build-isolation -e '.[dev]' 2>&1 | tail -5
    fi
    PY=.venv/bin/python
fi
if ! "$PY" -c "import aetool, torch" 2>>"$FIG"; then
    log "FAILED: cannot import aetool and torch with $PY"
    exit 1
fi
"$PY" - <<'EOF' 2>&1 | tee -a "$FIG"
import torch
print(f"torch {torch.__version__}, CUDA available {torch.cuda.is_available()}, "
      f"{torch.cuda.device_count()} device(s)")
EOF
log "setup: $(($(date +%s) - t_start)) s"

# --- 2. CUDA tests ------------------------------------------------------------
log ""
log "## pytest -m gpu"
timeout "${TEST_TIMEOUT:-200}" "$PY" -m pytest -m gpu -q -p no:cacheprovider -rs tests 2>&1 | tail -25 | tee -a "$FIG"
log "pytest exit: ${PIPESTATUS[0]}; $(($(date +%s) - t_start)) s so far"

# --- 3. benchmarks ------------------------------------------------------------
log ""
BENCH=("$PY" benchmarks/gpu_bench.py --device "$DEVICE" --out "$FIG")
[[ -n "$QUICK" ]] && BENCH+=(--quick)
timeout "${BENCH_TIMEOUT:-270}" "${BENCH[@]}"
rc=$?
[[ $rc -ne 0 ]] && log "gpu_bench exit: $rc (124: timed out; the figures so far are above)"

# --- 4. end to end beside model only -----------------------------------------
timeout "${E2E_TIMEOUT:-270}" "$PY" benchmarks/end_to_end.py --device "$DEVICE" --out "$FIG" \
    --denoise-images "${DENOISE_IMAGES:-1000}" --score-images "${SCORE_IMAGES:-10000}"
rc=$?
[[ $rc -ne 0 ]] && log "end_to_end exit: $rc (124: timed out; the figures so far are above)"

# --- 5. decoding: threads against worker processes on this machine's cores ----
log ""
log "## decode_pool"
timeout "${DECODE_TIMEOUT:-60}" "$PY" benchmarks/decode_pool.py --rounds 2 --files "${SCORE_IMAGES:-10000}" 2>&1 | tee -a "$FIG"
log ""
log "total: $(($(date +%s) - t_start)) s"
