#!/usr/bin/env bash
# OFA distillation step time (ofa_bert/time_distill.py): every width of the recipe (1, 5/6, 2/3, 1/2) on one
# batch of 32 x 128 tokens and an AdamW step, official configs with random weights, for TinyBERT 4L-312D and
# BERT-base, with PaddleSlim's distillation loop (the teacher per width) and ours (once per batch), each on
# paddle's kernels and on this repo's (--train_kernels). One folder per run under $OUT_DIR (default
# runs/ofa_distill_speed) and a table of them all, $OUT_DIR/results.md; about 13 minutes on 2 Zen 5 cores.
# Options go to every run:
#
#   bash scripts/ofa_distill_speed.sh                  # 1 warm-up + 3 timed steps each
#   bash scripts/ofa_distill_speed.sh --quick --seq_len 16 --steps 1   # tiny configs, seconds
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python
OUT=${OUT_DIR:-runs/ofa_distill_speed}
for model in tinybert-4l-312d bert-base-uncased; do
  for distill in paddleslim ours; do
    for kernels in false true; do
      $PY ofa_bert/time_distill.py --model $model --distill $distill --train_kernels $kernels \
        --output_dir "$OUT/${model}_${distill}_kernels_$kernels" "$@"
    done
  done
done
$PY ofa_bert/time_distill.py --table "$OUT"
