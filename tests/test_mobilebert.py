"""MobileBERT (HF torch) -> PaddleNLP: conversion, the fixes in mobilebert/fixes.py, relative alignment."""
import json
import os
import re
import shutil
import subprocess
import sys

import common  # noqa: F401  (zlib before paddle)
import mobilebert.fixes as fixes
import numpy as np
import pytest
import torch
import transformers
from paddlenlp.transformers.mobilebert import modeling as paddlenlp_mobilebert
from safetensors.numpy import load_file, save_file

from common.compare import compare_main, diff_outputs, make_batch, run_both, run_paddle, run_torch, token_rel
from common.convert import convert_checkpoint
from common.errors import UserError
from conftest import REPO
from mobilebert.spec import SPEC
from tiny_checkpoints import VOCAB, save_tiny, write_vocab

RTOL = 1e-4
# embedding_size != hidden_size, trigram input, 2 FFNs everywhere; the cases cover both norms and
# every attention-input layout (bottleneck q/k shared, bottleneck q/k/v, plain hidden states, none).
TINY = dict(hidden_size=32, embedding_size=16, intra_bottleneck_size=16, intermediate_size=32,
            num_attention_heads=2, num_feedforward_networks=2, trigram_input=True)
CASES = {
    # The published layout, with huge activations (see _huge): PaddleNLP's mask and [PAD] row matter.
    "no_norm": dict(normalization_type="no_norm", huge=True),
    "layer_norm": dict(normalization_type="layer_norm", use_bottleneck_attention=True,
                       key_query_shared_bottleneck=False, layer_norm_eps=1e-7),
    "plain_attention": dict(normalization_type="no_norm", key_query_shared_bottleneck=False, intra_bottleneck_size=32,
                            head="classification", num_labels=3, huge=True),
    "no_bottleneck": dict(normalization_type="layer_norm", use_bottleneck=False, key_query_shared_bottleneck=False,
                          hidden_act="gelu", head="classification", num_labels=2),
}
OUTLIERS = [3, 17]  # residual dims that carry ~1e5 on [CLS], as real MobileBERT's carry ~1e7


def _edit(torch_dir, edit):
    path = os.path.join(torch_dir, "model.safetensors")
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def _randomize(tensors, huge):
    """What random init leaves out: nonzero [PAD] row (TF-converted checkpoints have one), random
    NoNorm biases; with ``huge``: [CLS] outliers that the layers do not read (so float32 stays well
    conditioned) and attention scores far beyond PaddleNLP's -10000 mask."""
    rng = np.random.default_rng(0)
    for name, value in tensors.items():
        short = name.removeprefix("mobilebert.")
        if short == "embeddings.word_embeddings.weight":
            value[0] = rng.normal(0, 5, value.shape[1])
        elif short.endswith("LayerNorm.bias"):
            tensors[name] = rng.normal(0, 0.5, value.shape).astype(np.float32)
        elif not huge:
            continue
        elif short == "embeddings.position_embeddings.weight":
            value[0, OUTLIERS] = [3e5, -2e5]
        elif re.fullmatch(r"encoder\.layer\.\d+\.(bottleneck\.(input|attention)\.dense|attention\.self\.(query|key|value))\.weight", short) \
                and value.shape[1] == TINY["hidden_size"]:
            value[:, OUTLIERS] = 0
        if huge and short.endswith("bottleneck.attention.LayerNorm.weight"):
            tensors[name] = value * 1000
        if huge and re.search(r"attention\.self\.(query|key)\.weight$", short):
            tensors[name] = value * 100
        if huge and re.search(r"attention\.self\.value\.weight$", short):
            tensors[name] = value * 10


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """{case: (torch_dir, paddle_dir)} for the tiny converted MobileBERTs of :data:`CASES`."""
    root = tmp_path_factory.mktemp("mobilebert")
    out = {}
    for i, (name, case) in enumerate(CASES.items()):
        case = dict(case)
        head, huge = case.pop("head", None), case.pop("huge", False)
        torch_dir = save_tiny(str(root / f"{name}-torch"), "mobilebert", head=head, seed=i, **{**TINY, **case})
        _edit(torch_dir, lambda t: _randomize(t, huge))
        paddle_dir = str(root / f"{name}-paddle")
        convert_checkpoint(torch_dir, paddle_dir, SPEC, quiet=True)
        out[name] = (torch_dir, paddle_dir)
    return out


def _worst_rel(torch_dir, paddle_dir):
    """(max rel over every real token, over the [CLS] rows, over the other outputs) and the outputs."""
    batch, ref, got = run_both(torch_dir, paddle_dir)
    rel = token_rel(batch, ref, got)
    others = {d.name: d.max_rel for d in diff_outputs(batch, ref, got) if d.name != "sequence_output"}
    return float(np.nanmax(rel)), float(rel[:, 0].max()), others, ref


