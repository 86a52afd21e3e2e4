#!/usr/bin/env bash
# MobileBERT (mobilebert-uncased) fine-tuned on MNLI, the published reproduction's recipe:
# lr 8e-5, 10% linear warmup then cosine decay, AdamW weight decay 0.1, eps 1e-6, max_seq_length 128.
# The cosine decays to 0: PaddleNLP 2.8.1's cosine schedule has no floor.
# Batch size and epochs are not part of that recipe: global batch 32 and 3 epochs here (BATCH=, EPOCHS=).
# TARGETS on a GPU (not measured here): MNLI matched / mismatched accuracy 83.4 / 83.6.
#
#   GLUE_DIR=/path/to/glue_data bash scripts/mobilebert_mnli.sh
#   NPROC=4 GLUE_DIR=... bash scripts/mobilebert_mnli.sh          # data parallel, same global batch
# Needs weights/paddle/mobilebert-uncased (python mobilebert/convert.py). Extra arguments are passed on.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
NPROC=${NPROC:-1}
BATCH=${BATCH:-32}
MODEL=${MODEL:-weights/paddle/mobilebert-uncased}
OUT=${OUT:-runs/mobilebert_mnli}
ARGS=(
  --model_name_or_path "$MODEL" --task_name mnli --data_dir "${GLUE_DIR:-data/glue}/MNLI"
  --output_dir "$OUT" --do_train
  --per_device_train_batch_size $((BATCH / NPROC)) --per_device_eval_batch_size 128
  --learning_rate 8e-5 --num_train_epochs "${EPOCHS:-3}" --max_seq_length 128 --seed 42
  --lr_scheduler_type cosine --warmup_ratio 0.1 --weight_decay 0.1 --adam_epsilon 1e-6
  --save_steps 2000 --logging_steps 100
  "$@"
)
if [ "$NPROC" -gt 1 ]; then
  exec .venv/bin/python -m paddle.distributed.launch --nproc_per_node "$NPROC" mobilebert/run_glue.py "${ARGS[@]}"
fi
exec .venv/bin/python mobilebert/run_glue.py "${ARGS[@]}"
