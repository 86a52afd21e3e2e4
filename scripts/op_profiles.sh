#!/usr/bin/env bash
# Where paddle.inference's time goes: op_profile.py's per-operator profile of each model ($MODELS) on each backend
# ($BACKENDS: paddle.inference fp32, and bf16 where the CPU has it) at each batch size ($BATCHES), one folder per
# profile under $OUT_DIR (default runs/op_profiles), and one table of them all, $OUT_DIR/profiles.md
# (profile_table.py). Options go to every op_profile.py run; about 3 minutes on 2 Zen 5 cores:
#
#   bash scripts/op_profiles.sh                        # BERT-base, OFA width 0.5, SqueezeBERT at batch 1 and 16
#   MODELS=tinybert-4l-312d BATCHES="1 32" bash scripts/op_profiles.sh --runs 10
#   BACKENDS=paddle_ort_fp32 bash scripts/op_profiles.sh   # onnxruntime's profile instead
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python
OUT=${OUT_DIR:-runs/op_profiles}
MODELS=${MODELS:-"bert-base-uncased ofa-bert-base-w0.5 squeezebert-uncased"}
BATCHES=${BATCHES:-"1 16"}
if [ -z "${BACKENDS:-}" ]; then
  BACKENDS=paddle_infer_fp32
  if $PY -m common.hardware --onednn_bf16; then BACKENDS="$BACKENDS paddle_infer_bf16"; else echo "bf16 skipped"; fi
fi
for model in $MODELS; do
  for backend in $BACKENDS; do
    for batch in $BATCHES; do
      $PY op_profile.py --model "$model" --backend "$backend" --batch_size "$batch" \
        --output_dir "$OUT/${model}_${backend}_b$batch" "$@"
    done
  done
done
$PY profile_table.py "$OUT"