@pytest.mark.parametrize("name", list(CASES))
def test_converted_model_matches_torch_on_every_token(dirs, name):
    torch_dir, paddle_dir = dirs[name]
    worst, cls, others, ref = _worst_rel(torch_dir, paddle_dir)
    assert worst <= RTOL and cls <= RTOL, f"max rel {worst:.3e}, [CLS] {cls:.3e}"
    head = CASES[name].get("head") == "classification"
    assert set(others) == {"pooled_output"} | ({"logits"} if head else set())
    assert all(v <= RTOL for v in others.values()), others
    if CASES[name].get("huge"):
        assert np.abs(ref["sequence_output"][:, 0]).max() > 1e5  # the point of a relative criterion
    with open(os.path.join(paddle_dir, "config.json")) as f:
        config = json.load(f)
    assert config["model_type"] == "mobilebert" and config["classifier_activation"] is True
    assert config["architectures"] == ["MobileBertForSequenceClassification" if head else "MobileBertModel"]


def test_paddlenlp_without_the_fixes_differs(dirs, monkeypatch):
    """Each fix is needed: PaddleNLP's -10000 mask and its zero [PAD] lookup break the alignment."""
    torch_dir, paddle_dir = dirs["no_norm"]
    batch, ref, _ = run_both(torch_dir, paddle_dir)

    def worst():
        return float(np.nanmax(token_rel(batch, ref, run_paddle(paddle_dir, batch, False))))

    with monkeypatch.context() as m:
        m.setattr(paddlenlp_mobilebert.MobileBertModel, "forward", fixes.PADDLENLP["MobileBertModel.forward"])
        assert worst() > 10 * RTOL
    with monkeypatch.context() as m:
        m.setattr(paddlenlp_mobilebert.MobileBertEmbeddings, "__init__", fixes.PADDLENLP["MobileBertEmbeddings.__init__"])
        assert worst() > 10 * RTOL
    assert worst() <= RTOL


def test_layer_norm_epsilons_follow_hf(dirs):
    """HF gives config.layer_norm_eps to some LayerNorms and torch's 1e-5 to the others; so must paddle."""
    import paddle.nn as nn

    from common.convert import _rename

    torch_dir, paddle_dir = dirs["layer_norm"]
    hf = transformers.AutoModel.from_pretrained(torch_dir)
    hf_eps = {_rename(n + ".", SPEC.renames): m.eps for n, m in hf.named_modules() if isinstance(m, torch.nn.LayerNorm)}
    model = paddlenlp_mobilebert.MobileBertModel.from_pretrained(paddle_dir)
    pd_eps = {n + ".": m._epsilon for n, m in model.named_sublayers() if isinstance(m, nn.LayerNorm)}
    assert pd_eps == hf_eps
    assert set(hf_eps.values()) == {1e-5, 1e-7}


def test_parameters_follow_the_default_dtype():
    """PaddleNLP's NoNorm was float32 whatever the model's dtype."""
    import paddle

    from paddlenlp.transformers import MobileBertConfig, MobileBertModel

    config = MobileBertConfig(vocab_size=len(VOCAB), num_hidden_layers=1, **TINY)
    old = paddle.get_default_dtype()
    paddle.set_default_dtype("float64")  # float16: no CPU initializers
    try:
        model = MobileBertModel(config)
    finally:
        paddle.set_default_dtype(old)
    dtypes = {str(p.dtype) for p in model.parameters()}
    assert dtypes == {"paddle.float64"}


def test_pretraining_checkpoint_drops_heads_and_keeps_hf_pooler(tmp_path):
    """google/mobilebert-uncased: MobileBertForPreTraining, its config.json silent on classifier_activation."""
    config = transformers.MobileBertConfig(vocab_size=len(VOCAB), num_hidden_layers=2, max_position_embeddings=64, **TINY)
    torch.manual_seed(0)
    torch_dir = str(tmp_path / "torch")
    transformers.MobileBertForPreTraining(config).save_pretrained(torch_dir)
    transformers.BertTokenizer(vocab_file=write_vocab(torch_dir)).save_pretrained(torch_dir)
    with open(os.path.join(torch_dir, "config.json")) as f:
        saved = json.load(f)
    del saved["classifier_activation"]  # HF's default (True: dense + tanh pooler) applies
    with open(os.path.join(torch_dir, "config.json"), "w") as f:
        json.dump(saved, f)
    source = load_file(os.path.join(torch_dir, "model.safetensors"))

    report = convert_checkpoint(torch_dir, str(tmp_path / "paddle"), SPEC, quiet=True)
    assert report.skipped == sorted(k for k in source if k.startswith("cls."))
    assert len(report.skipped) == 8
    assert report.computed == ["embeddings.position_ids"]
    transposed = {tgt for _, tgt, t, _ in report.mapped if t}
    assert "pooler.dense.weight" in transposed and "embeddings.embedding_transformation.weight" in transposed
    # 1-D NoNorm parameters and embedding tables keep their layout
    assert not any(t for _, tgt, t, _ in report.mapped if "layer_norm" in tgt or tgt.endswith("embeddings.weight"))
    worst, cls, others, _ = _worst_rel(torch_dir, str(tmp_path / "paddle"))
    assert max(worst, cls, *others.values()) <= RTOL


