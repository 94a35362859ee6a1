#!/usr/bin/env bash
# Train candidate bundled denoisers side by side on one GPU, then run the GPU tests.
#
# For a short loan of a GPU machine (one command, under 10 minutes). Each candidate is
# `pretrained/train_pretrained_denoiser.py --time-budget $BUDGET` with one architecture;
# all run at once, so each gets a share of the GPU. The model files (with their
# validation PSNR in the metadata) and the logs land in $OUT. Choose among them by
# validation PSNR only (`python pretrained/choose_denoiser.py --base BUNDLED FILES...`,
# here on the CPU), then measure the chosen one on the test pictures
# (`python benchmarks/denoise_psnr.py --model FILE`), never choosing on those.
#
# The candidates (all 2 convs per level, 4 bottleneck convs unless noted) and their CPU
# time on one 512x512 picture relative to E (`python benchmarks/cpu_layout.py --archs`;
# the 10x-faster-than-BM3D target allows about 3.9x E's time):
#   E  24/3/128 (the bundled arch, 1.15M params, 2.3 MB)   1.00x
#   B  24/4/128, 3 bottleneck convs (1.66M, 3.3 MB)        1.00x
#   G  32/3/192 (2.36M, 4.7 MB)                            1.52x
#   H  32/4/192 (3.84M, 7.7 MB)                            1.65x
#
# Or fine-tunings (`--init`) of the bundled file, $INIT, keeping its architecture and
# so its speed; each draws other patches (its own seed), loss weighted by (0.1/sigma)^2:
#   F1 batch 32,  lr 1e-4        F2 batch 64,  lr 2e-4
#   F3 batch 128, lr 3e-4        F4 batch 64,  lr 2e-4, 192 px patches
#   F5 batch 64,  lr 1e-4, 192 px   F6 batch 64,  lr 2e-4, 256 px
#   F7 batch 128, lr 2e-4, 192 px   F8 batch 32,  lr 1e-4, 256 px
#
# The device machine may lack scikit-image pictures: write them here first and carry
# the file along:
#   python pretrained/train_pretrained_denoiser.py --save-pictures .devdata/pictures.npz
#   (device) OUT=... bash pretrained/gpu_denoiser_candidates.sh      # carry .devdata
#
# Environment: PY (python3), DEV (cuda), BUDGET (seconds per run, 400), CANDIDATES
# ("B G H"), PICTURES (.devdata/pictures.npz), INIT (the bundled file), OUT
# (/tmp/denoiser-candidates), TEST_TIMEOUT (90; 0 skips the GPU tests, which run
# alongside the trainings).
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PY:-python3}
DEV=${DEV:-cuda}
BUDGET=${BUDGET:-400}
OUT=${OUT:-/tmp/denoiser-candidates}
PICTURES=${PICTURES:-.devdata/pictures.npz}
INIT=${INIT:-aetool/models/pretrained/denoiser-gray.safetensors}
FT="--init $INIT --weight-power 2"
mkdir -p "$OUT"
T0=$(date +%s)
el() { echo "[$(($(date +%s) - T0)) s] $*"; }

arch() {
  case "$1" in
    E) echo "--base-channels 24 --depth 3 --max-channels 128 --convs-per-level 2 --bottleneck-convs 4" ;;
    B) echo "--base-channels 24 --depth 4 --max-channels 128 --convs-per-level 2 --bottleneck-convs 3" ;;
    G) echo "--base-channels 32 --depth 3 --max-channels 192 --convs-per-level 2 --bottleneck-convs 4" ;;
    H) echo "--base-channels 32 --depth 4 --max-channels 192 --convs-per-level 2 --bottleneck-convs 4" ;;
    F1) echo "$FT --seed 11 --batch-size 32 --lr 1e-4 --warmup 200" ;;
    F2) echo "$FT --seed 12 --batch-size 64 --lr 2e-4 --warmup 300" ;;
    F3) echo "$FT --seed 13 --batch-size 128 --lr 3e-4 --warmup 300" ;;
    F4) echo "$FT --seed 14 --batch-size 64 --lr 2e-4 --warmup 300 --patch-size 192" ;;
    F5) echo "$FT --seed 15 --batch-size 64 --lr 1e-4 --warmup 300 --patch-size 192" ;;
    F6) echo "$FT --seed 16 --batch-size 64 --lr 2e-4 --warmup 300 --patch-size 256" ;;
    F7) echo "$FT --seed 17 --batch-size 128 --lr 2e-4 --warmup 300 --patch-size 192" ;;
    F8) echo "$FT --seed 18 --batch-size 32 --lr 1e-4 --warmup 200 --patch-size 256" ;;
    *) echo "unknown candidate $1" >&2; return 1 ;;
  esac
}

el "start on $(hostname)"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>&1
pics=()
[ -f "$PICTURES" ] && pics=(--pictures "$PICTURES")
pids=()
for c in ${CANDIDATES:-B G H}; do
  args=$(arch "$c") || exit 2
  # shellcheck disable=SC2086
  $PY pretrained/train_pretrained_denoiser.py --device "$DEV" "${pics[@]}" --time-budget "$BUDGET" \
    --log-every 2000 --overwrite -o "$OUT/cand$c.safetensors" $args >"$OUT/cand$c.log" 2>&1 &
  pids+=($!)
done
el "started ${CANDIDATES:-B G H}"
if [ "${TEST_TIMEOUT:-90}" != 0 ]; then
  (timeout "${TEST_TIMEOUT:-90}" $PY -m pytest -q -p no:cacheprovider -m gpu -rs tests \
    >"$OUT/gpu_tests.log" 2>&1; el "pytest -m gpu exit $?") &
fi
wait "${pids[@]}"
el "trainings done"
wait
grep -H "ms per step\|validation PSNR\|deadline\|wrote\|Error" "$OUT"/cand*.log
[ -f "$OUT/gpu_tests.log" ] && tail -4 "$OUT/gpu_tests.log"
el "end"
