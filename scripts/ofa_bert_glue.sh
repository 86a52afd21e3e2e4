#!/usr/bin/env bash
# OFA-BERT on one GLUE task: PaddleSlim once-for-all width training with DynaBERT distillation.
#   1. teacher: bert-base-uncased fine-tuned with ofa_bert/run_glue.py
#      (batch 32, lr 2e-5, 3 epochs, max_seq_length 128, seed 42)
#   2. OFA: ofa_bert/run_glue_ofa.py, widths 1.0 5/6 2/3 1/2, batch 32, lr 2e-5, 6 epochs,
#      max_seq_length 128, head/neuron importance on 300 training batches, seed 42
#   3. export of the 2/3-width sub-model (about 81M of 110M parameters), static model checked
#      against the dynamic one through paddle.inference
# TARGETS on a GPU, from the published OFA-BERT table (targets, NOT measured here):
#   MNLI dev accuracy matched/mismatched: BERT-base teacher 84.42/84.83 -> OFA 84.69/85.24
#
#   GLUE_DIR=/path/to/glue_data bash scripts/ofa_bert_glue.sh MNLI
# Needs weights/paddle/bert-base-uncased (python ofa_bert/convert.py). TASK is a GLUE folder
# name (MNLI, QQP, SST-2, ...) or a task name; MODEL, OUT, TEACHER_LR and TEACHER_EPOCHS may be set.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
TASK=${1:?usage: $0 TASK (e.g. MNLI)}
case "${TASK,,}" in
  sst2 | sst-2) DIR=SST-2 ;; stsb | sts-b) DIR=STS-B ;; cola) DIR=CoLA ;; *) DIR=${TASK^^} ;;
esac
DATA=${DATA_DIR:-${GLUE_DIR:-data/glue}/$DIR}
OUT=${OUT:-runs/ofa_bert_${TASK,,}}

.venv/bin/python ofa_bert/run_glue.py \
  --model_name_or_path "${MODEL:-weights/paddle/bert-base-uncased}" --task_name "$TASK" --data_dir "$DATA" \
  --output_dir "$OUT/teacher" --do_train \
  --per_device_train_batch_size 32 --per_device_eval_batch_size 64 --learning_rate "${TEACHER_LR:-2e-5}" \
  --num_train_epochs "${TEACHER_EPOCHS:-3}" --max_seq_length 128 --seed 42 \
  --save_steps 2000 --logging_steps 100

.venv/bin/python ofa_bert/run_glue_ofa.py \
  --model_name_or_path "$OUT/teacher" --task_name "$TASK" --data_dir "$DATA" --output_dir "$OUT/ofa" \
  --width_mult_list 1.0 0.8333333333333334 0.6666666666666666 0.5 \
  --batch_size 32 --learning_rate 2e-5 --num_train_epochs 6 --max_seq_length 128 \
  --importance_batches 300 --logging_steps 100 --seed 42

.venv/bin/python ofa_bert/export_model.py --model_dir "$OUT/ofa" --width_mult 0.6666666666666666 \
  --output_dir "$OUT/export_w0.667"
