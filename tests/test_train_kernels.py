"""common/train_kernels.py: the custom operators against paddle's own ops, values and gradients."""
import contextlib
import dataclasses
import re

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn
import pytest

from common import train_kernels as tk
from common.bench_models import MODELS, build_pair
from common.hardware import cpu_flags, onednn_bf16_missing
from common.inference import math_threads
from common.malloc import retain_freed_memory
from tiny_checkpoints import padded_batch

NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def _grads(model, batch, labels):
    loss = F.cross_entropy(model(**batch), labels)
    loss.backward()
    return float(loss), {n: p.grad.numpy() for n, p in model.named_parameters() if p.grad is not None}


def _sharpen(model) -> None:
    """Weights x8: init std 0.02 leaves attention near uniform; larger weights make every operator count."""
    for p in model.parameters():
        if p.ndim > 1:
            p.set_value(p * 8)


@contextlib.contextmanager
def _threads(n):
    """paddle's math threads set to ``n`` inside the block, restored after."""
    old = math_threads()
    paddle.base.core.set_num_threads(n)
    try:
        yield
    finally:
        paddle.base.core.set_num_threads(old)


def _padded_batch(vocab):
    """Three sequences of 12 tokens (lengths 12, 2 and 3), both token types, as paddle tensors."""
    return {k: paddle.to_tensor(v) for k, v in padded_batch(3, 12, seed=3, vocab=vocab).items()}


@pytest.mark.parametrize("name", ["bert-base-uncased", "squeezebert-uncased", "mobilebert-uncased", "conv-bert-small"])
def test_kernels_give_paddles_loss_and_gradients(name):
    """With dropout off, a train-mode step through the kernels equals paddle's own, every gradient."""
    model = MODELS[name]
    model = dataclasses.replace(model, quick={**model.quick, **NO_DROPOUT})
    _, plain, cfg = build_pair(model, quick=True)
    _, fast, _ = build_pair(model, quick=True)
    _sharpen(plain)
    fast.set_state_dict(plain.state_dict())
    switched = tk.use_train_kernels(fast)
    assert switched > 0
    plain.train(), fast.train()
    batch, labels = _padded_batch(cfg["vocab_size"]), paddle.to_tensor([0, 1, 1])
    loss, want = _grads(plain, batch, labels)
    fast_loss, got = _grads(fast, batch, labels)
    assert fast_loss == pytest.approx(loss, rel=1e-5)
    assert set(got) == set(want)
    worst = max(float(np.abs(got[n] - want[n]).max() / (np.abs(want[n]).max() + 1e-3)) for n in want)
    assert worst < 1e-4, worst
    assert tk.use_train_kernels(fast, False) == switched
    assert all(type(layer) not in tk.UNSWAPS for layer in fast.sublayers())


def test_bert_attention_and_ffn_use_the_fused_operators():
    """The BERT encoder layers run the fused paths (not paddle's fallback) in train mode."""
    _, model, _ = build_pair(MODELS["bert-base-uncased"], quick=True)
    tk.use_train_kernels(model)
    types = {type(layer) for layer in model.sublayers()}
    assert {tk.MultiHeadAttention, tk.TransformerEncoderLayer, tk.Linear, tk.LayerNorm, tk.Dropout} <= types


@pytest.mark.parametrize("name", ["tinybert-4l-312d", "squeezebert-uncased", "mobilebert-uncased", "conv-bert-small",
                                  "conv-bert-medium-small"])
def test_eval_mode_runs_the_kernels_with_paddles_outputs(name):
    """Dygraph eval mode (evaluation, prediction) goes through the operators: paddle's logits within
    float rounding, the state dict kept, and paddle's generator untouched (no dropout draws)."""
    _, model, cfg = build_pair(MODELS[name], quick=True)
    _sharpen(model)
    batch = _padded_batch(cfg["vocab_size"])
    keys = list(model.state_dict())
    with paddle.no_grad():
        want = model(**batch).numpy()
        tk.use_train_kernels(model)
        paddle.seed(11)
        got = model(**batch).numpy()
        drawn = paddle.rand([4]).numpy()
    paddle.seed(11)
    np.testing.assert_array_equal(drawn, paddle.rand([4]).numpy())
    assert not np.array_equal(got, want)  # the operators ran: not bit-identical to paddle's ops
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    assert list(model.state_dict()) == keys


@pytest.mark.parametrize("name", ["tinybert-4l-312d", "mobilebert-uncased"])
@pytest.mark.parametrize("switch", [True, False])
def test_export_holds_the_attention_operator_and_restores_the_layers(name, switch, tmp_path):
    """The export runs the plain layers (MobileBERT's kernel-backed ones failed to convert) except
    attention, which is one operator per layer with no conditional block around it, and MobileBERT's
    residual adds with NoNorm (none where ``custom_ops`` is False); afterwards the model's layers are what
    they were, also after an export whose last layer runs at [CLS] only (common/first_token.py: BERT's
    attends there with matmuls and softmax, tests/test_first_token.py)."""
    from common.inference import custom_ops, export_static, op_types_of

    _, model, _ = build_pair(MODELS[name], quick=True)
    switched = tk.use_train_kernels(model) if switch else 0
    types = [type(layer) for layer in model.sublayers(include_self=True)]
    ops = op_types_of(export_static(model, str(tmp_path / "fast"), first_token=False))
    residual_norms = ["ct_add_scale_shift_"] if name.startswith("mobilebert") else []
    assert custom_ops(ops) == residual_norms + ["ct_attention"]
    assert not {"conditional_block", "select_input", "softmax"} & ops
    assert [type(layer) for layer in model.sublayers(include_self=True)] == types
    assert sum(t in tk.UNSWAPS for t in types) == switched
    assert custom_ops(op_types_of(export_static(model, str(tmp_path / "portable"), custom_ops=False))) == []
    assert [type(layer) for layer in model.sublayers(include_self=True)] == types
    assert "ct_attention" in op_types_of(export_static(model, str(tmp_path / "cls")))
    assert [type(layer) for layer in model.sublayers(include_self=True)] == types
    assert not [layer for layer in model.sublayers(include_self=True) if "forward" in layer.__dict__]


def test_dropout_keeps_1_minus_p_scaled_and_its_gradient_uses_the_same_mask():
    x = paddle.rand([1000, 1000]) + 0.5
    x.stop_gradient = False
    out = tk.dropout(x, 0.1)
    kept = (out != 0).numpy()
    assert abs(kept.mean() - 0.9) < 4 * np.sqrt(0.09 / kept.size)  # 4 sigma of a Bernoulli(0.9) mean
    np.testing.assert_allclose(out.numpy()[kept], x.numpy()[kept] / 0.9, rtol=1e-6)
    out.backward(paddle.full_like(x, 2.0))
    np.testing.assert_allclose(x.grad.numpy(), kept * 2.0 / 0.9, rtol=1e-6)


def test_dropout_draws_follow_paddle_seed():
    x = paddle.ones([64, 64])
    paddle.seed(7)
    first, second = tk.dropout(x, 0.5).numpy(), tk.dropout(x, 0.5).numpy()
    paddle.seed(7)
    np.testing.assert_array_equal(tk.dropout(x, 0.5).numpy(), first)
    assert (first != second).any()


def test_attention_softmax_dropout_against_paddle():
    """dropout(softmax(s * scale + mask)) and its gradient, against paddle's ops with the same keep-mask."""
    rng = np.random.default_rng(0)
    scores = paddle.to_tensor(rng.normal(size=(2, 3, 5, 7)).astype("float32"), stop_gradient=False)
    mask = paddle.to_tensor(np.where(rng.random((2, 1, 1, 7)) < 0.3, -1e4, 0.0).astype("float32"))
    grad = paddle.to_tensor(rng.normal(size=(2, 3, 5, 7)).astype("float32"))
    out = tk.kernels().ct_softmax_dropout(scores, mask, 0.5, 0.2, 1234)[0]
    out.backward(grad)
    keep = paddle.to_tensor((out != 0).numpy().astype("float32"))
    ref_scores = paddle.to_tensor(scores.numpy(), stop_gradient=False)
    ref = F.softmax(ref_scores * 0.5 + mask) * keep / 0.8
    ref.backward(grad)
    np.testing.assert_allclose(out.numpy(), ref.numpy(), atol=1e-6)
    np.testing.assert_allclose(scores.grad.numpy(), ref_scores.grad.numpy(), atol=1e-6)
    assert 0.5 < float(keep.mean()) < 1  # some dropped, most kept


def _reference_attention(q, k, v, mask, heads):
    """paddle's ops: heads split, softmax(q k^T / sqrt(size) + mask) v, heads merged."""
    size = q.shape[-1] // heads
    split = [x.reshape([x.shape[0], x.shape[1], heads, size]).transpose([0, 2, 1, 3]) for x in (q, k, v)]
    weights = F.softmax(paddle.matmul(split[0], split[1], transpose_y=True) * size**-0.5 + mask)
    return paddle.matmul(weights, split[2]).transpose([0, 2, 1, 3]).reshape(q.shape)


@pytest.mark.parametrize("query_rows, per_query_mask, threads, channels_first",
                         [(5, False, 1, False), (5, True, 3, False), (7, False, 3, False), (5, True, 3, True),
                          (7, False, 1, True), (5, True, 4, False), (7, True, 4, True)])
