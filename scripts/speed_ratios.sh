#!/usr/bin/env bash
# The benchmark's ratio targets, each pair interleaved run for run (speed_ratio.py): SqueezeBERT over
# BERT-base and OFA width 0.5 over width 1.0 (BERT-base) on paddle.inference, on onnxruntime and in
# dygraph with common/train_kernels.py's layers, and bf16 over fp32 in paddle.inference where the CPU
# has bf16, each with its target. One folder per pair
# under $OUT_DIR (default runs/speed_ratios) and a table of them all, $OUT_DIR/ratios.md
# (ratio_table.py); about 20 minutes on 2 Zen 3 cores. Options go to every speed_ratio.py run:
#
#   bash scripts/speed_ratios.sh                      # batches 1,16,32, 7 rounds
#   OUT_DIR=runs/ratios_b16 bash scripts/speed_ratios.sh --batch_sizes 16 --rounds 11
#   bash scripts/speed_ratios.sh --quick              # tiny configs, seconds
#   bash scripts/speed_ratios.sh --skip_done          # continue a stopped run: pairs measured at this commit kept
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python
OUT=${OUT_DIR:-runs/speed_ratios}
for path in paddle_infer_fp32 paddle_ort_fp32 paddle_dygraph_kernels; do
  $PY speed_ratio.py --base bert-base-uncased:$path --other squeezebert-uncased:$path \
    --target 2.5 --output_dir "$OUT/squeezebert_$path" "$@"
  $PY speed_ratio.py --base bert-base-uncased:$path --other ofa-bert-base-w0.5:$path \
    --target 1.82 --output_dir "$OUT/ofa_w0.5_$path" "$@"
done
if $PY -m common.hardware --onednn_bf16; then
  for model in bert-base-uncased squeezebert-uncased; do
    $PY speed_ratio.py --base $model:paddle_infer_fp32 --other $model:paddle_infer_bf16 \
      --target 3 --output_dir "$OUT/bf16_$model" "$@"
  done
else
  echo "bf16 pairs skipped"
fi
$PY ratio_table.py "$OUT"
