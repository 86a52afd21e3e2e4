#!/usr/bin/env bash
# The target "paddle's best inference path <= 0.8x torch eager's time" (a speedup >= 1.25) for every
# benchmark model, each pair interleaved run for run (speed_ratio.py): torch_fp32 against each paddle
# fp32 path in $PADDLE_PATHS (default: paddle_infer_fp32 paddle_ort_fp32 paddle_dygraph_kernels), and
# torch_bf16 against paddle_infer_bf16 where the CPU has bf16 for paddle (BF16_PAIRS=0: never), for
# each model in $MODELS (default: all of benchmark.py's). One folder per pair under $OUT_DIR (default
# runs/torch_ratios) and the table of them all, $OUT_DIR/ratios.md, which ends with a per-model table for
# torch_fp32 and one for torch_bf16: each path, the best path per batch size, and the cells that meet 1.25.
# Options go to every speed_ratio.py run:
#
#   bash scripts/torch_ratios.sh
#   PADDLE_PATHS=paddle_infer_fp32 OUT_DIR=runs/torch_b16 bash scripts/torch_ratios.sh --batch_sizes 16
#   PADDLE_PATHS=paddle_dygraph_kernels BF16_PAIRS=0 bash scripts/torch_ratios.sh
#   MODELS="tinybert-4l-312d mobilebert-uncased" bash scripts/torch_ratios.sh
#   bash scripts/torch_ratios.sh --quick              # tiny configs, seconds per pair
#   bash scripts/torch_ratios.sh --skip_done          # continue a stopped run: pairs measured at this commit kept
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python
OUT=${OUT_DIR:-runs/torch_ratios}
MODELS=${MODELS:-$($PY -c "import common; from common.bench_models import MODELS; print(' '.join(MODELS))")}
BF16=0
if [ "${BF16_PAIRS:-1}" != 0 ] && $PY -m common.hardware --onednn_bf16; then
  BF16=1
else
  echo "bf16 pairs skipped"
fi
for model in $MODELS; do
  for path in ${PADDLE_PATHS:-paddle_infer_fp32 paddle_ort_fp32 paddle_dygraph_kernels}; do
    $PY speed_ratio.py --base $model:torch_fp32 --other $model:$path --target 1.25 \
      --output_dir "$OUT/${model}_$path" "$@"
  done
  if [ $BF16 = 1 ]; then
    $PY speed_ratio.py --base $model:torch_bf16 --other $model:paddle_infer_bf16 --target 1.25 \
      --output_dir "$OUT/${model}_paddle_infer_bf16" "$@"
  fi
done
$PY ratio_table.py "$OUT"