def test_attention_operator_against_paddles_ops(query_rows, per_query_mask, threads, channels_first):
    """One operator for inference attention: 3 heads of size 5 side by side, 5 or 7 queries over 7
    keys, a padding mask per sample or per query, on 1 and 3 threads, token-major or channels-first; on
    4 threads the 6 (sample, head) tasks split their queries in two blocks (3 + 2, 4 + 3), so the threads
    get equal shares."""
    rng = np.random.default_rng(4)
    q = paddle.to_tensor(rng.normal(size=(2, query_rows, 15)).astype("float32") * 3)
    k, v = (paddle.to_tensor(rng.normal(size=(2, 7, 15)).astype("float32") * 3) for _ in range(2))
    mask = np.where(rng.random((2, 1, query_rows if per_query_mask else 1, 7)) < 0.3, -1e4, 0.0)
    mask[..., 0] = 0  # every row keeps a key
    mask = paddle.to_tensor(mask.astype("float32"))
    want = _reference_attention(q, k, v, mask, 3).numpy()
    layout = (lambda x: x.transpose([0, 2, 1])) if channels_first else (lambda x: x)
    with _threads(threads):
        got = layout(tk.attention(layout(q), layout(k), layout(v), mask, 3, channels_first)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch, groups, per_query_mask, threads", [(2, 2, False, 3), (1, 2, True, 2), (2, 1, True, 1)])
def test_grouped_qkv_attention_operator_against_convolutions_and_attention(batch, groups, per_query_mask, threads):
    """SqueezeBERT's query, key and value convolutions with attention as one operator: 4 heads of size 3 over
    7 positions, channels-first, a padding mask per sample or per query, equal to three grouped convolutions
    (paddle's nn.Conv1D) and paddle's attention of their outputs; 3 threads on 4 tasks, 2 on 2, 1 on 2."""
    rng = np.random.default_rng(6)
    paddle.seed(6)
    convs = [paddle.nn.Conv1D(12, 12, 1, groups=groups) for _ in range(3)]
    x = paddle.to_tensor(rng.normal(size=(batch, 12, 7)).astype("float32") * 2)
    mask = np.where(rng.random((batch, 1, 7 if per_query_mask else 1, 7)) < 0.3, -1e4, 0.0)
    mask[..., 0] = 0
    mask = paddle.to_tensor(mask.astype("float32"))
    token_major = [conv(x).transpose([0, 2, 1]) for conv in convs]
    want = _reference_attention(*token_major, mask, 4).transpose([0, 2, 1]).numpy()
    with _threads(threads), paddle.no_grad():
        got = tk.grouped_qkv_attention(x, convs, mask, 4).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(OSError, match="each group holding whole heads"):
        tk.grouped_qkv_attention(x, convs, mask, 3 if groups == 2 else 5)


def test_attention_operator_rejects_shapes_it_does_not_take():
    q = paddle.rand([2, 5, 15])
    with pytest.raises(OSError, match=r"attention mask must be \[batch, 1, 1 or query, key\]"):
        tk.kernels().ct_attention(q, q, q, paddle.zeros([2, 1, 3, 5]), 3, 1.0, False)
    for heads in (4, 0):  # 0 checked before dividing by it
        with pytest.raises(OSError, match=f"attention: width 15 not divisible by heads {heads}"):
            tk.kernels().ct_attention(q, q, q, paddle.zeros([2, 1, 1, 5]), heads, 1.0, False)
    with pytest.raises(OSError, match=r"attention takes query \[batch, query, width\]"):
        tk.kernels().ct_attention(q, paddle.rand([2, 5, 12]), paddle.rand([2, 5, 12]), paddle.zeros([2, 1, 1, 5]),
                                  3, 1.0, False)


BF16_CPU = "avx512_bf16" in cpu_flags()


@pytest.mark.skipif(not BF16_CPU, reason="ct_attention_bf16 runs on CPUs with AVX512-BF16")
@pytest.mark.parametrize("query_rows, keys, size, per_query_mask",
                         [(5, 7, 5, False), (37, 37, 26, True), (130, 129, 64, False)])
def test_bf16_attention_operator_within_bf16_rounding_of_fp32(query_rows, keys, size, per_query_mask):
    """The bf16-product attention of bf16 inference against the fp32 operator (tested against paddle's ops
    above): odd head sizes and key counts (zero-padded bf16 pairs), TinyBERT's head size 26, more queries
    than one block of rows and more keys than one 64-column tile, padding masks per sample or per query."""
    rng = np.random.default_rng(size)
    q = paddle.to_tensor(rng.normal(size=(2, query_rows, 3 * size)).astype("float32"))
    k, v = (paddle.to_tensor(rng.normal(size=(2, keys, 3 * size)).astype("float32")) for _ in range(2))
    mask = np.where(rng.random((2, 1, query_rows if per_query_mask else 1, keys)) < 0.3, -1e4, 0.0)
    mask[..., 0] = 0
    mask = paddle.to_tensor(mask.astype("float32"))
    want = tk.attention(q, k, v, mask, 3).numpy()
    with _threads(3):
        got = tk.kernels().ct_attention_bf16(q, k, v, mask, 3, size**-0.5, False).numpy()
    err = np.abs(got - want)
    assert err.max() < 0.02 and 1e-5 < err.mean() < 2e-3  # bf16 rounding of q, k, v and the probabilities


@pytest.mark.skipif(not BF16_CPU, reason="ct_attention_bf16 runs on CPUs with AVX512-BF16")
@pytest.mark.parametrize("size", [5, 26])
def test_bf16_attention_operator_takes_and_gives_bf16(size):
    """bf16 Q, K, V (as the bf16 predictor's fcs write them) give a bf16 Out: the fp32-input result on the same
    values, rounded to the nearest bf16, bit for bit (odd head size: zero-padded pairs; heads side by side)."""
    rng = np.random.default_rng(size)
    q, k, v = (paddle.to_tensor(rng.normal(size=(2, n, 3 * size)).astype("float32")).astype("bfloat16")
               for n in (37, 29, 29))
    mask = np.zeros((2, 1, 1, 29), "float32")
    mask[1, ..., 20:] = -1e4
    mask = paddle.to_tensor(mask)
    op = tk.kernels().ct_attention_bf16
    with _threads(3):
        got = op(q, k, v, mask, 3, size**-0.5, False)
        want = op(q.astype("float32"), k.astype("float32"), v.astype("float32"), mask, 3, size**-0.5, False)
    assert got.dtype == paddle.bfloat16 and want.dtype == paddle.float32
    bits = want.numpy().view(np.uint32)  # round to nearest even bf16 (paddle's own cast truncates)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).view(np.float32)
    np.testing.assert_array_equal(got.astype("float32").numpy(), rounded)


@pytest.mark.skipif(not BF16_CPU, reason="ct_attention_bf16 runs on CPUs with AVX512-BF16")
def test_bf16_attention_operator_checks_its_inputs():
    q = paddle.rand([2, 15, 5])
    with pytest.raises(OSError, match="ct_attention_bf16 takes token-major"):
        tk.kernels().ct_attention_bf16(q, q, q, paddle.zeros([2, 1, 1, 5]), 3, 1.0, True)
    with pytest.raises(OSError, match="query, key and value must be CPU tensors of one type"):
        tk.kernels().ct_attention_bf16(q.astype("bfloat16"), q, q, paddle.zeros([2, 1, 1, 15]), 5, 1.0, False)
    with pytest.raises(OSError, match="attention query must be float32"):
        tk.kernels().ct_attention(q.astype("bfloat16"), q, q, paddle.zeros([2, 1, 1, 15]), 5, 1.0, False)


@pytest.mark.skipif(not BF16_CPU, reason="ct_add_layer_norm_bf16 runs on CPUs with AVX512-BF16")
@pytest.mark.parametrize("width", [5, 37, 312])
def test_add_layer_norm_operator(width):
    """layer_norm(X + Y) over the last axis: fp32 against paddle's ops; bf16 X, Y give a bf16 Out within bf16
    rounding of the fp32 result on the same values (widths not a multiple of 16: masked tails)."""
    rng = np.random.default_rng(width)
    x, y = (paddle.to_tensor((3 * rng.normal(size=(2, 7, width)) + 1).astype("float32")) for _ in range(2))
    scale, bias = (paddle.to_tensor(rng.normal(size=width).astype("float32")) for _ in range(2))
    op = tk.kernels().ct_add_layer_norm_bf16
    with _threads(3):
        got = op(x, y, scale, bias, 1e-5)
        x16, y16 = x.astype("bfloat16"), y.astype("bfloat16")
        got16 = op(x16, y16, scale, bias, 1e-5)
    want = F.layer_norm(x + y, width, scale, bias, 1e-5)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
    assert got16.dtype == paddle.bfloat16
    want16 = F.layer_norm(x16.astype("float32") + y16.astype("float32"), width, scale, bias, 1e-5).numpy()
    np.testing.assert_allclose(got16.astype("float32").numpy(), want16, rtol=2**-8, atol=1e-5)


@pytest.mark.skipif(not BF16_CPU, reason="ct_add_layer_norm_bf16 runs on CPUs with AVX512-BF16")
def test_add_layer_norm_operator_checks_its_inputs():
    x, w = paddle.rand([2, 3, 8]), paddle.ones([8])
    with pytest.raises(OSError, match="X and Y must be CPU tensors of one shape and type"):
        tk.kernels().ct_add_layer_norm_bf16(x, paddle.rand([2, 8]), w, w, 1e-5)
    with pytest.raises(OSError, match="X and Y must be CPU tensors of one shape and type"):
        tk.kernels().ct_add_layer_norm_bf16(x, x.astype("bfloat16"), w, w, 1e-5)
    with pytest.raises(OSError, match="scale / bias size != last dimension 8"):
        tk.kernels().ct_add_layer_norm_bf16(x, x, paddle.ones([7]), w, 1e-5)


@pytest.mark.parametrize("width", [5, 37, 128])
def test_add_scale_shift_operator_writes_over_its_input(width):
    """ct_add_scale_shift_ (exports): (X + Y) * W + B over the last axis, written over X; Y, W, B untouched."""
    rng = np.random.default_rng(width)
    x, y = (rng.normal(size=(2, 7, width)).astype("float32") for _ in range(2))
    w, b = (rng.normal(size=width).astype("float32") for _ in range(2))
    tx, ty, tw, tb = (paddle.to_tensor(a) for a in (x, y, w, b))
    with _threads(3):
        out = tk.add_scale_shift_(tx, ty, tw, tb)
    want = (x + y) * w + b
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(tx.numpy(), want, rtol=1e-6, atol=1e-6)
    assert np.array_equal(ty.numpy(), y) and np.array_equal(tw.numpy(), w) and np.array_equal(tb.numpy(), b)
    with pytest.raises(OSError, match="ct_add_scale_shift_: Y shape != X shape"):
        tk.add_scale_shift_(tx, paddle.rand([7, width]), tw, tb)
    with pytest.raises(OSError, match="ct_add_scale_shift_ Y must be float32"):
        tk.add_scale_shift_(tx, ty.astype("bfloat16"), tw, tb)
    with pytest.raises(OSError, match=f"scale_shift weight/bias size != last dimension {width}"):
        tk.add_scale_shift_(tx, ty, paddle.ones([width + 1]), tb)


@pytest.mark.skipif(not BF16_CPU, reason="ct_add_scale_shift_bf16 runs on CPUs with AVX512-BF16")
@pytest.mark.parametrize("width", [5, 37, 512])
def test_bf16_add_scale_shift_operator(width):
    """ct_add_scale_shift_bf16 (the bf16 predictor's form): fp32 as the in-place operator, into a new tensor; bf16
    X, Y give a bf16 Out within bf16 rounding of the fp32 result on the same values; mixed types refused."""
    rng = np.random.default_rng(width)
    x, y = (paddle.to_tensor((3 * rng.normal(size=(2, 7, width))).astype("float32")) for _ in range(2))
    w, b = (paddle.to_tensor(rng.normal(size=width).astype("float32")) for _ in range(2))
    op = tk.kernels().ct_add_scale_shift_bf16
    with _threads(3):
        got = op(x, y, w, b)
        x16, y16 = x.astype("bfloat16"), y.astype("bfloat16")
        got16 = op(x16, y16, w, b)
    want = (x.numpy() + y.numpy()) * w.numpy() + b.numpy()
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-6)
    assert got16.dtype == paddle.bfloat16
    want16 = (x16.astype("float32").numpy() + y16.astype("float32").numpy()) * w.numpy() + b.numpy()
    np.testing.assert_allclose(got16.astype("float32").numpy(), want16, rtol=2**-8, atol=1e-6)
    with pytest.raises(OSError, match="X and Y must be CPU tensors of one shape and type"):
        op(x, y16, w, b)


