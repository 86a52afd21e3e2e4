"""ConvBERT: conversion within 1e-5 of HF on tiny checkpoints shaped like the published ones,
LayerNorm epsilon, torch's padding row, layer-wise LR decay by name, a tiny GLUE run."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

import convbert.modeling as cm
from common.compare import compare
from common.convert import convert_checkpoint
from common.errors import UserError
from common.train_glue import layerwise_lr_decay, param_groups
from conftest import REPO, user_error
from convbert.run_glue import CLASSIFIER, layer_depth, main as run_glue_main
from convbert.spec import SPEC
from test_run_glue import keyword_task
from tiny_checkpoints import randomize, save_tiny

# Tiny versions of YituTech/conv-bert-{small, medium-small, base} (embedding / hidden ratios, heads
# halved by head_ratio 2, kernel 9, linear groups 1 / 2 / 1), and two shapes PaddleNLP sized wrongly.
CONFIGS = {
    "small": dict(embedding_size=16, hidden_size=32, num_attention_heads=4, intermediate_size=128,
                  head_ratio=2, conv_kernel_size=9, num_groups=1, num_hidden_layers=3),
    "medium-small": dict(embedding_size=16, hidden_size=48, num_attention_heads=8, intermediate_size=192,
                         head_ratio=2, conv_kernel_size=9, num_groups=2),
    "base": dict(embedding_size=32, hidden_size=32, num_attention_heads=4, intermediate_size=128,
                 head_ratio=2, conv_kernel_size=9, num_groups=1),
    # 2 // 4 = 0 heads: HF keeps one head with its convolution (PaddleNLP dropped the convolution).
    "one-head": dict(embedding_size=32, hidden_size=32, num_attention_heads=2, intermediate_size=64,
                     head_ratio=4, conv_kernel_size=5, num_groups=2, layer_norm_eps=1e-7),
    "ratio-1": dict(embedding_size=24, hidden_size=32, num_attention_heads=2, intermediate_size=64,
                    head_ratio=1, conv_kernel_size=3, num_groups=1),
}


_CACHE = {}


@pytest.fixture(scope="module")
def convbert_dir(tmp_path_factory):
    """get(config, head) -> (torch_dir, paddle_dir), built once per module."""
    root = tmp_path_factory.mktemp("convbert")

    def get(name: str, head: str | None = None):
        if (name, head) not in _CACHE:
            extra = {"num_labels": 3} if head else {}
            torch_dir = save_tiny(str(root / f"{name}-{head}-torch"), "convbert", head=head, pad_token_id=0,
                                  **CONFIGS[name], **extra)
            randomize(torch_dir)
            paddle_dir = str(root / f"{name}-{head}-paddle")
            convert_checkpoint(torch_dir, paddle_dir, SPEC, quiet=True)
            _CACHE[name, head] = torch_dir, paddle_dir
        return _CACHE[name, head]

    return get


@pytest.mark.parametrize("head", [None, "classification"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_converted_model_matches_torch(convbert_dir, name, head):
    torch_dir, paddle_dir = convbert_dir(name, head)
    diffs = {d.name: d for d in compare(torch_dir, paddle_dir)}
    # HF's ConvBertModel has no pooler: only what both sides give is compared.
    assert set(diffs) == {"sequence_output"} | ({"logits"} if head else set())
    for d in diffs.values():
        assert d.max_abs <= 1e-5, f"{name} {head} {d.name}: {d.max_abs:.3e}"
    with open(os.path.join(paddle_dir, "config.json")) as f:
        config = json.load(f)
    assert config["architectures"] == [CLASSIFIER if head else "ConvBertHFModel"]
    assert {k: config[k] for k in CONFIGS[name]} == CONFIGS[name]


def test_layouts_and_no_pooler(convbert_dir, capsys):
    import paddle

    torch_dir, paddle_dir = convbert_dir("medium-small", "classification")
    state = paddle.load(os.path.join(paddle_dir, "model_state.pdparams"))
    source = load_file(os.path.join(torch_dir, "model.safetensors"))
    assert not [k for k in state if "pooler" in k]
    assert len(state) == len(source)  # one to one: nothing skipped, computed or left random
    # Grouped linears keep [groups, in/groups, out/groups]; the conv bias [C, 1] becomes [C].
    grouped = state["convbert.encoder.layers.1.linear1.weight"].numpy()
    np.testing.assert_array_equal(grouped, source["convbert.encoder.layer.1.intermediate.dense.weight"])
    bias = state["convbert.encoder.layers.0.self_attn.key_conv_attn_layer.bias"].numpy()
    np.testing.assert_array_equal(bias, source["convbert.encoder.layer.0.attention.self.key_conv_attn_layer.bias"][:, 0])
    q = state["convbert.encoder.layers.0.self_attn.q_proj.weight"].numpy()
    np.testing.assert_array_equal(q, source["convbert.encoder.layer.0.attention.self.query.weight"].T)


@pytest.mark.parametrize("low_cpu_mem_usage", [False, True])
def test_every_layer_norm_epsilon_is_the_configs(convbert_dir, low_cpu_mem_usage):
    """paddle's TransformerEncoderLayer norms default to 1e-5; PaddleNLP fixes them only in its init
    hook, which low_cpu_mem_usage loading skips."""
    import paddle

    _, paddle_dir = convbert_dir("one-head", "classification")
    model = cm.ConvBertHFForSequenceClassification.from_pretrained(paddle_dir, low_cpu_mem_usage=low_cpu_mem_usage)
    eps = {n: layer._epsilon for n, layer in model.named_sublayers() if isinstance(layer, paddle.nn.LayerNorm)}
    assert len(eps) == 1 + 2 * 2
    assert set(eps.values()) == {CONFIGS["one-head"]["layer_norm_eps"]}


def test_layer_decay_rates_by_name(convbert_dir):
    """ELECTRA's rates: head 1, layer i of L decay^(L + 1 - i), embeddings decay^(L + 2)."""
    _, paddle_dir = convbert_dir("small")
    model = cm.ConvBertHFForSequenceClassification.from_pretrained(paddle_dir, num_labels=2)
    L = model.config.num_hidden_layers
    assert L == 3
    scale = layerwise_lr_decay(layer_depth, 0.8)
    groups = param_groups(model, 0.01, lambda name: scale(model, name))
    rate = {id(p): g["learning_rate"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert len(rate) == len(named)
    expected = {
        "convbert.embeddings.word_embeddings.weight": 0.8**5,
        "convbert.embeddings.layer_norm.bias": 0.8**5,
        "convbert.embeddings_project.weight": 0.8**5,
        "convbert.encoder.layers.0.linear1.weight": 0.8**4,
        "convbert.encoder.layers.1.self_attn.key_conv_attn_layer.depthwise.weight": 0.8**3,
        "convbert.encoder.layers.1.norm2.weight": 0.8**3,
        "convbert.encoder.layers.2.self_attn.q_proj.bias": 0.8**2,
        "classifier.dense.weight": 1.0,
        "classifier.out_proj.bias": 1.0,
    }
    for name, value in expected.items():
        assert rate[id(named[name])] == pytest.approx(value, rel=1e-12), name
    with pytest.raises(ValueError, match="no layer depth"):
        layer_depth("convbert.pooler.dense.weight", L)
    with pytest.raises(ValueError, match="no layer depth"):
        layer_depth("convbert.encoder.layers.3.linear1.weight", L)


def test_tiny_glue_run_with_layer_decay(convbert_dir, tmp_path, monkeypatch):
    import common.train_glue as tg

    _, paddle_dir = convbert_dir("small")
    seen = []
    real = tg.param_groups
    monkeypatch.setattr(tg, "param_groups", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    out = tmp_path / "run"
    argv = ["--model_name_or_path", paddle_dir, "--task_name", "sst2", "--data_dir", keyword_task(tmp_path / "data", 48, 16),
            "--output_dir", str(out), "--do_train", "--max_steps", "3", "--save_steps", "3",
            "--per_device_train_batch_size", "16", "--layer_decay", "0.8", "--adam_epsilon", "1e-6",
            "--disable_tqdm", "true", "--report_to", "none", "--seed", "1"]
    metrics = run_glue_main(argv)
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert {"accuracy", "loss"} <= set(metrics["dev"]) and metrics["dev"]["samples"] == 16
    assert json.loads((out / "args.json").read_text())["training"]["layer_decay"] == 0.8
    rates = sorted({g["learning_rate"] for g in seen[0]})
    assert rates == pytest.approx([0.8**5, 0.8**4, 0.8**3, 0.8**2, 1.0])


def test_layer_decay_needs_depths_and_a_valid_value(convbert_dir, tmp_path):
    from common.train_glue import glue_main

    _, paddle_dir = convbert_dir("small")
    base = ["--model_name_or_path", paddle_dir, "--task_name", "sst2", "--data_dir", str(tmp_path),
            "--output_dir", str(tmp_path / "run")]
    with pytest.raises(UserError, match="--layer_decay is not supported for convbert"):
        glue_main("convbert", CLASSIFIER, base + ["--layer_decay", "0.8"])
    with pytest.raises(UserError, match=r"--layer_decay must be in \(0, 1\], not 1.5"):
        run_glue_main(base + ["--layer_decay", "1.5"])
    assert not (tmp_path / "run").exists()


def test_compare_script_and_recipe_script(convbert_dir, tmp_path):
    torch_dir, paddle_dir = convbert_dir("medium-small", "classification")
    proc = subprocess.run([sys.executable, os.path.join(REPO, "convbert", "compare.py"),
                           "--torch_dir", torch_dir, "--paddle_dir", paddle_dir], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "OK: within atol 1.0e-05" in proc.stdout and "logits" in proc.stdout

    proc = subprocess.run(["bash", os.path.join(REPO, "scripts", "convbert_glue.sh"), "wnli"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert user_error(proc).startswith("unknown task 'wnli'")


def test_train_kernels_keep_the_grouped_ffn(convbert_dir, monkeypatch):
    """conv-bert-medium-small's grouped FFN linears under the CPU training kernels (run_glue's training and
    evaluation): eval logits as without the kernels, and a training step's gradients reach them (the grouped
    product one GEMM per group; the fused bias + GELU operator takes plain linears only, the grouped ones' output
    goes through the GELU operator)."""
    import paddle

    from common import train_kernels as tk
    from common.models import load_model_dir
    from tiny_checkpoints import padded_batch

    model = load_model_dir(convbert_dir("medium-small", "classification")[1])
    model.eval()
    batch = {k: paddle.to_tensor(v) for k, v in padded_batch(3, 11, seed=1).items()}
    with paddle.no_grad():
        ref = model(**batch).numpy()
        assert tk.use_train_kernels(model) > 0
        np.testing.assert_allclose(model(**batch).numpy(), ref, atol=1e-5, rtol=0)
    model.train()
    gelu, calls = tk.gelu, []
    monkeypatch.setattr(tk, "gelu", lambda x: calls.append(x.shape) or gelu(x))
    model(**batch).sum().backward()
    assert calls == [[3, 11, 192]] * len(model.convbert.encoder.layers)  # 2 groups of 96 neurons
    linear1 = model.convbert.encoder.layers[0].linear1
    assert type(linear1) is cm.TrainGroupedLinear and linear1.weight.grad.shape == [2, 24, 96]
    assert float(linear1.weight.grad.abs().sum()) > 0
