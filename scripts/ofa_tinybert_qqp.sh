#!/usr/bin/env bash
# OFA on TinyBERT, QQP: a general TinyBERT converted to paddle, fine-tuned on QQP as the
# teacher, then the OFA-BERT recipe of scripts/ofa_bert_glue.sh (widths 1.0 5/6 2/3 1/2, batch 32,
# lr 2e-5, 6 epochs, max_seq_length 128) and export of the 2/3-width sub-model.
# TARGET on a GPU, from the published OFA table (target, NOT measured here):
#   QQP dev accuracy: TinyBERT teacher 90.47 -> OFA 90.34
# The teacher fine-tuning (batch 32, lr TEACHER_LR=5e-5, 3 epochs) is our choice: the table does
# not give it.
#
#   GLUE_DIR=/path/to/glue_data bash scripts/ofa_tinybert_qqp.sh
# Needs weights/torch/$CKPT (huawei-noah/TinyBERT_General_4L_312D, or CKPT=tinybert-6l-768d for
# TinyBERT_General_6L_768D) with config.json, pytorch_model.bin and vocab.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
CKPT=${CKPT:-tinybert-4l-312d}
OUT=${OUT:-runs/ofa_${CKPT}_qqp}
if [ ! -f "weights/paddle/$CKPT/model_state.pdparams" ]; then
  .venv/bin/python ofa_bert/convert.py --torch_dir "weights/torch/$CKPT" --paddle_dir "weights/paddle/$CKPT" --quiet
fi
MODEL="weights/paddle/$CKPT" OUT="$OUT" TEACHER_LR="${TEACHER_LR:-5e-5}" TEACHER_EPOCHS=3 \
  bash scripts/ofa_bert_glue.sh QQP