def test_squeezebert_predictors_run_the_grouped_linear_operators(tmp_path):
    """SqueezeBERT's export runs each layer's query, key, value and attention as ct_grouped_self_attention (the last
    layer, at [CLS] only, as three ct_grouped_linear and ct_attention), ct_grouped_linear_add_norm (post-attention)
    and ct_grouped_ffn_add_norm (feed-forward), their weights folded into parameters (paddle.inference in fp32 too:
    no transpose, split, concat, add or norm left in the encoder). A bf16 predictor runs the bf16 versions on bf16
    weights (folded alike: no cast left beyond the mask's), bf16 from one into the next; its logits within bf16
    rounding of fp32's."""
    from common.bench_models import make_batch
    from common.inference import (Predictor, PredictorOptions, _ops, _program, export_static, op_counts,
                                  optimized_op_counts)

    _, model, config = build_pair(MODELS["squeezebert-uncased"], quick=True)
    prefix = export_static(model, str(tmp_path / "static"))
    layers = config["num_hidden_layers"]
    counts = {"ct_grouped_self_attention": layers - 1, "ct_grouped_linear": 3, "ct_attention": 1,
              "ct_grouped_linear_add_norm": layers, "ct_grouped_ffn_add_norm": layers}
    exported = op_counts(prefix)
    assert {op: exported[op] for op in counts} == counts
    fp32 = optimized_op_counts(prefix, PredictorOptions(threads=2), str(tmp_path / "fp32"))
    assert {op: fp32[op] for op in counts} == counts
    assert fp32["layer_norm"] == 1 and fp32["fc"] == 2  # the embeddings'; the pooler and classifier
    assert not {"transpose2", "reshape2", "split", "concat"} & set(fp32)
    if onednn_bf16_missing() or not BF16_CPU:
        pytest.skip("the bf16 operators run where paddle.inference has bf16 and the CPU AVX512-BF16")
    bf16 = optimized_op_counts(prefix, PredictorOptions(threads=2, precision="bf16"), str(tmp_path / "bf16"))
    assert {op: bf16[f"{op}_bf16"] for op in counts} == counts
    assert not set(counts) & set(bf16) and "transpose2" not in bf16
    assert bf16["cast"] == fp32["cast"] == 1  # the attention mask's
    desc = _program(str(tmp_path / "bf16" / "_optimized.pdmodel"))  # kept alive: the ops point into it
    ops = list(_ops(desc))
    writer = {name: op.type() for op in ops for name in op.output_arg_names()}
    readers = {name: sorted(op.type() for op in ops if name in op.input_arg_names()) for name in writer}
    fused = [op for op in ops if op.type() == "ct_grouped_self_attention_bf16"]
    # the first layer's reads the embeddings' norm, the others the previous layer's feed-forward
    assert [writer[op.input("X")[0]] for op in fused] == (
        ["ct_add_layer_norm_bf16"] + ["ct_grouped_ffn_add_norm_bf16"] * (layers - 2))
    grouped = [op for op in ops if op.type() == "ct_grouped_linear_bf16"]
    # the last layer's: the query reads the [CLS] slice (fp32), key and value the previous feed-forward
    assert sorted(writer[op.input("X")[0]] for op in grouped) == ["ct_grouped_ffn_add_norm_bf16"] * 2 + ["slice"]
    assert {r for op in grouped for r in readers[op.output("Out")[0]]} == {"ct_attention_bf16"}
    post = [writer[op.input("X")[0]] for op in ops if op.type() == "ct_grouped_linear_add_norm_bf16"]
    assert post == ["ct_grouped_self_attention_bf16"] * (layers - 1) + ["ct_attention_bf16"]
    for op in ops:
        if op.type() == "ct_grouped_linear_add_norm_bf16":
            assert readers[op.output("Out")[0]] == ["ct_grouped_ffn_add_norm_bf16"]
    batch = make_batch(3, 16, config["vocab_size"])
    want = Predictor(prefix, PredictorOptions(threads=2))(batch)[0]
    got = Predictor(prefix, PredictorOptions(threads=2, precision="bf16"))(batch)[0]
    assert 0 < np.abs(got - want).max() < 0.02 * np.abs(want).max()


def test_bf16_predictor_runs_the_bf16_operators(tmp_path):
    """paddle.inference in bf16 runs each layer's attention as ct_attention_bf16 and each residual add with
    its layer norm as ct_add_layer_norm_bf16 where the CPU has AVX512-BF16 (paddle's ops elsewhere), and keeps
    paddle's fcs (fp32 fuses the blocks); the exported program itself is unchanged. (The whole last layer: a
    [CLS]-only one attends with matmuls, tests/test_first_token.py.)"""
    from common.inference import PredictorOptions, _ops, _program, export_static, op_counts, optimized_op_counts

    _, model, config = build_pair(MODELS["tinybert-4l-312d"], quick=True)
    prefix = export_static(model, str(tmp_path / "static"), first_token=False)
    layers = config["num_hidden_layers"]
    assert op_counts(prefix)["ct_attention"] == layers
    fp32 = optimized_op_counts(prefix, PredictorOptions(threads=2), str(tmp_path / "fp32"))
    assert fp32["ct_attention"] == layers and "ct_attention_bf16" not in fp32
    if onednn_bf16_missing():
        pytest.skip("paddle.inference has no bf16 on this CPU (test_paddle_bf16_needs_avx512)")
    bf16 = optimized_op_counts(prefix, PredictorOptions(threads=2, precision="bf16"), str(tmp_path / "bf16"))
    renamed = layers if BF16_CPU else 0
    assert bf16["ct_attention_bf16"] == renamed and bf16["ct_attention"] == layers - renamed
    norms = 2 * layers + 1  # the embeddings' and two per layer
    assert bf16["ct_add_layer_norm_bf16"] == (norms if BF16_CPU else 0)
    assert bf16["layer_norm"] == (0 if BF16_CPU else norms) and "ct_grouped_ffn_add_norm" not in bf16
    assert fp32["layer_norm"] == 1 and fp32["ct_grouped_ffn_add_norm"] == layers  # tests/test_fused_blocks.py
    assert op_counts(prefix)["ct_attention"] == layers and op_counts(prefix)["layer_norm"] == norms
    if BF16_CPU:  # bf16 straight from the projections' fcs, and straight into the output fc
        desc = _program(str(tmp_path / "bf16" / "_optimized.pdmodel"))  # kept alive: the ops point into it
        ops = list(_ops(desc))
        writer = {name: op for op in ops for name in op.output_arg_names()}
        for att in (op for op in ops if op.type() == "ct_attention_bf16"):
            for slot in ("X", "Y", "Input"):
                fc = writer[att.input(slot)[0]]
                fp32_out = fc.has_attr("force_fp32_output") and fc.attr("force_fp32_output")
                assert fc.type() == "fc" and not fp32_out, (slot, fc.type())
            readers = [op.type() for op in ops if att.output("Out")[0] in op.input_arg_names()]
            assert readers == ["fc"]


def test_attend_is_one_operator_without_gradient(monkeypatch):
    """Under no_grad, attention is the one inference operator; with gradients (and dropout), the
    split path, which back-propagates. Same values."""
    rng = np.random.default_rng(5)
    q, k, v = (rng.normal(size=(2, 6, 8)).astype("float32") for _ in range(3))
    mask = paddle.to_tensor(np.where(rng.random((2, 1, 1, 6)) < 0.3, -1e4, 0.0).astype("float32"))
    calls = []
    real = tk.kernels()

    class Spy:
        def __getattr__(self, name):
            calls.append(name)
            return getattr(real, name)

    monkeypatch.setattr(tk, "kernels", Spy)
    with paddle.no_grad():
        fast = tk.attend(*(paddle.to_tensor(x) for x in (q, k, v)), mask, 2, 0.0).numpy()
    assert calls == ["ct_attention"]
    tensors = [paddle.to_tensor(x, stop_gradient=False) for x in (q, k, v)]
    out = tk.attend(*tensors, mask, 2, 0.0)
    out.sum().backward()
    assert "ct_attention" not in calls[1:] and "ct_softmax_dropout" in calls
    assert all(t.grad is not None for t in tensors)
    np.testing.assert_allclose(fast, out.numpy(), rtol=1e-5, atol=1e-6)


def test_layer_norm_bias_gelu_and_head_swap_against_paddle():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 6, 10)).astype("float32")
    w, b = rng.normal(size=10).astype("float32"), rng.normal(size=10).astype("float32")
    grad = paddle.to_tensor(rng.normal(size=(4, 6, 10)).astype("float32"))
    cases = {
        "layer_norm": (lambda t, w_, b_: tk.layer_norm(t, w_, b_, 1e-5),
                       lambda t, w_, b_: F.layer_norm(t, 10, w_, b_, 1e-5)),
        "bias_gelu": (lambda t, w_, b_: tk.kernels().ct_bias_gelu(t, b_) * w_, lambda t, w_, b_: F.gelu(t + b_) * w_),
        "bias_add": (lambda t, w_, b_: tk.bias_add(t, b_) * w_, lambda t, w_, b_: (t + b_) * w_),
        "bias_relu": (lambda t, w_, b_: tk.bias_relu(t, b_) * w_, lambda t, w_, b_: F.relu(t + b_) * w_),
        "scale_shift": (lambda t, w_, b_: tk.scale_shift(t, w_, b_) ** 2, lambda t, w_, b_: (t * w_ + b_) ** 2),
        "add_scale_shift": (lambda t, w_, b_: tk.scale_shift(t, w_, b_, residual=paddle.tanh(t)) * 2,
                            lambda t, w_, b_: ((t + paddle.tanh(t)) * w_ + b_) * 2),
        "swap12": (lambda t, w_, b_: tk.kernels().ct_swap12(t.reshape([4, 6, 2, 5])) * 2,
                   lambda t, w_, b_: t.reshape([4, 6, 2, 5]).transpose([0, 2, 1, 3]) * 2),
    }
    for name, (ours, theirs) in cases.items():
        results = []
        for fn in (ours, theirs):
            ts = [paddle.to_tensor(a, stop_gradient=False) for a in (x, w, b)]
            out = fn(*ts)
            out.backward(grad.reshape(out.shape))
            results.append([out.numpy()] + [t.grad.numpy() if t.grad is not None else None for t in ts])
        for got, want in zip(*results):
            if want is None:
                continue
            np.testing.assert_allclose(got, want, atol=2e-5, err_msg=name)


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("shape", [(7, 16), (2, 5, 16), (1, 1, 16)])
def test_matmul_operator_against_paddle(shape, transpose):
    """A Linear's product as one oneDNN GEMM (ct_matmul; transposed: a 1x1 convolution's [out, in] weight) and
    both gradients against paddle.matmul, on 3 threads."""
    rng = np.random.default_rng(4)
    x, w = rng.normal(size=shape).astype("float32"), rng.normal(size=(9, 16) if transpose else (16, 9)).astype("float32")
    grad = paddle.to_tensor(rng.normal(size=shape[:-1] + (9,)).astype("float32"))
    results = []
    with _threads(3):
        for fn in (lambda a, b: tk.matmul(a, b, transpose), lambda a, b: paddle.matmul(a, b, transpose_y=transpose)):
            ts = [paddle.to_tensor(a, stop_gradient=False) for a in (x, w)]
            out = fn(*ts)
            results.append([out.numpy()] + [g.numpy() for g in paddle.grad([out], ts, [grad])])
    assert results[0][0].shape == shape[:-1] + (9,)
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("block", [(16, 5), (11, 9), (11, 5)])
def test_matmul_operator_reads_a_weight_block_in_place(block, transpose):
    """``out_features``: the product with the weight's top-left [in, out] block (an OFA super layer narrower than
    built) against paddle.matmul with the sliced weight: values, the input's gradient, and the weight's (the
    block's, zero elsewhere), on 3 threads."""
    rows, cols = block
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 7, rows)).astype("float32")
    w = rng.normal(size=(9, 16) if transpose else (16, 9)).astype("float32")
    grad = paddle.to_tensor(rng.normal(size=(2, 7, cols)).astype("float32"))

    def sliced(a, b):
        return paddle.matmul(a, b[:cols, :rows] if transpose else b[:rows, :cols], transpose_y=transpose)

    results = []
    with _threads(3):
        for fn in (lambda a, b: tk.matmul(a, b, transpose, out_features=cols), sliced):
            ts = [paddle.to_tensor(a, stop_gradient=False) for a in (x, w)]
            out = fn(*ts)
            results.append([out.numpy()] + [g.numpy() for g in paddle.grad([out], ts, [grad])])
    assert results[0][0].shape == (2, 7, cols)
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)
    outside = np.ones(w.shape, bool)
    outside[(slice(cols), slice(rows)) if transpose else (slice(rows), slice(cols))] = False
    assert outside.any() and not results[0][2][outside].any()
    with pytest.raises(OSError, match=r"matmul: input \[\.\.\., in\] and weight .* \(or wider\) needed"):
        tk.matmul(paddle.rand([2, 17]), paddle.to_tensor(w), transpose, out_features=cols)
    with pytest.raises(OSError, match=r"\(or wider\) needed"):
        tk.matmul(paddle.rand([2, rows]), paddle.to_tensor(w), transpose, out_features=10)


