#!/usr/bin/env bash
# The speed benchmark: every model x backend, seq 128, batches 1/16/32, one fine-tuning step each.
# Run it on an otherwise idle machine (about an hour on 2 cores; the script prints its own estimate).
#
#   bash scripts/benchmark.sh                                  # everything -> runs/benchmark/
#   bash scripts/benchmark.sh --seq_len 64 --output_dir runs/benchmark_seq64
#   bash scripts/benchmark.sh --models conv-bert-small --backends paddle_infer_fp32,torch_fp32
#   bash scripts/benchmark.sh --quick                          # tiny configs, seconds
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python benchmark.py "$@"