def _copy(torch_dir, dest):
    shutil.copytree(torch_dir, dest)
    return str(dest)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.pop("encoder.layer.0.ffn.0.output.LayerNorm.bias"),
         "target parameters not filled: encoder.layers.0.ffn.0.output.layer_norm.bias"),
        (lambda t: t.pop("encoder.layer.1.bottleneck.attention.dense.weight"),
         "target parameters not filled: encoder.layers.1.bottleneck.attention.dense.weight"),
        (lambda t: t.update({"encoder.layer.0.attention.self.surprise": np.zeros(3, np.float32)}),
         "unexpected source tensors (neither mapped nor skipped): encoder.layer.0.attention.self.surprise"),
    ],
)
def test_strict_conversion_errors_and_writes_nothing(dirs, tmp_path, edit, message):
    torch_dir = _copy(dirs["no_norm"][0], tmp_path / "torch")
    _edit(torch_dir, edit)
    out = tmp_path / "paddle"
    with pytest.raises(UserError) as err:
        convert_checkpoint(torch_dir, str(out), SPEC, quiet=True)
    assert str(err.value).startswith(f"{torch_dir}: conversion failed")
    assert message in str(err.value)
    assert not out.exists()


def test_unsupported_activation_is_refused(dirs, tmp_path):
    torch_dir = _copy(dirs["no_norm"][0], tmp_path / "torch")
    path = os.path.join(torch_dir, "config.json")
    with open(path) as f:
        config = json.load(f)
    with open(path, "w") as f:
        json.dump({**config, "hidden_act": "gelu_pytorch_tanh"}, f)
    with pytest.raises(UserError) as err:
        convert_checkpoint(torch_dir, str(tmp_path / "paddle"), SPEC, quiet=True)
    assert "hidden_act='gelu_pytorch_tanh'" in str(err.value)


def test_compare_cli_relative_criterion(dirs, capsys):
    torch_dir, paddle_dir = dirs["plain_attention"]
    argv = ["--torch_dir", torch_dir, "--paddle_dir", paddle_dir]
    assert compare_main("x", argv, criterion="rel") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len([x for x in lines if x.startswith("max_abs_diff=") and "mean_abs_diff=" in x]) == 1
    rel = [x for x in lines if x.startswith("max_rel_diff=")]
    assert len(rel) == 1 and "cls_max_rel_diff=" in rel[0]
    assert float(rel[0].split()[0].split("=")[1]) <= RTOL
    assert lines[-1] == "OK: within rtol 1.0e-04 on every token"
    assert compare_main("x", argv + ["--rtol", "0"], criterion="rel") == 1
    with pytest.raises(SystemExit):
        compare_main("x", argv + ["--atol", "1"], criterion="rel")


def test_compare_script(dirs):
    """The script applies the fixes itself: without them a layer_norm MobileBERT cannot even be built."""
    torch_dir, paddle_dir = dirs["layer_norm"]
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "mobilebert", "compare.py"), "--torch_dir", torch_dir,
         "--paddle_dir", paddle_dir],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "max_rel_diff=" in proc.stdout and proc.stdout.strip().endswith("OK: within rtol 1.0e-04 on every token")


def _scatter_norms(tensors):
    """NoNorm scales and shifts away from 1 and 0, so that a wrong fold or residual add shows."""
    rng = np.random.default_rng(1)
    for name in [n for n in tensors if "LayerNorm" in n]:
        mean = 1.0 if name.endswith("weight") else 0.0
        tensors[name] = rng.normal(mean, 0.5, tensors[name].shape).astype(np.float32)


