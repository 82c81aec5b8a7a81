#!/bin/bash
# GPU check of `nlsam train`: the CUDA code paths (fp32, bf16/fp16 AMP, channels_last on/off,
# torch.compile) on the built-in data, then eight CIFAR-10 ResNet-20 runs side by side on the one
# GPU (fp32, one process each). Results: docs/results/cifar10_resnet20_h200.md.
#
#   bash benchmarks/gpu_check.sh [CIFAR10_ZIP_OR_DIR] [OUT_DIR]
#
# TIME_LIMIT=S stops each CIFAR-10 run after S seconds (unset: no limit). Needs one CUDA GPU;
# run from the repository root with nlsam installed (or PYTHONPATH=src).
set -u
DATA=${1:-cifar10-jpg.zip}
OUT=${2:-gpu_check_out}
mkdir -p "$OUT/runs"
LOG=$OUT/log.txt
export PYTHONUNBUFFERED=1
{ nvidia-smi -L; python3 -c "import torch, torchvision; print(torch.__version__, torchvision.__version__)"; } > "$LOG"

# A: the CUDA paths, one after the other, so their img/s compare
for opts in "--amp off" "--amp bf16" "--amp fp16" "--amp off --no-channels-last" "--amp bf16 --compile"; do
  echo "== $opts" >> "$LOG"
  python3 -m nlsam train --device cuda --epochs 2 $opts --out "$OUT/builtin_${opts//[ -]/_}" >> "$LOG" 2>&1
  echo "rc $?" >> "$LOG"
done
python3 -m nlsam eval "$OUT/builtin___amp_off" --device cuda --json >> "$LOG" 2>&1

# B: CIFAR-10 runs in parallel; a first 1-epoch run builds the decode cache once
python3 -m nlsam train --device cuda --data "$DATA" --epochs 1 --out "$OUT/warm" >> "$LOG" 2>&1
run() {
  local name=$1; shift
  OMP_NUM_THREADS=1 ${TIME_LIMIT:+timeout $TIME_LIMIT} python3 -m nlsam train --device cuda --amp off \
    --data "$DATA" --out "$OUT/runs/$name" "$@" > "$OUT/runs/$name.log" 2>&1 &
}
run r1_plain_s0 -c cifar10_resnet20_fast --attention none
run r1_plain_s1 -c cifar10_resnet20_fast --attention none --seed 1
run r1_nlsam_s0 -c cifar10_resnet20_fast
run r1_nlsam_s1 -c cifar10_resnet20_fast --seed 1
run linear_plain_s0 -c cifar10_resnet20_linear
run r1_plain_b256 -c cifar10_resnet20_fast --attention none --batch-size 256 --lr 0.4
run r1_plain_60ep -c cifar10_resnet20_fast --attention none --epochs 60
run r1_plain_90ep -c cifar10_resnet20_fast --attention none --epochs 90
wait
echo "done: $LOG and $OUT/runs/*/metrics.jsonl"
