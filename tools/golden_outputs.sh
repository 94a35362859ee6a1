#!/usr/bin/env bash
# Run every command on the demo data and print one sha256 per output (stdout and files).
# Used to prove a refactoring changes no output: run it before and after, then diff.
#   bash tools/golden_outputs.sh OUTDIR > manifest.txt
# Paths printed inside outputs are relative to OUTDIR, so two runs in different
# folders compare equal when the outputs are.  HTML reports embed timings and are
# compared after removing lines that carry wall-clock figures.
set -euo pipefail
AETOOL=${AETOOL:-aetool}
out=$(realpath -m "$1")
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$out"; mkdir -p "$out"; cd "$out"
export PYTHONHASHSEED=0 NO_COLOR=1 AETOOL_MODEL=
run() { local name=$1; shift; "$@" > "stdout-$name" 2> "stderr-$name" || echo "exit $? $name" >> exits; }
run demo $AETOOL demo demo --epochs 2 -q
D=demo
run train $AETOOL train $D/anomaly/train/good -o m.safetensors --epochs 3 --seed 1 -q
run train-dense $AETOOL train $D/anomaly/train/good -o dense.safetensors --arch dense --epochs 2 --seed 1 -q
run train-dn $AETOOL train $D/digits -o dn.safetensors --noise gaussian:0.2 --epochs 1 --seed 2 -q
run score $AETOOL score $D/anomaly/test -m m.safetensors --heatmaps hm --report r.json -q
run score-jsonl $AETOOL score $D/anomaly/test -m m.safetensors --format jsonl --threshold 3sigma -q
run score-ssim $AETOOL score $D/anomaly/test -m m.safetensors --score ssim -q
run score-shard $AETOOL score $D/anomaly/test -m m.safetensors --shard 1/3 -q
run export $AETOOL export $D/anomaly/test -m m.safetensors -q
run export-npy $AETOOL export $D/anomaly/test -m m.safetensors -o codes.npy -q
run interp $AETOOL interpolate $D/anomaly/test/good/$(ls $D/anomaly/test/good | head -1) $D/anomaly/test/1/$(ls $D/anomaly/test/1 | head -1) -m m.safetensors -o interp.png -q
run lmap $AETOOL latent-map $D/anomaly/test -m m.safetensors -o lmap.png -q
run report $AETOOL report $D/anomaly/test -m m.safetensors -o rep.html -q
run info $AETOOL info m.safetensors --json
run info-text $AETOOL info m.safetensors
run denoise $AETOOL denoise $D/noisy den -m dn.safetensors -q
run denoise-pre $AETOOL denoise $D/noisy den2 -q
run denoise-refine $AETOOL denoise $D/noisy den3 --refine on -q
run help $AETOOL --help
for c in train score denoise export interpolate latent-map report info demo; do run "help-$c" $AETOOL $c --help; done
run bad-t $AETOOL score $D/anomaly/test -m m.safetensors -t foo
run missing $AETOOL score nope.png -m m.safetensors
cd "$out"
python3 "$here/normalise_output.py" "$out"
