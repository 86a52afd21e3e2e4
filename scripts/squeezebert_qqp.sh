#!/usr/bin/env bash
# Published SqueezeBERT recipe: squeezebert-mnli-headless fine-tuned on QQP.
# batch 16, lr 4e-5, 5 epochs, max_seq_length 128, seed 5, linear decay, no warmup.
# Target on a GPU (not measured here): QQP dev accuracy 89.4.
#
#   GLUE_DIR=/path/to/glue_data bash scripts/squeezebert_qqp.sh          # one device
#   NPROC=4 GLUE_DIR=... bash scripts/squeezebert_qqp.sh                 # data parallel, global batch 16
# Needs weights/paddle/squeezebert-mnli-headless (python squeezebert/convert.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
NPROC=${NPROC:-1}
MODEL=${MODEL:-weights/paddle/squeezebert-mnli-headless}
OUT=${OUT:-runs/squeezebert_qqp}
ARGS=(
  --model_name_or_path "$MODEL" --task_name qqp --data_dir "${GLUE_DIR:-data/glue}/QQP"
  --output_dir "$OUT" --do_train
  --per_device_train_batch_size $((16 / NPROC)) --per_device_eval_batch_size 64
  --learning_rate 4e-5 --num_train_epochs 5 --max_seq_length 128 --seed 5
  --lr_scheduler_type linear --warmup_steps 0 --weight_decay 0.0
  --save_steps 5000 --logging_steps 100
  "$@"
)
if [ "$NPROC" -gt 1 ]; then
  exec .venv/bin/python -m paddle.distributed.launch --nproc_per_node "$NPROC" squeezebert/run_glue.py "${ARGS[@]}"
fi
exec .venv/bin/python squeezebert/run_glue.py "${ARGS[@]}"
