"""Exports of classifiers that compute the last encoder layer at [CLS] only (common/first_token.py)."""
import collections

import numpy as np
import pytest
import torch
import transformers
from paddle import nn

from common.errors import UserError
from common.first_token import FirstTokenEncoderLayer, at_first_token, first_token_layer
from common.flops import forward_flops
from tiny_checkpoints import padded_batch, randomize, save_tiny


@pytest.fixture(scope="module")
def bert_dirs(tmp_path_factory):
    """(HF classifier dir, its converted paddle dir): 3 layers, so two stay whole."""
    from common.convert import convert_checkpoint
    from ofa_bert.spec import SPEC

    root = tmp_path_factory.mktemp("first_token")
    torch_dir = save_tiny(str(root / "torch"), "bert", head="classification", num_hidden_layers=3)
    convert_checkpoint(torch_dir, str(root / "paddle"), SPEC, quiet=True)
    return torch_dir, str(root / "paddle")


def _first_token_readers(prefix: str, kept: bool = True) -> list[str]:
    """The operators reading a slice of the first position in the exported program: [:, :1] (``kept``:
    the length axis kept) or [:, 0]."""
    from common.inference import _ops, _program

    desc = _program(prefix + ".pdmodel")  # the ops point into it
    ops = list(_ops(desc))
    sliced = {op.output("Out")[0] for op in ops if op.type() == "slice" and op.attr("axes") == [1]
              and op.attr("starts") == [0] and op.attr("ends") == [1] and bool(op.attr("decrease_axis")) != kept}
    return sorted(op.type() for op in ops if sliced & set(op.input_arg_names()))


def test_bert_classifier_export_runs_the_last_layer_at_cls(bert_dirs, tmp_path):
    """The last layer at [CLS] only, without key or value projections; HF's logits within 1e-5 on a padded
    batch with both token types, as the whole-layer export gives them; the model is left as it was."""
    from common.inference import Predictor, PredictorOptions, export_static, op_counts
    from common.models import load_model_dir

    torch_dir, paddle_dir = bert_dirs
    model = load_model_dir(paddle_dir)
    cls_only = export_static(model, str(tmp_path / "cls"))
    whole = export_static(model, str(tmp_path / "whole"), first_token=False)
    # [CLS] ([:, 0]) goes into the last layer's query projection and residual (and the pooler); that layer
    # projects no keys or values: the scores and the weighted sum read its input, 4 small matmuls (query
    # mapped through the key weights, scores, weighted sum, value weights) in place of attention's operator
    # and the 2 projections
    assert _first_token_readers(cls_only, kept=False) == ["elementwise_add", "matmul_v2", "matmul_v2"]
    assert _first_token_readers(whole, kept=False) == ["matmul_v2"]
    assert _first_token_readers(cls_only) == _first_token_readers(whole) == []
    ops = {prefix: op_counts(prefix) for prefix in (cls_only, whole)}
    assert ops[cls_only]["ct_attention"] == 2 and ops[whole]["ct_attention"] == 3
    assert ops[cls_only]["matmul_v2"] == ops[whole]["matmul_v2"] + 2
    # the dygraph model is left as it was: no class or forward of the export's stays on its last layer
    layers = model.bert.encoder.layers
    assert all(type(layer) is nn.TransformerEncoderLayer and "forward" not in layer.__dict__ for layer in layers)

    batch = padded_batch(4, 19, seed=11)
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(torch_dir).eval()
    with torch.no_grad():
        ref = hf(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits.numpy()
    for prefix in (cls_only, whole):
        for onednn in (True, False):
            got = Predictor(prefix, PredictorOptions(threads=2, onednn=onednn))(batch)[0]
            np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kept_heads", [4, 3])  # 3: an OFA sub-model's narrowed attention (head size kept)
@pytest.mark.parametrize("per_query_mask", [False, True])
def test_first_token_attention_is_the_attention_at_the_first_token(kept_heads, per_query_mask):
    """Against paddle's own MultiHeadAttention at the first query, with padding masked: within float error."""
    import paddle

    from common.first_token import first_token_attention

    paddle.seed(3)
    att = nn.MultiHeadAttention(32, 4)
    att.eval()
    if kept_heads < 4:  # as ofa_bert/submodel.shrink_attention leaves it
        width = kept_heads * 8
        att.q_proj, att.k_proj, att.v_proj = (nn.Linear(32, width) for _ in range(3))
        att.out_proj, att.num_heads = nn.Linear(width, 32), kept_heads
    src = paddle.randn([3, 7, 32])
    keep = paddle.to_tensor(np.array([[1] * 7, [1] * 4 + [0] * 3, [1, 1] + [0] * 5], dtype="float32"))
    mask = ((1.0 - keep) * -1e4).reshape([3, 1, 1, 7])
    if per_query_mask:
        mask = mask.expand([3, 1, 7, 7])
    with paddle.no_grad():
        ref = att(src[:, :1], src, src, mask[:, :, :1])[:, 0]
        got = first_token_attention(att, src[:, 0], src, mask)
    np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=0, atol=2e-6)
    assert float(paddle.abs(ref).max()) > 0.1


