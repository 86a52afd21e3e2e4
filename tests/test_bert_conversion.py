"""BERT (HF torch) -> PaddleNLP conversion of tiny random checkpoints, checked end to end."""
import json
import os
import subprocess
import sys

import common  # noqa: F401  (zlib before paddle)
import pytest
import numpy as np
from common.compare import SAMPLES, compare, padded, sample_batch
from common.convert import convert_checkpoint, convert_main
from common.errors import UserError
from ofa_bert.spec import CHECKPOINTS, SPEC
from tiny_checkpoints import save_tiny, write_vocab

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ATOL = 1e-5
LABELS = {0: "negative", 1: "neutral", 2: "positive"}

CASES = {
    "base": dict(),
    "classification": dict(head="classification", id2label=LABELS, label2id={v: k for k, v in LABELS.items()}),
    "eps1e-7": dict(head="classification", layer_norm_eps=1e-7, hidden_act="gelu", num_labels=2, seed=1),
}


def _check_close(torch_dir, paddle_dir):
    diffs = compare(torch_dir, paddle_dir)
    names = {d.name for d in diffs}
    assert {"sequence_output", "pooled_output"} <= names
    for d in diffs:
        assert d.max_abs <= ATOL, f"{d.name}: max_abs {d.max_abs:.3e}"
    return names


def _paddle_model(paddle_dir):
    import paddlenlp.transformers as ppt

    with open(os.path.join(paddle_dir, "config.json"), encoding="utf-8") as f:
        class_name = json.load(f)["architectures"][0]
    return getattr(ppt, class_name).from_pretrained(paddle_dir)


@pytest.mark.parametrize("case", list(CASES))
def test_convert_and_compare(tmp_path, case):
    kwargs = dict(CASES[case])
    head = kwargs.pop("head", None)
    torch_dir = save_tiny(str(tmp_path / "torch"), "bert", head=head, **kwargs)
    paddle_dir = str(tmp_path / "paddle")
    report = convert_checkpoint(torch_dir, paddle_dir, SPEC, quiet=True)
    assert not report.computed

    names = _check_close(torch_dir, paddle_dir)
    assert ("logits" in names) == (head == "classification")

    import paddle.nn as nn

    model = _paddle_model(paddle_dir)
    eps = kwargs.get("layer_norm_eps", 1e-12)
    norms = [layer for layer in model.sublayers() if isinstance(layer, nn.LayerNorm)]
    assert norms and all(layer._epsilon == eps for layer in norms)
    assert model.config.layer_norm_eps == eps
    if head == "classification":
        assert type(model).__name__ == "BertForSequenceClassification"
        labels = kwargs.get("id2label") or {i: f"LABEL_{i}" for i in range(kwargs["num_labels"])}
        assert model.config.num_labels == len(labels)
        assert {int(k): v for k, v in model.config.id2label.items()} == labels
    else:
        assert type(model).__name__ == "BertModel"


def test_cli_subprocess(tmp_path):
    torch_dir = save_tiny(str(tmp_path / "torch"), "bert", head="classification", id2label=LABELS)
    paddle_dir = str(tmp_path / "paddle")
    run = subprocess.run(
        [sys.executable, os.path.join(REPO, "ofa_bert", "convert.py"), "--torch_dir", torch_dir,
         "--paddle_dir", paddle_dir, "--quiet"],
        capture_output=True, text=True, cwd=REPO,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "tensors mapped" in run.stdout
    _check_close(torch_dir, paddle_dir)


def test_known_checkpoints_mode(tmp_path):
    """No flags: every known name under <weights>/torch/ is converted into <weights>/paddle/."""
    name = CHECKPOINTS[0]
    save_tiny(str(tmp_path / "torch" / name), "bert")
    convert_main(SPEC, CHECKPOINTS, str(tmp_path), argv=["--quiet"])
    assert os.path.isfile(tmp_path / "paddle" / name / "model_state.pdparams")
    assert not os.path.exists(tmp_path / "paddle" / CHECKPOINTS[1])


def test_strict_unknown_tensor(tmp_path):
    """A source tensor neither mapped nor skipped fails the conversion and writes nothing."""
    from safetensors.numpy import load_file, save_file

    torch_dir = save_tiny(str(tmp_path / "torch"), "bert")
    weights = os.path.join(torch_dir, "model.safetensors")
    state = load_file(weights)
    state["encoder.layer.0.attention.self.extra.weight"] = state["pooler.dense.weight"]
    save_file(state, weights)
    with pytest.raises(UserError, match="extra.weight"):
        convert_checkpoint(torch_dir, str(tmp_path / "paddle"), SPEC, quiet=True)
    assert not os.path.exists(tmp_path / "paddle")


def test_unsupported_config(tmp_path):
    torch_dir = save_tiny(str(tmp_path / "torch"), "bert", position_embedding_type="relative_key")
    with pytest.raises(UserError, match="position_embedding_type"):
        convert_checkpoint(torch_dir, str(tmp_path / "paddle"), SPEC, quiet=True)


def test_padded_rows_and_the_export_check_batch(tmp_path):
    """Rows padded to the longest with the pad id, token type 0 and mask 0; the exports' batch holds SAMPLES."""
    from paddlenlp.transformers import BertTokenizer

    rows = [{"input_ids": [2, 5, 3], "token_type_ids": [0, 0, 0]}, {"input_ids": [2, 3], "token_type_ids": [0, 1]}]
    batch = padded(rows, pad_id=9)
    assert {k: v.tolist() for k, v in batch.items()} == {
        "input_ids": [[2, 5, 3], [2, 3, 9]], "token_type_ids": [[0, 0, 0], [0, 1, 0]],
        "attention_mask": [[1, 1, 1], [1, 1, 0]]}
    assert {v.dtype for v in batch.values()} == {np.dtype(np.int64)}
    tokenizer = BertTokenizer(write_vocab(str(tmp_path)))
    batch = sample_batch(tokenizer)
    lengths = batch["attention_mask"].sum(axis=1)
    assert batch["input_ids"].shape == (len(SAMPLES), lengths.max()) and lengths.min() < lengths.max()
    for row, (a, b), n in zip(batch["input_ids"], SAMPLES, lengths):
        assert row[:n].tolist() == (tokenizer(a, b) if b else tokenizer(a))["input_ids"]
        assert set(row[n:]) <= {tokenizer.pad_token_id}
    assert batch["token_type_ids"].max() == 1  # the pairs' second segments
