#!/usr/bin/env bash
# The GPU targets of the peers benchmark in one prepared command (about 6-8 minutes on an
# H100): CoLA at MAX_LEN 128 (four peers, then the harness compiled) and the IMDB subset
# at MAX_LEN 512 (epoch time and peak memory), random-init bert-base, batch 32.
#
#   bash benchmarks/gpu_targets.sh                  # on the GPU machine; tables on stdout
#   OUT=/tmp/out bash benchmarks/gpu_targets.sh     # JSON results under $OUT
#   DEVICE=cpu MODEL=bert-tiny COLA_TRAIN=64 IMDB_TRAIN=32 bash benchmarks/gpu_targets.sh  # a dry run
#
# (c) and (d) train in the precision the harness's `auto` picks (benchmarks/peers.py): bf16
# on a GPU with bf16 (and on a CPU that computes it natively), else fp32.
#
# Needs the harness and the `bench` extra importable (pip install -e '.[bench]', or
# wheels on an offline machine) and the data under HARNESS_DATA_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
MODEL=${MODEL:-bert-base}
COLA_TRAIN=${COLA_TRAIN:-0}    # 0: all 8,551 training sentences
IMDB_TRAIN=${IMDB_TRAIN:-2500}
OUT=${OUT:-results/gpu}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
fi
"$PYTHON" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'

peers() { "$PYTHON" benchmarks/peers.py --model "$MODEL" --init random --device "$DEVICE" --batch-size 32 "$@"; }

echo "== CoLA, MAX_LEN 128: (a) tutorial, (b) Trainer run_glue, (c) Trainer dynamic grouped, (d) harness (auto precision)"
peers --train-size "$COLA_TRAIN" --max-len 128 --json "$OUT/cola-128.json"
echo "== CoLA, MAX_LEN 128: (d) harness with torch.compile (compile time reported apart)"
peers --train-size "$COLA_TRAIN" --max-len 128 --peers trainer-fast,harness --compile --json "$OUT/cola-128-compile.json"
echo "== IMDB subset, MAX_LEN 512: epoch time and peak memory"
peers --dataset imdb --train-size "$IMDB_TRAIN" --max-len 512 --peers tutorial,trainer-fast,harness --json "$OUT/imdb-512.json"
