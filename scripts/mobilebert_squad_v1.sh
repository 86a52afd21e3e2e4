#!/usr/bin/env bash
# MobileBERT on SQuAD v1.1 (recipe in mobilebert_squad.sh).
# TARGETS on a GPU (not measured here): dev EM 83.1, F1 90.1 (exact_match, f1 in metrics.json).
#   SQUAD_DIR=/path/to/squad bash scripts/mobilebert_squad_v1.sh     # train-v1.1.json, dev-v1.1.json
#   NPROC=4 SQUAD_DIR=... bash scripts/mobilebert_squad_v1.sh        # data parallel, same global batch
exec bash "$(dirname "$0")/mobilebert_squad.sh" v1 "$@"