def test_only_post_norm_bert_classifiers_qualify(bert_dirs):
    from common.models import load_model_dir

    model = load_model_dir(bert_dirs[1])
    layer = model.bert.encoder.layers[-1]
    assert first_token_layer(model) is layer
    assert first_token_layer(model.bert) is None  # a base model returns every token
    with at_first_token(model, enabled=False) as applied:
        assert not applied and type(layer) is nn.TransformerEncoderLayer
    with pytest.raises(RuntimeError, match="boom"), at_first_token(model) as applied:
        assert applied and type(layer) is FirstTokenEncoderLayer
        raise RuntimeError("boom")
    assert type(layer) is nn.TransformerEncoderLayer
    layer.normalize_before = True  # a pre-norm layer's [CLS] output is another function
    try:
        assert first_token_layer(model) is None
    finally:
        layer.normalize_before = False


@pytest.mark.parametrize("seq", [64, 128])
def test_first_token_flops_closed_form(seq):
    """BERT-base: 11 whole layers; the last one's query, key-mapped query, value map, output projection and
    FFN at one token, and 12 heads' scores and weighted sums over ``seq`` positions at width 768."""
    cfg = dict(model_type="bert", hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12)
    h, i = 768, 3072
    whole = 2 * (4 * h * h + 2 * h * i) * seq + 4 * seq * seq * h
    last = 2 * (4 * h * h + 2 * h * i) + 12 * 4 * seq * h
    assert forward_flops(cfg, seq) == 12 * whole
    assert forward_flops(cfg, seq, first_token=True) == 11 * whole + last
    with pytest.raises(UserError, match="no FLOP count for model_type 'gpt2'"):
        forward_flops(dict(cfg, model_type="gpt2"), seq, first_token=True)


