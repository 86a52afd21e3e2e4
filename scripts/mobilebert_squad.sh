#!/usr/bin/env bash
# MobileBERT (mobilebert-uncased) fine-tuned on SQuAD, the published reproduction's recipe:
# lr 8e-5, 10% linear warmup then cosine decay, AdamW weight decay 0.1, eps 1e-6, beta2 0.98,
# max_seq_length 384, doc_stride 128; v2.0 adds null_score_diff_threshold -1.5. The cosine decays to 0:
# PaddleNLP 2.8.1's cosine schedule has no floor (its --lr_end only applies to polynomial).
# Batch size and epochs are not part of that recipe: global batch 32 and 5 epochs here (BATCH=, EPOCHS=).
# Called by mobilebert_squad_v1.sh and mobilebert_squad_v2.sh:  bash scripts/mobilebert_squad.sh v1|v2 [ARGS...]
# Needs weights/paddle/mobilebert-uncased (python mobilebert/convert.py). Extra arguments are passed on.
set -euo pipefail
VERSION=${1:-}
case "$VERSION" in
  v1) FILES=(--train_file "${SQUAD_DIR:-data/squad}/train-v1.1.json" --predict_file "${SQUAD_DIR:-data/squad}/dev-v1.1.json") ;;
  v2) FILES=(--train_file "${SQUAD_DIR:-data/squad}/train-v2.0.json" --predict_file "${SQUAD_DIR:-data/squad}/dev-v2.0.json"
             --version_2_with_negative --null_score_diff_threshold -1.5) ;;
  *) echo "error: unknown SQuAD version '$VERSION'; usage: $0 v1|v2 [ARGS...]" >&2; exit 2 ;;
esac
shift
cd "$(dirname "$0")/.."
bash scripts/setup.sh
NPROC=${NPROC:-1}
BATCH=${BATCH:-32}
ARGS=(
  --model_name_or_path "${MODEL:-weights/paddle/mobilebert-uncased}" --output_dir "${OUT:-runs/mobilebert_squad_$VERSION}"
  --do_train "${FILES[@]}"
  --max_seq_length 384 --doc_stride 128 --max_query_length 64 --n_best_size 20 --max_answer_length 30
  --per_device_train_batch_size $((BATCH / NPROC)) --per_device_eval_batch_size 64
  --learning_rate 8e-5 --num_train_epochs "${EPOCHS:-5}" --seed 42
  --lr_scheduler_type cosine --warmup_ratio 0.1 --weight_decay 0.1 --adam_epsilon 1e-6 --adam_beta2 0.98
  --save_steps 2000 --logging_steps 100
  "$@"
)
if [ "$NPROC" -gt 1 ]; then
  exec .venv/bin/python -m paddle.distributed.launch --nproc_per_node "$NPROC" mobilebert/run_squad.py "${ARGS[@]}"
fi
exec .venv/bin/python mobilebert/run_squad.py "${ARGS[@]}"
