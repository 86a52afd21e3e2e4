#!/usr/bin/env bash
# MobileBERT on SQuAD v2.0 (recipe in mobilebert_squad.sh; null score threshold -1.5).
# TARGETS on a GPU (not measured here): dev EM 76.6, F1 79.7 (exact, f1 in metrics.json).
#   SQUAD_DIR=/path/to/squad bash scripts/mobilebert_squad_v2.sh     # train-v2.0.json, dev-v2.0.json
#   NPROC=4 SQUAD_DIR=... bash scripts/mobilebert_squad_v2.sh        # data parallel, same global batch
exec bash "$(dirname "$0")/mobilebert_squad.sh" v2 "$@"