def test_squeezebert_first_token_flops():
    """SqueezeBERT's last layer: grouped K and V over every token, the rest at one."""
    cfg = dict(model_type="squeezebert", hidden_size=768, intermediate_size=3072, num_hidden_layers=12, q_groups=4,
               k_groups=4, v_groups=4, post_attention_groups=1, intermediate_groups=4, output_groups=4)
    h, i, seq = 768, 3072, 128

    def layer(q):
        return 2 * (q * h * h // 4 + 2 * seq * h * h // 4 + q * h * h + 2 * q * h * i // 4) + 4 * q * seq * h
    assert forward_flops(cfg, seq) == 12 * layer(seq)
    assert forward_flops(cfg, seq, first_token=True) == 11 * layer(seq) + layer(1)


def test_export_cli_full_last_layer(bert_dirs, tmp_path):
    """export.py records which it wrote; --full_last_layer keeps the whole layer."""
    import json

    import export
    from common.inference import op_counts

    for flag, at_cls in (([], True), (["--full_last_layer"], False)):
        out = tmp_path / str(at_cls)
        assert export.main(["--model_dir", bert_dirs[1], "--output_dir", str(out), *flag]) == 0
        assert json.loads((out / "export.json").read_text())["last_layer_at_cls"] is at_cls
        assert op_counts(str(out / "inference"))["ct_attention"] == 3 - at_cls  # the last layer's: matmuls


def _four_exports(tmp_path, model_type: str, seed: int, prepare=None, **config) -> tuple:
    """(converted tiny classifier, {(custom_ops, first_token): export prefix}); each export's logits are
    HF's within 1e-5 on a padded batch with both token types. ``prepare``: called on the HF checkpoint's
    directory before conversion."""
    import importlib

    from common.bench_models import SPECS
    from common.convert import convert_checkpoint
    from common.inference import Predictor, PredictorOptions, export_static
    from common.models import load_model_dir

    torch_dir = save_tiny(str(tmp_path / "torch"), model_type, head="classification", **config)
    if prepare is not None:
        prepare(torch_dir)
    convert_checkpoint(torch_dir, str(tmp_path / "paddle"), importlib.import_module(SPECS[model_type]).SPEC, quiet=True)
    model = load_model_dir(str(tmp_path / "paddle"))
    batch = padded_batch(3, 11, seed=seed)
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(torch_dir).eval()
    with torch.no_grad():
        ref = hf(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits.numpy()
    prefixes = {}
    for custom_ops in (True, False):
        for first_token in (True, False):
            prefix = export_static(model, str(tmp_path / f"{custom_ops}{first_token}"), custom_ops, first_token)
            got = Predictor(prefix, PredictorOptions(threads=2))(batch)[0]
            np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
            prefixes[custom_ops, first_token] = prefix
    return model, prefixes


@pytest.mark.parametrize("groups", [
    dict(q_groups=2, k_groups=2, v_groups=2, post_attention_groups=1, intermediate_groups=2, output_groups=2),
    dict(q_groups=8, k_groups=1, v_groups=4, post_attention_groups=2, intermediate_groups=4, output_groups=1),
])
def test_squeezebert_classifier_export_runs_the_last_layer_at_cls(groups, tmp_path):
    """squeezebert/modeling.py's encoder: the last layer's queries and residual at [CLS], per group (this
    repo's operators) and batched (portable, its attention heads first); HF's logits within 1e-5 either way, every
    parameter drawn at trained size (HF's init zeroes the biases, four of which the batched form moves; with
    save_tiny's drawn biases alone a dropped query bias stayed within 1e-5)."""
    from common.inference import _ops, _program

    model, prefixes = _four_exports(tmp_path, "squeezebert", 3, randomize, embedding_size=32, **groups)
    readers = {key: (_first_token_readers(prefix), _first_token_readers(prefix, False))
               for key, prefix in prefixes.items()}
    encoder = model.squeezebert.encoder
    assert type(encoder).__name__ == "SqueezeBertEncoder" and "forward" not in encoder.__dict__
    # per group: [:, :1] into the query's grouped linear operator and, as the residual, the post-attention's
    assert readers[True, True] == (["ct_grouped_linear", "ct_grouped_linear_add_norm"], ["matmul_v2"])  # and the pooler's [:, 0]
    # batched: [:, 0] of the token-major rows into the query's groups (a reshape) and the residual; the
    # pooler's into its matmul
    assert readers[False, True] == ([], ["elementwise_add", "matmul_v2", "reshape2"])
    assert readers[True, False] == readers[False, False] == ([], ["matmul_v2"])
    # batched: query, key and value heads first, the attention in that layout; one transpose of each layer's
    # context back to tokens, none moving three axes (the 5-D one onnxruntime ran slowest)
    for first_token in (True, False):
        desc = _program(prefixes[False, first_token] + ".pdmodel")
        axes = collections.Counter(tuple(op.attr("axis")) for op in _ops(desc) if op.type() == "transpose2")
        assert axes[1, 2, 0, 3] == len(encoder.layers) and not [axis for axis in axes if len(axis) > 4]
        if groups["q_groups"] == groups["k_groups"] == groups["v_groups"] == groups["intermediate_groups"]:
            # per layer one split of its input for query, key and value (the [CLS] layer: one for its query, one
            # for keys and values); the feed-forward block's split and join per sequence ([batch, groups, length,
            # channels / groups], its two matmuls against 3-D weights), the [CLS] layer's rows as one sequence
            layers = len(encoder.layers)
            assert axes[1, 0, 2] == layers + first_token and axes[0, 2, 1, 3] == 2 * layers
            block = desc.block(0)
            ranks = collections.Counter(tuple(len(block.var(op.input(side)[0].encode()).shape()) for side in "XY")
                                        for op in _ops(desc) if op.type() == "matmul_v2")
            assert ranks[4, 3] == 2 * layers


def test_mobilebert_classifier_export_runs_the_last_layer_at_cls(tmp_path):
    """mobilebert/fixes.py's FirstTokenLayer: the last layer's query, attention residual and output at [CLS];
    HF's logits within 1e-5 either way (this repo's operators and portable)."""
    model, prefixes = _four_exports(tmp_path, "mobilebert", 4, embedding_size=16, intra_bottleneck_size=16,
                                    true_hidden_size=16, intermediate_size=32, num_feedforward_networks=2)
    readers = {key: _first_token_readers(prefix) for key, prefix in prefixes.items()}
    last = model.mobilebert.encoder.layers[-1]
    assert type(last).__name__ == "MobileBertLayer" and "forward" not in last.__dict__
    for custom_ops in (True, False):
        # beyond the trigram embedding's slices: [:, :1] of the query bottleneck into the query projection, of
        # the bottlenecked input into the attention's residual, of the layer's input into the output's
        extra = collections.Counter(readers[custom_ops, True]) - collections.Counter(readers[custom_ops, False])
        assert sum(extra.values()) == 3, readers


def test_convbert_first_token_flops():
    """ConvBERT-base's last layer: BERT's attention at one token (6 heads over 768-wide inputs), the
    separable convolution and value projection over the first 5 positions, the weighted sum over 5 offsets."""
    cfg = dict(model_type="convbert", hidden_size=768, embedding_size=768, intermediate_size=3072,
               num_attention_heads=12, num_hidden_layers=12, head_ratio=2, conv_kernel_size=9, num_groups=1)
    h, a, i, k, seq = 768, 384, 3072, 9, 128
    whole = forward_flops(cfg, seq) // 12
    last = (2 * (3 * h * a + h * h + 2 * h * i + a * 6 * k) + 6 * 4 * seq * h
            + 5 * 2 * (h * k + 2 * h * a) + 2 * a * 5)
    assert forward_flops(cfg, seq, first_token=True) == 11 * whole + last
    assert round(1 - forward_flops(cfg, seq, first_token=True) / forward_flops(cfg, seq), 2) == 0.08


@pytest.mark.parametrize("config", [dict(conv_kernel_size=9), dict(conv_kernel_size=3, num_hidden_layers=3),
                                    dict(conv_kernel_size=9, num_groups=2)])  # conv-bert-medium-small's grouped FFN
def test_convbert_classifier_export_runs_the_last_layer_at_cls(config, tmp_path):
    """convbert/modeling.py's FirstTokenEncoderLayer: HF's logits within 1e-5 with this repo's operators and
    portable, also on sequences shorter than the span convolution's reach (3 tokens, kernel 9); the last
    layer's span convolution leaves the export (its 5-position form is paddle's matmuls). A grouped FFN is one
    operator in the export with this repo's operators (the [CLS]-only layer's excepted), paddle's in the portable."""
    from common.inference import Predictor, PredictorOptions, op_counts

    model, prefixes = _four_exports(tmp_path, "convbert", 5, randomize, embedding_size=16, **config)
    last = model.convbert.encoder.layers[-1]
    assert type(last).__name__ == "EncoderLayer" and "forward" not in last.__dict__
    layers = len(model.convbert.encoder.layers)
    assert [op_counts(prefixes[True, at_cls])["ct_span_conv"] for at_cls in (True, False)] == [layers - 1, layers]
    ffns = [op_counts(prefixes[custom, at_cls])["ct_grouped_ffn_add_norm"] for custom in (True, False)
            for at_cls in (True, False)]
    assert ffns == ([layers - 1, layers, 0, 0] if config.get("num_groups", 1) > 1 else [0, 0, 0, 0])
    short = padded_batch(2, 3, seed=6)
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "torch")).eval()
    with torch.no_grad():
        ref = hf(**{k: torch.from_numpy(v) for k, v in short.items()}).logits.numpy()
    for prefix in prefixes.values():
        np.testing.assert_allclose(Predictor(prefix, PredictorOptions(threads=2))(short)[0], ref, atol=1e-5, rtol=0)