@pytest.mark.parametrize("groups,shape", [(2, (2, 7, 24)), (3, (5, 24)), (1, (1, 1, 24))])
def test_grouped_matmul_operator_against_paddle(groups, shape):
    """A grouped Linear's product (ct_grouped_matmul: one GEMM per group on the input's column block) and both
    gradients against the per-group paddle.matmul of the same weight [groups, in, out], on 3 threads."""
    rng = np.random.default_rng(9)
    x = rng.normal(size=shape).astype("float32")
    w = rng.normal(size=(groups, 24 // groups, 10)).astype("float32")
    grad = paddle.to_tensor(rng.normal(size=shape[:-1] + (groups * 10,)).astype("float32"))

    def reference(a, b):
        return paddle.concat([paddle.matmul(a[..., g * (24 // groups):(g + 1) * (24 // groups)], b[g])
                              for g in range(groups)], axis=-1)

    results = []
    with _threads(3):
        for fn in (tk.grouped_matmul, reference):
            ts = [paddle.to_tensor(a, stop_gradient=False) for a in (x, w)]
            out = fn(*ts)
            results.append([out.numpy()] + [g.numpy() for g in paddle.grad([out], ts, [grad])])
    assert results[0][0].shape == shape[:-1] + (groups * 10,)
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)
    with pytest.raises(OSError, match=r"grouped_matmul: input \[\.\.\., groups \* in\] and weight \[groups, in, out\]"):
        tk.grouped_matmul(paddle.rand([2, 23]), paddle.to_tensor(w))


def test_gelu_operator_against_paddle():
    """Exact GELU (ct_gelu) and its gradient against paddle's, on 3 threads."""
    rng = np.random.default_rng(8)
    x = rng.normal(scale=3, size=(4, 5, 33)).astype("float32")
    grad = paddle.to_tensor(rng.normal(size=x.shape).astype("float32"))
    results = []
    with _threads(3):
        for fn in (tk.gelu, F.gelu):
            t = paddle.to_tensor(x, stop_gradient=False)
            out = fn(t)
            results.append([out.numpy(), paddle.grad([out], [t], [grad])[0].numpy()])
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("transpose_y", [False, True])
def test_batched_matmul_operator_against_paddle(transpose_y):
    """Attention's products (one oneDNN GEMM per matrix) and both gradients against paddle.matmul, 5 x 3
    matrices on 2 threads."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(5, 3, 6, 4)).astype("float32")
    y = rng.normal(size=(5, 3, 7, 4) if transpose_y else (5, 3, 4, 7)).astype("float32")
    grad = paddle.to_tensor(rng.normal(size=(5, 3, 6, 7)).astype("float32"))
    results = []
    with _threads(2):
        for fn in (tk.batched_matmul, paddle.matmul):
            ts = [paddle.to_tensor(a, stop_gradient=False) for a in (x, y)]
            out = fn(*ts, transpose_y=transpose_y)
            results.append([out.numpy()] + [g.numpy() for g in paddle.grad([out], ts, [grad])])
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)


def test_batched_matmul_operator_checks_its_inputs():
    with pytest.raises(OSError, match="batched_matmul: X and Y need the same leading dimensions"):
        tk.batched_matmul(paddle.rand([2, 3, 4, 5]), paddle.rand([2, 4, 5, 4]))
    with pytest.raises(OSError, match="batched_matmul: X's columns != Y's columns"):
        tk.batched_matmul(paddle.rand([2, 4, 5]), paddle.rand([2, 6, 4]), transpose_y=True)


def test_linear_takes_a_single_vector_through_paddles_layer():
    paddle.seed(6)
    layer = paddle.nn.Linear(16, 9)
    x = paddle.rand([16])
    want = layer(x).numpy()
    assert tk.use_train_kernels(layer) == 1
    np.testing.assert_allclose(layer(x).numpy(), want, rtol=1e-6)
    assert layer(x.unsqueeze(0)).shape == [1, 9]


def test_matmul_operator_checks_its_inputs():
    with pytest.raises(OSError, match=r"matmul: input \[\.\.\., in\] and weight \[in, out\] needed, got input rank 3"):
        tk.matmul(paddle.rand([2, 3, 16]), paddle.rand([15, 4]))
    with pytest.raises(OSError, match="matmul weight must be float32"):
        tk.matmul(paddle.rand([2, 16]), paddle.rand([16, 4]).astype("float64"))
    with pytest.raises(OSError, match=r"matmul: input \[\.\.\., in\] and weight \[out, in\] needed"):
        tk.matmul(paddle.rand([2, 16]), paddle.rand([16, 4]), transpose_weight=True)


@pytest.mark.parametrize("groups,gelu,batch", [(1, False, 3), (4, False, 3), (4, True, 3), (1, False, 1), (1, True, 1)])
def test_pointwise_conv_against_paddles_conv1d(groups, gelu, batch):
    """The grouped 1x1 convolution (+ GELU) and its three gradients against nn.Conv1D, same weights;
    on 3 threads, so that at batch 1 with one group the GEMMs split their rows (25 -> 9, 9, 7)."""
    paddle.seed(2)
    conv = paddle.nn.Conv1D(16, 25 if groups == 1 else 24, 1, groups=groups)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(batch, 16, 7)).astype("float32")
    grad = paddle.to_tensor(rng.normal(size=(batch, conv._out_channels, 7)).astype("float32"))
    results = []
    with _threads(3):
        for fn in (lambda t: tk.pointwise_conv(t, conv.weight, conv.bias, groups, gelu),
                   lambda t: F.gelu(conv(t)) if gelu else conv(t)):
            t = paddle.to_tensor(x, stop_gradient=False)
            out = fn(t)
            results.append([out.numpy()] + [g.numpy() for g in paddle.grad([out], [t, conv.weight, conv.bias], [grad])])
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("groups,shape,threads", [(1, (2, 7, 16), 3), (4, (2, 7, 16), 3), (4, (1, 1, 16), 3),
                                                  (8, (1, 3, 16), 3), (4, (2, 300, 16), 4)])
def test_grouped_linear_against_paddles_conv1d(groups, shape, threads):
    """The token-major grouped linear of SqueezeBERT's exports (the convolution's weight by group, transposed)
    against nn.Conv1D on the channels-first input, same weights: on 3 threads one group splits its rows (14 -> 5,
    5, 4); a one-token first-token slice; 4 groups on 4 threads keep their 600 rows, in GEMMs of 256, 256 and 88."""
    paddle.seed(5)
    conv = paddle.nn.Conv1D(16, 24, 1, groups=groups)
    x = paddle.to_tensor(np.random.default_rng(5).normal(size=shape).astype("float32"))
    want = conv(x.transpose([0, 2, 1])).transpose([0, 2, 1]).numpy()
    with _threads(threads):
        got = tk.grouped_linear(x, conv).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_by_group_transposed():
    """[out, in / groups, 1] -> [groups, in / groups, out / groups]: element (g, i, o) is weight[g * out_g + o, i]."""
    conv = paddle.nn.Conv1D(6, 8, 1, groups=2)
    w = conv.weight.numpy()[:, :, 0]
    got = tk.by_group_transposed(conv).numpy()
    assert got.shape == (2, 3, 4)
    np.testing.assert_array_equal(got[1, 2], w[4:8, 2])
    np.testing.assert_array_equal(got, np.stack([w[:4].T, w[4:].T]))


def test_grouped_linear_checks_its_inputs():
    x, w, b = paddle.rand([2, 3, 16]), paddle.rand([4, 4, 6]), paddle.rand([24])
    op = tk.kernels().ct_grouped_linear
    with pytest.raises(OSError, match="grouped_linear: channels 16 not divisible by groups 5"):
        op(x, w, b, 5)
    with pytest.raises(OSError, match=r"grouped_linear: weight must be \[groups, in / groups, out / groups\] = "
                                      r"\[2, 8, out / groups\]"):
        op(x, w, b, 2)
    with pytest.raises(OSError, match="grouped_linear: bias size != out channels 24"):
        op(x, w, paddle.rand([12]), 4)
    with pytest.raises(OSError, match="grouped_linear weight must be float32"):
        op(x, w.astype("bfloat16"), b, 4)


class _Conv:
    """A grouped 1x1 convolution's parameters, as the operators' Python wrappers read them."""

    def __init__(self, rng, channels_in: int, channels_out: int, groups: int, scale: float = 0.3):
        self.weight = paddle.to_tensor(rng.normal(0, scale, (channels_out, channels_in // groups, 1)).astype("float32"))
        self.bias = paddle.to_tensor(rng.normal(size=channels_out).astype("float32"))
        self._groups = groups


class _Norm:
    def __init__(self, rng, n: int):
        self.weight = paddle.to_tensor(rng.normal(size=n).astype("float32"))
        self.bias = paddle.to_tensor(rng.normal(size=n).astype("float32"))
        self._epsilon = 1e-12


def _conv_ref(x: np.ndarray, conv: _Conv) -> np.ndarray:
    """Token-major grouped 1x1 convolution in float64."""
    groups, w = conv._groups, conv.weight.numpy().astype(np.float64)[:, :, 0]
    xs = np.split(x.astype(np.float64), groups, axis=-1)
    ws = np.split(w, groups, axis=0)
    return np.concatenate([xg @ wg.T for xg, wg in zip(xs, ws)], axis=-1) + conv.bias.numpy()


def _norm_ref(x: np.ndarray, norm: _Norm) -> np.ndarray:
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + norm._epsilon) * norm.weight.numpy() + norm.bias.numpy()


def _gelu_ref(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return 0.5 * x * (1 + erf(x / np.sqrt(2)))


# rows 2 x 7 on 3 threads: blocks of 5, 5, 4; 600 rows on 2 threads: blocks of 256, 256, 88; one group, 2200 rows:
# 1024, 1024, 152; one first-token row; 24 channels: vector tails
@pytest.mark.parametrize("groups,rows,threads", [(1, 7, 3), (4, 7, 3), (4, 300, 2), (1, 1100, 2), (2, 1, 2)])
def test_grouped_linear_add_norm_and_ffn_add_norm(groups, rows, threads):
    """SqueezeBERT's post-attention layer (linear, residual add, norm) and feed-forward block (linear, GELU, linear,
    residual add, norm), each one operator in the fp32 export, against float64 references (GELU with scipy's erf)."""
    rng = np.random.default_rng(8)
    x = rng.normal(size=(2, rows, 24)).astype("float32")
    residual = rng.normal(size=(2, rows, 24)).astype("float32")
    post, inner, outer = _Conv(rng, 24, 24, groups), _Conv(rng, 24, 96, groups), _Conv(rng, 96, 24, groups, 0.1)
    norm = _Norm(rng, 24)
    with _threads(threads):
        hidden = tk.grouped_linear_add_norm(paddle.to_tensor(x), post, paddle.to_tensor(residual), norm).numpy()
        out = tk.grouped_ffn_add_norm(paddle.to_tensor(hidden), inner, outer, norm).numpy()
    want_hidden = _norm_ref(_conv_ref(x, post) + residual, norm)
    np.testing.assert_allclose(hidden, want_hidden, atol=2e-5, rtol=0)
    want = _norm_ref(_conv_ref(_gelu_ref(_conv_ref(hidden, inner)), outer) + hidden, norm)
    np.testing.assert_allclose(out, want, atol=2e-5, rtol=0)


def test_fused_grouped_operators_check_their_inputs():
    rng = np.random.default_rng(9)
    x = paddle.rand([2, 3, 16])
    conv, norm = _Conv(rng, 16, 16, 4), _Norm(rng, 16)
    with pytest.raises(OSError, match="grouped_linear_add_norm: residual shape != the linear layer's output shape"):
        tk.grouped_linear_add_norm(x, conv, paddle.rand([2, 3, 8]), norm)
    with pytest.raises(OSError, match=r"grouped_linear_add_norm: norm weight/bias size != 16 channels"):
        tk.grouped_linear_add_norm(x, conv, x, _Norm(rng, 8))
    inner = _Conv(rng, 16, 32, 4)
    with pytest.raises(OSError, match=r"grouped_ffn_add_norm: outer weight must be \[4, 8, 4 or more\], its bias \[16\]"):
        tk.grouped_ffn_add_norm(x, inner, _Conv(rng, 32, 8, 4), norm)
    with pytest.raises(OSError, match="grouped_ffn_add_norm inner linear: channels 16 not divisible by groups 3"):
        tk.kernels().ct_grouped_ffn_add_norm(x, paddle.rand([3, 5, 8]), paddle.rand([24]), paddle.rand([3, 8, 5]),
                                             paddle.rand([16]), norm.weight, norm.bias, 3, 1e-12)


class _Linear:
    """A Linear's parameters (weight [in, out]), as the operators' Python wrappers read them."""

    def __init__(self, rng, n_in: int, n_out: int, scale: float = 0.3):
        self.weight = paddle.to_tensor(rng.normal(0, scale, (n_in, n_out)).astype("float32"))
        self.bias = paddle.to_tensor(rng.normal(size=n_out).astype("float32"))


# 7 rows on 3 threads: blocks of 3, 3, 1; 2200 rows on 2 threads: 8 of 256 and 152; one first-token row; 24 and 40
# channels: vector tails
@pytest.mark.parametrize("rows,threads", [(7, 3), (1100, 2), (1, 2)])
def test_ffn_relu_add_scale_shift_against_float64(rows, threads):
    """MobileBERT's feed-forward network in evaluation (linear, ReLU, linear, residual add, NoNorm) as one operator,
    against a float64 reference."""
    rng = np.random.default_rng(12)
    x = rng.normal(size=(2, rows, 24)).astype("float32")
    inner, outer, norm = _Linear(rng, 24, 40), _Linear(rng, 40, 24, 0.1), _Norm(rng, 24)
    with _threads(threads):
        out = tk.ffn_relu_add_scale_shift(paddle.to_tensor(x), inner, outer, norm).numpy()
    w1, b1, w2, b2 = (t.numpy().astype(np.float64) for t in (inner.weight, inner.bias, outer.weight, outer.bias))
    hidden = np.maximum(x @ w1 + b1, 0)
    want = (hidden @ w2 + b2 + x) * norm.weight.numpy() + norm.bias.numpy()
    np.testing.assert_allclose(out, want, atol=2e-5, rtol=0)


@pytest.mark.parametrize("rows,threads", [(7, 3), (1100, 2), (1, 2)])
def test_linear_add_scale_shift_against_float64(rows, threads):
    """MobileBERT's attention output or output bottleneck in evaluation (linear, residual add, NoNorm) as one
    operator, against a float64 reference; 24 -> 40 channels (vector tails)."""
    rng = np.random.default_rng(14)
    x, r = rng.normal(size=(2, rows, 24)).astype("float32"), rng.normal(size=(2, rows, 40)).astype("float32")
    dense, norm = _Linear(rng, 24, 40), _Norm(rng, 40)
    with _threads(threads):
        out = tk.linear_add_scale_shift(paddle.to_tensor(x), dense, paddle.to_tensor(r), norm).numpy()
    w, b = dense.weight.numpy().astype(np.float64), dense.bias.numpy().astype(np.float64)
    want = (x @ w + b + r) * norm.weight.numpy() + norm.bias.numpy()
    np.testing.assert_allclose(out, want, atol=2e-5, rtol=0)


def test_linear_add_scale_shift_checks_its_inputs():
    rng = np.random.default_rng(15)
    x, r, dense, norm = paddle.rand([2, 3, 16]), paddle.rand([2, 3, 8]), _Linear(rng, 16, 8), _Norm(rng, 8)
    with pytest.raises(OSError, match=re.escape("linear_add_scale_shift: weight must be [16, 8 or more], its bias [8]")):
        tk.linear_add_scale_shift(x, _Linear(rng, 8, 8), r, norm)
    with pytest.raises(OSError, match="linear_add_scale_shift: residual shape != the linear layer's output shape"):
        tk.linear_add_scale_shift(x, dense, paddle.rand([2, 3, 16]), norm)
    with pytest.raises(OSError, match="linear_add_scale_shift: NoNorm weight/bias size != 8 channels"):
        tk.linear_add_scale_shift(x, dense, r, _Norm(rng, 16))
    with pytest.raises(OSError, match="linear_add_scale_shift must be float32"):
        tk.linear_add_scale_shift(x.astype("float64"), dense, r, norm)


def test_ffn_relu_add_scale_shift_checks_its_inputs():
    rng = np.random.default_rng(13)
    x, inner, outer, norm = paddle.rand([2, 3, 16]), _Linear(rng, 16, 32), _Linear(rng, 32, 16), _Norm(rng, 16)
    with pytest.raises(OSError, match=re.escape("ffn_relu_add_scale_shift: inner weight must be [16, 32 or more], "
                                                "its bias [32]")):
        tk.ffn_relu_add_scale_shift(x, _Linear(rng, 8, 32), outer, norm)
    with pytest.raises(OSError, match=re.escape("ffn_relu_add_scale_shift: outer weight must be [32, 16 or more], "
                                                "its bias [16]")):
        tk.ffn_relu_add_scale_shift(x, inner, _Linear(rng, 32, 8), norm)
    with pytest.raises(OSError, match="ffn_relu_add_scale_shift: NoNorm weight/bias size != 16 channels"):
        tk.ffn_relu_add_scale_shift(x, inner, outer, _Norm(rng, 8))
    with pytest.raises(OSError, match="ffn_relu_add_scale_shift must be float32"):
        tk.ffn_relu_add_scale_shift(x.astype("float64"), inner, outer, norm)


def _bf16_by_group(conv: _Conv) -> paddle.Tensor:
    """The bf16 operators' weight layout: [groups, out / groups, in / groups], in bf16."""
    out = conv.weight.shape[0]
    return conv.weight.reshape([conv._groups, out // conv._groups, -1]).astype("bfloat16")


def _bf16_rounded(conv: _Conv) -> _Conv:
    """``conv`` with its weight rounded to bf16 (the fp32 reference of the bf16 operators)."""
    rounded = _Conv.__new__(_Conv)
    rounded.weight, rounded.bias, rounded._groups = conv.weight.astype("bfloat16").astype("float32"), conv.bias, conv._groups
    return rounded


@pytest.mark.skipif(not BF16_CPU, reason="the bf16 operators run on CPUs with AVX512-BF16")
@pytest.mark.parametrize("groups,rows,threads", [(1, 7, 3), (4, 7, 3), (4, 300, 4)])
def test_bf16_grouped_linear_operator(groups, rows, threads):
    """ct_grouped_linear_bf16 (the bf16 predictor's form, weight in bf16 [groups, out / groups, in / groups]): a bf16
    X gives a bf16 Out, an fp32 X (a first-token slice) an fp32 Out; both the fp32 operator's result on the
    bf16-rounded values within bf16 rounding of the output (one group on 3 threads splits its rows; 4 groups on 4
    threads keep their 600 rows, in GEMMs of 256, 256 and 88); a float32 weight refused."""
    rng = np.random.default_rng(6)
    x = paddle.to_tensor(rng.normal(size=(2, rows, 32)).astype("float32")).astype("bfloat16")
    conv = _Conv(rng, 32, 48, groups, 1.0)
    w = _bf16_by_group(conv)
    want = tk.grouped_linear(x.astype("float32"), _bf16_rounded(conv)).numpy()
    op = tk.kernels().ct_grouped_linear_bf16
    with _threads(threads):
        got16, got32 = op(x, w, conv.bias, groups), op(x.astype("float32"), w, conv.bias, groups)
    assert got16.dtype == paddle.bfloat16 and got32.dtype == paddle.float32
    np.testing.assert_allclose(got32.numpy(), want, rtol=1e-5, atol=1e-4)  # fp32 sums of the same products
    np.testing.assert_allclose(got16.astype("float32").numpy(), want, rtol=2**-8, atol=1e-6)
    with pytest.raises(OSError, match="ct_grouped_linear_bf16: weight must be a bfloat16 CPU tensor"):
        op(x, w.astype("float32"), conv.bias, groups)
    with pytest.raises(OSError, match="ct_grouped_linear_bf16: bias size != out channels 48"):
        op(x, w, conv.bias[:24], groups)


@pytest.mark.skipif(not BF16_CPU, reason="the bf16 operators run on CPUs with AVX512-BF16")
@pytest.mark.parametrize("groups,rows,threads", [(1, 7, 3), (4, 300, 2), (2, 1, 2)])
def test_bf16_fused_grouped_operators(groups, rows, threads):
    """ct_grouped_linear_add_norm_bf16 and ct_grouped_ffn_add_norm_bf16 against the fp32 operators on bf16-rounded
    inputs and weights: Out of X's type (a bf16 residual with an fp32 X, too); within bf16 rounding of the GELU
    outputs (which the outer product reads in bf16) and of Out. 40 channels: vector tails, odd group widths."""
    rng = np.random.default_rng(10)
    x = paddle.to_tensor(rng.normal(size=(2, rows, 40)).astype("float32")).astype("bfloat16")
    residual = paddle.to_tensor(rng.normal(size=(2, rows, 40)).astype("float32")).astype("bfloat16")
    post, inner, outer = _Conv(rng, 40, 40, groups), _Conv(rng, 40, 80, groups), _Conv(rng, 80, 40, groups, 0.1)
    norm = _Norm(rng, 40)
    kernels = tk.kernels()
    x32, r32 = x.astype("float32"), residual.astype("float32")
    with _threads(threads):
        hidden16 = kernels.ct_grouped_linear_add_norm_bf16(x, _bf16_by_group(post), post.bias, residual, norm.weight,
                                                           norm.bias, groups, 1e-12)
        hidden32 = kernels.ct_grouped_linear_add_norm_bf16(x32, _bf16_by_group(post), post.bias, residual,
                                                           norm.weight, norm.bias, groups, 1e-12)
        out16 = kernels.ct_grouped_ffn_add_norm_bf16(hidden16, _bf16_by_group(inner), inner.bias, _bf16_by_group(outer),
                                                     outer.bias, norm.weight, norm.bias, groups, 1e-12)
    assert hidden16.dtype == out16.dtype == paddle.bfloat16 and hidden32.dtype == paddle.float32
    want_hidden = tk.grouped_linear_add_norm(x32, _bf16_rounded(post), r32, norm).numpy()
    np.testing.assert_allclose(hidden32.numpy(), want_hidden, atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(hidden16.astype("float32").numpy(), want_hidden, atol=2**-7 * 4, rtol=0)
    want = tk.grouped_ffn_add_norm(hidden16.astype("float32"), _bf16_rounded(inner), _bf16_rounded(outer), norm).numpy()
    np.testing.assert_allclose(out16.astype("float32").numpy(), want, atol=0.05, rtol=0)
    assert np.abs(out16.astype("float32").numpy() - want).mean() < 0.005
    with pytest.raises(OSError, match=r"ct_grouped_ffn_add_norm_bf16: outer weight must be \["):
        kernels.ct_grouped_ffn_add_norm_bf16(hidden16, _bf16_by_group(inner), inner.bias, _bf16_by_group(inner),
                                             inner.bias, norm.weight, norm.bias, groups, 1e-12)


def _padding_mask(lengths: list[int], keys: int) -> paddle.Tensor:
    """The additive [batch, 1, 1, keys] mask of sequences of ``lengths`` (-1e4 past each)."""
    mask = np.zeros((len(lengths), 1, 1, keys), "float32")
    for i, n in enumerate(lengths):
        mask[i, ..., n:] = -1e4
    return paddle.to_tensor(mask)


@pytest.mark.parametrize("groups,heads,threads", [(4, 4, 2), (2, 6, 3), (1, 2, 1)])
def test_grouped_self_attention_equals_projections_then_attention(groups, heads, threads):
    """ct_grouped_self_attention (one GEMM per sample and group for query, key and value side by side, then
    attention over the group's heads) gives what three ct_grouped_linear and ct_attention give within 2e-6 (the same
    products; bit for bit on the AVX-512 Zen 4 and Zen 5, 9.7e-7 apart on the AVX2-only Zen 3, where oneDNN's sgemm
    sums a 3x wider GEMM in another order), and float64's within 1e-5; padded sequences, tasks not dividing the
    threads."""
    rng = np.random.default_rng(11)
    x = paddle.to_tensor(rng.normal(size=(3, 7, 24)).astype("float32"))
    convs = tuple(_Conv(rng, 24, 24, groups) for _ in range(3))
    mask = _padding_mask([7, 5, 2], 7)
    with _threads(threads):
        got = tk.grouped_self_attention(x, convs, mask, heads).numpy()
        q, k, v = (tk.grouped_linear(x, c) for c in convs)
        want = tk.attention(q, k, v, mask, heads).numpy()
    np.testing.assert_allclose(got, want, atol=2e-6, rtol=0)
    size = 24 // heads
    q, k, v = (_conv_ref(x.numpy(), c).reshape(3, 7, heads, size).transpose(0, 2, 1, 3) for c in convs)
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(size) + mask.numpy().astype(np.float64)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    ref = (probs / probs.sum(-1, keepdims=True) @ v).transpose(0, 2, 1, 3).reshape(3, 7, 24)
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)


def test_grouped_self_attention_checks_its_inputs():
    op = tk.kernels().ct_grouped_self_attention
    x, b, mask = paddle.rand([2, 5, 24]), paddle.rand([72]), paddle.zeros([2, 1, 1, 5])
    with pytest.raises(OSError, match=r"grouped_self_attention: weight of 4 groups of 6 x 18 and 6 heads do not fit "
                                      r"24 channels in groups of whole heads"):
        op(x, paddle.rand([4, 6, 18]), b, mask, 6, 1.0)  # 6 heads in 4 groups
    with pytest.raises(OSError, match="do not fit 24 channels"):
        op(x, paddle.rand([4, 6, 12]), b, mask, 4, 1.0)  # not three projections
    with pytest.raises(OSError, match=r"attention mask must be \[batch, 1, 1 or query, key\]"):
        op(x, paddle.rand([4, 6, 18]), b, paddle.zeros([2, 1, 1, 4]), 4, 1.0)
    with pytest.raises(OSError, match="grouped_self_attention must be float32"):
        op(x, paddle.rand([4, 6, 18]).astype("bfloat16"), b, mask, 4, 1.0)


@pytest.mark.skipif(not BF16_CPU, reason="the bf16 operators run on CPUs with AVX512-BF16")
@pytest.mark.parametrize("groups,heads,threads", [(4, 4, 2), (2, 6, 3)])
def test_bf16_grouped_self_attention(groups, heads, threads):
    """ct_grouped_self_attention_bf16 (weight bf16 [groups, 3 * out / groups, in / groups]): a bf16 X gives a bf16
    Out, an fp32 X an fp32 Out, each exactly what ct_grouped_linear_bf16 for query, key and value and
    ct_attention_bf16 give (the same rounding: the projections in fp32, rounded to bf16 once); within bf16 rounding
    of the fp32 operator's."""
    rng = np.random.default_rng(12)
    x32 = paddle.to_tensor(rng.normal(size=(3, 9, 24)).astype("float32"))
    x16 = x32.astype("bfloat16")
    convs = tuple(_Conv(rng, 24, 24, groups) for _ in range(3))
    mask = _padding_mask([9, 4, 1], 9)
    kernels = tk.kernels()
    weight = paddle.concat([_bf16_by_group(c) for c in convs], axis=1)
    bias = paddle.concat([c.bias.reshape([groups, -1]) for c in convs], axis=1)
    scale = (24 // heads) ** -0.5
    with _threads(threads):
        got16 = kernels.ct_grouped_self_attention_bf16(x16, weight, bias, mask, heads, scale)
        got32 = kernels.ct_grouped_self_attention_bf16(x32, weight, bias, mask, heads, scale)
        qkv = [kernels.ct_grouped_linear_bf16(x32, _bf16_by_group(c), c.bias, groups) for c in convs]
        want32 = kernels.ct_attention_bf16(*qkv, mask, heads, scale, False)
        qkv = [kernels.ct_grouped_linear_bf16(x16, _bf16_by_group(c), c.bias, groups) for c in convs]
        want16 = kernels.ct_attention_bf16(*qkv, mask, heads, scale, False)
    assert got16.dtype == paddle.bfloat16 and got32.dtype == paddle.float32
    np.testing.assert_array_equal(got32.numpy(), want32.numpy())
    np.testing.assert_array_equal(got16.astype("float32").numpy(), want16.astype("float32").numpy())
    fp32 = tk.grouped_self_attention(x32, tuple(_bf16_rounded(c) for c in convs), mask, heads).numpy()
    np.testing.assert_allclose(got32.numpy(), fp32, atol=0.03, rtol=0)
    with pytest.raises(OSError, match="ct_grouped_self_attention_bf16: weight must be a bfloat16 CPU tensor"):
        kernels.ct_grouped_self_attention_bf16(x16, weight.astype("float32"), bias, mask, heads, scale)


def test_grouped_operators_infer_their_output_shapes():
    """In a static program (an export), each grouped operator's output shape: X's with the linear layer's out
    channels, from either weight layout (fp32 [groups, in, out] per group, bf16 [groups, out, in]); the grouped
    self-attention's, X's."""
    kernels = tk.kernels()
    main = paddle.static.Program()
    with paddle.static.program_guard(main, paddle.static.Program()):
        paddle.enable_static()
        try:
            x = paddle.static.data("x", [-1, 5, 32], "float32")
            r = paddle.static.data("r", [-1, 5, 48], "float32")
            b, g, beta = (paddle.static.data(n, [48], "float32") for n in ("b", "g", "beta"))
            w32 = paddle.static.data("w32", [4, 8, 12], "float32")
            w16 = paddle.static.data("w16", [4, 12, 8], "bfloat16")
            outs = [kernels.ct_grouped_linear(x, w32, b, 4), kernels.ct_grouped_linear_bf16(x, w16, b, 4),
                    kernels.ct_grouped_linear_add_norm(x, w32, b, r, g, beta, 4, 1e-12),
                    kernels.ct_grouped_linear_add_norm_bf16(x, w16, b, r, g, beta, 4, 1e-12)]
            m, b96 = paddle.static.data("m", [-1, 1, 1, 5], "float32"), paddle.static.data("b96", [96], "float32")
            attention = [kernels.ct_grouped_self_attention(x, paddle.static.data("wa", [4, 8, 24], "float32"), b96, m,
                                                           4, 1.0),
                         kernels.ct_grouped_self_attention_bf16(x, paddle.static.data("wb", [4, 24, 8], "bfloat16"),
                                                                b96, m, 4, 1.0)]
        finally:
            paddle.disable_static()
    assert [tuple(o.shape) for o in outs] == [(-1, 5, 48)] * 4
    assert [tuple(o.shape) for o in attention] == [(-1, 5, 32)] * 2


def _channel_norm(rng, channels=16):
    from paddlenlp.transformers.squeezebert.modeling import SqueezeBertLayerNorm

    norm = SqueezeBertLayerNorm(channels, epsilon=1e-12)
    norm.weight.set_value(rng.normal(size=channels).astype("float32"))
    norm.bias.set_value(rng.normal(size=channels).astype("float32"))
    return norm


# On 3 threads: (3, 16, 9) one sample per thread; fewer samples than threads, each thread a range of the channels:
# 16 channels in ranges of 5, 5 and 6; 2 channels: one thread none.
@pytest.mark.parametrize("shape", [(3, 16, 9), (1, 16, 77), (2, 2, 5)])
def test_channel_layer_norm_against_squeezeberts(shape):
    rng = np.random.default_rng(4)
    norm = _channel_norm(rng, shape[1])
    x = (rng.normal(size=shape) * 3 + 1).astype("float32")
    grad = paddle.to_tensor(rng.normal(size=shape).astype("float32"))
    results = []
    with _threads(3):
        for fn in (lambda t: tk.channel_layer_norm(t, norm.weight, norm.bias, 1e-12), norm):
            t = paddle.to_tensor(x, stop_gradient=False)
            out = fn(t)
            results.append([out.numpy()] + [g.numpy() for g in paddle.grad([out], [t, norm.weight, norm.bias], [grad])])
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, atol=2e-5)


@pytest.mark.parametrize("groups, shape, threads", [
    (1, (3, 16, 9), 3), (2, (4, 16, 300), 2),  # a sample per thread or more: blocks of positions (300: three)
    (4, (1, 16, 77), 2), (2, (1, 16, 77), 3),  # fewer: the convolution's rows split, then the norm
])
def test_pointwise_conv_add_norm_against_squeezeberts_layer(groups, shape, threads):
    """Convolution, residual add and layer norm in one operator: SqueezeBERT's ConvDropoutLayerNorm in eval mode,
    the inputs left as they were."""
    from paddlenlp.transformers.squeezebert.modeling import ConvDropoutLayerNorm

    rng = np.random.default_rng(5)
    paddle.seed(5)
    layer = ConvDropoutLayerNorm(16, 16, groups, 0.1)
    layer.eval()
    layer.layernorm.weight.set_value(rng.normal(size=16).astype("float32"))
    x, r = (paddle.to_tensor((rng.normal(size=shape) * 3 + 1).astype("float32")) for _ in range(2))
    before = x.numpy(), r.numpy()
    with _threads(threads), paddle.no_grad():
        got = tk.pointwise_conv_add_norm(x, layer.conv1d, r, layer.layernorm).numpy()
        want = layer(x, r).numpy()
    np.testing.assert_allclose(got, want, atol=2e-5)
    np.testing.assert_array_equal(x.numpy(), before[0])
    np.testing.assert_array_equal(r.numpy(), before[1])
    with pytest.raises(OSError, match="residual shape != the convolution's output shape"):
        tk.pointwise_conv_add_norm(x, layer.conv1d, r[:, :, :1], layer.layernorm)


def test_linear_operator_in_evaluation_against_paddles_linear(monkeypatch):
    """A kernel-backed Linear without gradient is one operator (ct_linear), with gradient a product and a bias add,
    both within float rounding of paddle's layer; a bias of the wrong size is refused."""
    rng = np.random.default_rng(5)
    layer = nn.Linear(16, 24)
    layer.bias.set_value(rng.normal(size=24).astype("float32"))
    x = paddle.to_tensor(rng.normal(size=(3, 7, 16)).astype("float32"))
    with paddle.no_grad():
        want = layer(x).numpy()
    tk.use_train_kernels(layer)
    with _threads(2):
        with paddle.no_grad():
            got = tk.linear(x, layer).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(layer(x).numpy(), want, rtol=1e-5, atol=1e-5)  # train mode, with gradient
    calls, real = [], tk.linear
    monkeypatch.setattr(tk, "linear", lambda *args: calls.append(1) or real(*args))
    layer(x)
    layer.eval()
    layer(x)  # eval mode with gradient: the product and bias add
    with paddle.no_grad():
        np.testing.assert_array_equal(layer(x).numpy(), got)
    assert calls == [1]
    bad = nn.Linear(16, 8)
    bad.bias = paddle.create_parameter([9], "float32")
    with pytest.raises(OSError, match="linear: bias size 9 != the weight's 8 outputs"):
        tk.linear(x, bad)


def test_qkv_linears_against_paddles_linears():
    """Three Linears of one input (sizes 8, 8, 12; a 3-D input) as one operator, each within float rounding of
    paddle's; a bias of the wrong size is refused."""
    rng = np.random.default_rng(7)
    paddle.seed(7)
    layers = [nn.Linear(16, n) for n in (8, 8, 12)]
    for layer in layers:
        layer.bias.set_value(rng.normal(size=layer.bias.shape).astype("float32"))
    x = paddle.to_tensor(rng.normal(size=(2, 5, 16)).astype("float32"))
    with _threads(2), paddle.no_grad():
        got = tk.qkv_linears(x, *layers)
        for out, layer in zip(got, layers):
            np.testing.assert_allclose(out.numpy(), layer(x).numpy(), rtol=1e-5, atol=1e-5)
        assert [out.shape for out in got] == [[2, 5, 8], [2, 5, 8], [2, 5, 12]]
        bad = nn.Linear(16, 8)
        bad.bias = paddle.create_parameter([9], "float32")
        with pytest.raises(OSError, match="qkv_linears: bias size 9 != the weight's 8 outputs"):
            tk.qkv_linears(x, layers[0], bad, layers[2])


@pytest.mark.parametrize("groups, shape, threads", [
    (4, (1, 16, 77), 2),  # one block of positions per (sample, group)
    (4, (1, 16, 77), 3),  # three: every thread a share
    (2, (2, 16, 300), 2),  # three blocks of 100 positions (at most 128 each)
    (1, (3, 16, 9), 2),
])
def test_pointwise_ffn_add_norm_against_squeezeberts_layers(groups, shape, threads):
    """The feed-forward block in one operator: SqueezeBERT's ConvActivation (GELU) then ConvDropoutLayerNorm with the
    block's input as residual, eval mode; the input left as it was."""
    from paddlenlp.transformers.squeezebert.modeling import ConvActivation, ConvDropoutLayerNorm

    rng = np.random.default_rng(6)
    paddle.seed(6)
    inner, outer = ConvActivation(16, 40, groups, "gelu"), ConvDropoutLayerNorm(40, 16, groups, 0.1)
    outer.eval()
    outer.layernorm.weight.set_value(rng.normal(size=16).astype("float32"))
    for conv in (inner.conv1d, outer.conv1d):
        conv.bias.set_value(rng.normal(size=conv.bias.shape).astype("float32"))
    x = paddle.to_tensor((rng.normal(size=shape) * 3 + 1).astype("float32"))
    before = x.numpy()
    with _threads(threads), paddle.no_grad():
        got = tk.pointwise_ffn_add_norm(x, inner.conv1d, outer.conv1d, outer.layernorm).numpy()
        want = outer(inner(x), x).numpy()
    np.testing.assert_allclose(got, want, atol=2e-5)
    np.testing.assert_array_equal(x.numpy(), before)
    narrow = ConvDropoutLayerNorm(40, 8, groups, 0.1)
    with pytest.raises(OSError, match=re.escape(f"pointwise_ffn_add_norm: outer weight must be [16, {40 // groups}(, 1)]")):
        tk.pointwise_ffn_add_norm(x, inner.conv1d, narrow.conv1d, outer.layernorm)


def _fused_calls(monkeypatch, name, functions, train=True):
    """How often each of ``functions`` (names in common/train_kernels.py, with their keyword
    arguments) runs in a forward (train mode, or eval mode without gradients) of the quick ``name``
    model with the kernels on."""
    calls = {}
    for fn in functions:
        real = getattr(tk, fn)

        def spy(*args, _real=real, _fn=fn, **kwargs):
            key = _fn + "".join(f" {k}={'tensor' if isinstance(v, paddle.Tensor) else v}"
                                for k, v in sorted(kwargs.items()))
            calls[key] = calls.get(key, 0) + 1
            return _real(*args, **kwargs)
        monkeypatch.setattr(tk, fn, spy)
    _, model, cfg = build_pair(MODELS[name], quick=True)
    tk.use_train_kernels(model)
    model.train() if train else model.eval()
    with paddle.set_grad_enabled(train):
        model(**_padded_batch(cfg["vocab_size"]))
    return model, cfg, calls


def test_convbert_eval_mode_makes_the_train_modes_operator_calls(monkeypatch):
    functions = ["attend", "depthwise_conv", "span_conv"]
    train = dict(_fused_calls(monkeypatch, "conv-bert-small", functions)[2])  # a copy: the spies stay in place
    assert train and _fused_calls(monkeypatch, "conv-bert-small", functions, train=False)[2] == train


def test_bert_linears_run_the_matmul_operator_and_the_fused_ffn(monkeypatch):
    """Every Linear of BERT (query, key, value, attention output and the two FFN layers per layer; pooler and
    classifier) multiplies through ct_matmul, not paddle's matmul (MKL's); the FFN's first adds its bias in
    the fused bias + GELU operator, the others in bias_add."""
    _, cfg, calls = _fused_calls(monkeypatch, "bert-base-uncased", ["matmul", "bias_add"])
    layers = cfg["num_hidden_layers"]
    assert calls == {"matmul": 6 * layers + 2, "bias_add": 5 * layers + 2}


def test_bert_evaluation_runs_the_fused_blocks(monkeypatch):
    """Eval mode without gradients: per layer the query, key and value Linears as one operator, one attention operator,
    the output projection with the residual add and norm as one and the FFN with its residual add and norm as one
    (train mode: the test above)."""
    functions = ["attend", "attention", "layer_norm", "bias_add", "matmul", "linear", "qkv_linears",
                 "grouped_linear_add_norm", "grouped_ffn_add_norm"]
    _, cfg, calls = _fused_calls(monkeypatch, "bert-base-uncased", functions, train=False)
    layers = cfg["num_hidden_layers"]
    assert calls == {"qkv_linears": layers, "attention": layers, "grouped_linear_add_norm": layers,
                     "grouped_ffn_add_norm": layers,
                     "linear": 2, "layer_norm": 1}  # pooler, classifier; the embeddings' norm


@pytest.mark.parametrize("train", [True, False])
def test_convbert_grouped_ffn_evaluation_runs_the_fused_block(monkeypatch, train):
    """conv-bert-medium-small's grouped FFN: one operator with its residual add and norm per layer in eval mode without
    gradients; in train mode a grouped GEMM per linear."""
    _, cfg, calls = _fused_calls(monkeypatch, "conv-bert-medium-small", ["grouped_ffn_add_norm", "grouped_matmul"],
                                 train=train)
    layers = cfg["num_hidden_layers"]
    assert calls == ({"grouped_matmul": 2 * layers} if train else {"grouped_ffn_add_norm": layers})


def test_squeezebert_runs_the_channels_first_operators(monkeypatch):
    import squeezebert.modeling as sm

    model, cfg, calls = _fused_calls(monkeypatch, "squeezebert-uncased",
                                     ["pointwise_conv", "channel_layer_norm", "softmax_dropout"])
    layers = cfg["num_hidden_layers"]
    # per layer: q, k, v and two convolution + norm blocks; the intermediate convolution fused with GELU
    assert calls == {"pointwise_conv": 5 * layers, "pointwise_conv gelu=True": layers,
                     "channel_layer_norm": 2 * layers, "softmax_dropout": layers}
    types = {type(layer) for layer in model.sublayers()}
    assert {sm.TrainPointwiseConv1D, sm.TrainConvActivation, sm.TrainLayerNorm, sm.TrainSelfAttention} <= types
    tk.use_train_kernels(model, False)
    assert {sm.PointwiseConv1D, sm._pm.SqueezeBertLayerNorm} <= {type(layer) for layer in model.sublayers()}


SQUEEZEBERT_EVAL_OPS = ["grouped_qkv_attention", "attention", "pointwise_conv", "channel_layer_norm",
                        "pointwise_conv_add_norm", "pointwise_ffn_add_norm"]


@pytest.mark.parametrize("threads, attention", [
    (2, {"grouped_qkv_attention": 1}),
    # fewer (sample, group) tasks (3 x 4) than threads: the convolutions, which split rows, then attention
    (13, {"pointwise_conv": 3, "attention channels_first=True": 1}),
])
def test_squeezebert_evaluation_operators(monkeypatch, threads, attention):
    """Eval mode without gradients: query, key, value and attention as one operator where the (sample, group) tasks
    are at least the threads; the post-attention convolution with its residual add and norm, and the feed-forward
    block with its residual add and norm."""
    import squeezebert.modeling as sm

    monkeypatch.setattr(sm, "math_threads", lambda: threads)
    _, cfg, calls = _fused_calls(monkeypatch, "squeezebert-uncased", SQUEEZEBERT_EVAL_OPS, train=False)
    layers = cfg["num_hidden_layers"]
    want = {"pointwise_conv_add_norm": layers, "pointwise_ffn_add_norm": layers}
    for op, count in attention.items():
        want[op] = want.get(op, 0) + count * layers
    assert calls == want


@pytest.mark.parametrize("name, op", [("bert-base-uncased", "attention"), ("mobilebert-uncased", "attention"),
                                      ("conv-bert-small", "attention"), ("squeezebert-uncased", "grouped_qkv_attention")])
def test_evaluation_runs_attention_as_one_operator(monkeypatch, name, op):
    """Eval mode without gradients: one attention operator per layer (SqueezeBERT's with its query, key and
    value), no softmax + dropout operator."""
    _, cfg, calls = _fused_calls(monkeypatch, name, ["attention", "softmax_dropout", "grouped_qkv_attention"],
                                 train=False)
    assert calls == {op: cfg["num_hidden_layers"]}


def test_mobilebert_runs_nonorm_attention_and_bias_relu_operators(monkeypatch):
    _, cfg, calls = _fused_calls(monkeypatch, "mobilebert-uncased", ["scale_shift", "bias_relu", "attend"])
    layers, ffns = cfg["num_hidden_layers"], cfg["num_feedforward_networks"]
    # NoNorms per layer: 2 bottleneck inputs (no residual); the attention output, one per extra FFN,
    # the output's own and its bottleneck's (residual added inside); the embeddings' one. ReLU after
    # every FFN's first dense.
    assert calls == {"scale_shift": 2 * layers + 1, "scale_shift residual=tensor": layers * (1 + (ffns - 1) + 2),
                     "bias_relu": layers * ffns, "attend": layers}


def test_mobilebert_evaluation_runs_each_ffn_as_one_operator(monkeypatch):
    """Eval mode without gradients: every feed-forward network (the extra ones and the layer's own intermediate and
    output) with its residual add and NoNorm as one operator, and so the attention output and the output bottleneck
    with theirs; the NoNorms without a residual as in train mode."""
    functions = ["scale_shift", "bias_relu", "attend", "ffn_relu_add_scale_shift", "linear_add_scale_shift"]
    _, cfg, calls = _fused_calls(monkeypatch, "mobilebert-uncased", functions, train=False)
    layers, ffns = cfg["num_hidden_layers"], cfg["num_feedforward_networks"]
    assert ffns > 1
    assert calls == {"scale_shift": 2 * layers + 1, "linear_add_scale_shift": 2 * layers,
                     "ffn_relu_add_scale_shift": layers * ffns, "attend": layers}


def test_mobilebert_evaluation_with_attentions_takes_paddlenlps_layer():
    """output_attentions: the layers' own forward (which returns the attentions), the same logits as without."""
    _, model, cfg = build_pair(MODELS["mobilebert-uncased"], quick=True)
    tk.use_train_kernels(model)
    batch = _padded_batch(cfg["vocab_size"])
    with paddle.no_grad():
        plain = model(**batch).numpy()
        logits, attentions = model(**batch, output_attentions=True)
    assert len(attentions) == cfg["num_hidden_layers"]
    assert attentions[0].shape == [3, cfg["num_attention_heads"], 12, 12]
    np.testing.assert_allclose(logits.numpy(), plain, atol=1e-6, rtol=0)


def test_depthwise_and_span_convolutions_against_paddle():
    """ConvBERT's two operators and their gradients against paddle ops (conv1d; pad, K slices, softmax, matmul)."""
    rng = np.random.default_rng(5)
    batch, length, heads, size, kernel = 2, 11, 3, 4, 5
    x = rng.normal(size=(batch, length, heads * size)).astype("float32")
    w = rng.normal(size=(heads * size, 1, kernel)).astype("float32")
    z = rng.normal(size=(batch, length, heads * kernel)).astype("float32")
    grad = paddle.to_tensor(rng.normal(size=(batch, length, heads * size)).astype("float32"))

    def span_reference(v, logits):
        probs = F.softmax(logits.reshape([-1, kernel, 1]), axis=1)
        padded = F.pad(v, [kernel // 2, kernel // 2], data_format="NLC")
        windows = paddle.stack([padded[:, i:i + length] for i in range(kernel)], axis=-1)
        return paddle.matmul(windows.reshape([-1, size, kernel]), probs).reshape(v.shape)

    cases = {
        "depthwise_conv": (lambda a, b: tk.depthwise_conv(a, b, kernel // 2),
                           lambda a, b: F.conv1d(a, b, padding=kernel // 2, groups=heads * size, data_format="NLC"),
                           (x, w)),
        "span_conv": (lambda a, b: tk.span_conv(a, b, heads, kernel // 2), span_reference, (x, z)),
    }
    for name, (ours, theirs, arrays) in cases.items():
        results = []
        for fn in (ours, theirs):
            ts = [paddle.to_tensor(a, stop_gradient=False) for a in arrays]
            out = fn(*ts)
            results.append([out.numpy()] + [g.numpy() for g in paddle.grad([out], ts, [grad])])
        for got, want in zip(*results):
            np.testing.assert_allclose(got, want, atol=2e-5, err_msg=name)


def test_retain_freed_memory_applies_on_glibc():
    assert retain_freed_memory() is True


def test_trainer_falls_back_to_paddles_kernels_when_the_build_fails(monkeypatch):
    from types import SimpleNamespace

    from common.train_glue import speed_up_on_cpu

    def broken():
        raise RuntimeError("g++: not found")

    monkeypatch.setattr(tk, "kernels", broken)
    _, model, _ = build_pair(MODELS["tinybert-4l-312d"], quick=True)
    args = SimpleNamespace(train_kernels=True, device="cpu")
    with pytest.warns(UserWarning, match=r"did not build \(g\+\+: not found\); running with paddle's own kernels"):
        speed_up_on_cpu(model, args)
    assert not any(type(layer) in tk.UNSWAPS for layer in model.sublayers())
    speed_up_on_cpu(model, SimpleNamespace(train_kernels=False, device="cpu"))  # off: untouched
    assert not any(type(layer) in tk.UNSWAPS for layer in model.sublayers())


@pytest.mark.parametrize("device, switched", [("cpu", True), ("gpu", False)])
def test_cpu_runs_switch_to_the_kernels_for_evaluation_too(device, switched):
    """An evaluation- or prediction-only run (no --do_train) on CPU gets the kernel-backed layers."""
    from types import SimpleNamespace

    from common.train_glue import speed_up_on_cpu

    _, model, _ = build_pair(MODELS["tinybert-4l-312d"], quick=True)
    speed_up_on_cpu(model, SimpleNamespace(do_train=False, do_eval=True, train_kernels=True, device=device))
    assert any(type(layer) in tk.UNSWAPS for layer in model.sublayers()) is switched


def test_kernels_apply_after_a_static_export(tmp_path):
    """export_static leaves no instance-level forward behind, so the class switch takes effect."""
    from common.inference import export_static

    _, model, _ = build_pair(MODELS["tinybert-4l-312d"], quick=True)
    export_static(model, str(tmp_path))
    assert not [n for n, layer in model.named_sublayers(include_self=True) if "forward" in layer.__dict__]
    tk.use_train_kernels(model)
    attention = next(layer for layer in model.sublayers() if isinstance(layer, paddle.nn.MultiHeadAttention))
    assert attention.forward.__func__ is tk.MultiHeadAttention.forward


def test_kernels_refuse_a_layer_whose_forward_is_set_on_the_instance():
    _, model, _ = build_pair(MODELS["tinybert-4l-312d"], quick=True)
    layer = next(layer for layer in model.sublayers() if type(layer) is paddle.nn.LayerNorm)
    layer.forward = lambda x: x
    with pytest.raises(RuntimeError, match="forward is set on the instance"):
        tk.use_train_kernels(model)


def test_convbert_runs_the_convolution_and_attention_operators(monkeypatch):
    """Per layer: attention, the separable convolution's depthwise half and its pointwise product through oneDNN
    (ct_matmul with the [out, in] weight; paddle's matmul is MKL's), the span convolution."""
    _, cfg, calls = _fused_calls(monkeypatch, "conv-bert-small", ["attend", "depthwise_conv", "span_conv", "matmul"])
    layers = cfg["num_hidden_layers"]
    # matmul per layer: q, k, v, the attention's output, the span convolution's kernel and value projections, the
    # FFN's two Linears; then the embedding projection and the classifier head's two
    assert calls == {"attend": layers, "depthwise_conv": layers, "span_conv": layers,
                     "matmul": 8 * layers + 3, "matmul transpose_weight=True": layers}


def _doubled_in_export(x):
    return x * 2.0 if tk.in_export() else x


class _ExportProbe(paddle.nn.Layer):
    def forward(self, x):
        return _doubled_in_export(x)


def test_in_export_reads_the_current_block_in_converted_functions():
    """A module-level function converted by to_static sees each export_ops block's flag, not the one of
    the first conversion in the process (a converted copy of in_export kept that)."""
    from paddle.static import InputSpec

    for enabled in (True, False, True):
        static = paddle.jit.to_static(_ExportProbe(), input_spec=[InputSpec([2], "float32")], full_graph=True)
        with tk.export_ops(enabled):
            ops = {op.type for op in static.forward.concrete_program.main_program.global_block().ops}
        assert ("scale" in ops) is enabled, (enabled, ops)