def test_export_folds_nonorm_into_the_denses_and_residual_adds(tmp_path, monkeypatch):
    """For this repo's predictor a bottleneck's dense + NoNorm is one fc, and NoNorm(dense(x) + r) an fc and one
    ct_add_scale_shift_ over its output (ct_add_scale_shift_bf16 in bf16, fed bf16 by the fc); HF's logits on a
    padded batch with both token types, with and without oneDNN. The portable export keeps paddle's NoNorm."""
    from common.hardware import cpu_flags, onednn_bf16_missing
    from common.inference import (Predictor, PredictorOptions, _ops, _program, export_static, op_counts,
                                  optimized_op_counts)
    from common.models import load_model_dir

    torch_dir = save_tiny(str(tmp_path / "torch"), "mobilebert", head="classification", seed=5, **TINY)
    _edit(torch_dir, _scatter_norms)
    paddle_dir = str(tmp_path / "paddle")
    convert_checkpoint(torch_dir, paddle_dir, SPEC, quiet=True)
    batch = make_batch(torch_dir, paddle_dir)  # the comparison's padded batch, both token types
    assert (batch["attention_mask"] == 0).any() and (batch["token_type_ids"] == 1).any()
    torch_out = run_torch(torch_dir, batch, has_head=True)
    ref = torch_out["logits"]
    layers, ffns = 2, TINY["num_feedforward_networks"]
    # NoNorms after a dense and a residual add: the attention output, one per extra FFN, the output and its
    # bottleneck; 2 bottleneck inputs per layer (a dense, no residual); the embeddings' one
    residual, bottlenecks = layers * (ffns + 2), 2 * layers
    optimized, prefixes = {}, {}
    for custom_ops in (True, False):
        prefix = export_static(load_model_dir(paddle_dir), str(tmp_path / f"static{custom_ops}"), custom_ops=custom_ops)
        prefixes[custom_ops] = prefix
        # folded: W * g and b * g for each bottleneck's dense; portable: x * g per NoNorm
        written = 2 * bottlenecks + 1 if custom_ops else residual + bottlenecks + 1
        assert op_counts(prefix)["elementwise_mul"] == written
        assert op_counts(prefix)["ct_add_scale_shift_"] == (residual if custom_ops else 0)
        for onednn in (True, False):
            got = Predictor(prefix, PredictorOptions(threads=2, onednn=onednn))(batch)[0]
            np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
        # paddle's fcs kept (fp32 runs each feed-forward network as one operator: tests/test_fused_blocks.py)
        optimized[custom_ops] = optimized_op_counts(prefix, PredictorOptions(threads=2, fuse_blocks=False),
                                                    str(tmp_path / f"optimized{custom_ops}"))
    # every token, not only what reaches the logits: no buffer written in place is read as another
    model = load_model_dir(paddle_dir)
    base = export_static(getattr(model, model.base_model_prefix), str(tmp_path / "base"))
    sequence = Predictor(base, PredictorOptions(threads=2))(batch)[0]
    np.testing.assert_allclose(sequence, torch_out["sequence_output"], rtol=1e-4, atol=1e-5)
    # linears per layer: 2 bottleneck inputs, q, k, v, attention output, 2 per FFN, output bottleneck;
    # then the embedding projection, the pooler and the classifier
    assert optimized[True]["fc"] == optimized[False]["fc"] == layers * (7 + 2 * ffns) + 3
    # NoNorm's multiply and add gone from each bottleneck, and with the residual add from the others
    assert optimized[True]["ct_add_scale_shift_"] == residual
    assert optimized[False]["elementwise_mul"] - optimized[True]["elementwise_mul"] == residual + bottlenecks
    assert optimized[False]["elementwise_add"] - optimized[True]["elementwise_add"] == 2 * residual + bottlenecks
    if onednn_bf16_missing() or "avx512_bf16" not in cpu_flags():
        return
    options = PredictorOptions(threads=2, precision="bf16")
    bf16 = optimized_op_counts(prefixes[True], options, str(tmp_path / "bf16"))
    assert bf16["ct_add_scale_shift_bf16"] == residual and not bf16["ct_add_scale_shift_"]
    desc = _program(str(tmp_path / "bf16" / "_optimized.pdmodel"))  # kept alive: the ops point into it
    ops = list(_ops(desc))
    writer = {name: op for op in ops for name in op.output_arg_names()}
    for op in (op for op in ops if op.type() == "ct_add_scale_shift_bf16"):
        fc = writer[op.input("X")[0]]
        assert fc.type() == "fc" and not (fc.has_attr("force_fp32_output") and fc.attr("force_fp32_output"))
    got = Predictor(prefixes[True], options)(batch)[0]
    assert 0 < np.abs(got - ref).max() < 0.05  # bf16 ran, close to HF
    # where AVX512-BF16 is missing (paddle's bf16 needs only AVX-512), the fp32 operator stays, in place
    import common.inference
    monkeypatch.setattr(common.inference, "cpu_flags", lambda: cpu_flags() - {"avx512_bf16"})
    bf16 = optimized_op_counts(prefixes[True], options, str(tmp_path / "bf16_without_the_operators"))
    assert bf16["ct_add_scale_shift_"] == residual and not bf16["ct_add_scale_shift_bf16"]
    got = Predictor(prefixes[True], options)(batch)[0]
    assert 0 < np.abs(got - ref).max() < 0.05
