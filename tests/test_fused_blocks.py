"""fp32 paddle.inference runs post-norm blocks as this repo's fused operators (common.inference.fuse_blocks)."""
import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
from paddle import nn

from common.bench_models import MODELS, Model, build_pair
from common import train_kernels as tk
from common.inference import (ADD_SCALE_SHIFT, FFN_ADD_NORM, FFN_ADD_SCALE_SHIFT, LINEAR_ADD_NORM,
                              LINEAR_ADD_SCALE_SHIFT, Predictor, PredictorOptions, _ops, _program, export_static,
                              fuse_blocks, optimized_op_counts, padded_width, run_dygraph)
from tiny_checkpoints import padded_batch


@pytest.mark.parametrize("model,first_token", [("tinybert-4l-312d", False), ("tinybert-4l-312d", True),
                                               ("conv-bert-small", False)])
def test_fp32_predictor_fuses_the_post_norm_blocks(model, first_token, tmp_path):
    """Every layer's post-attention block and feed-forward block, the [CLS]-only last layer's too, run as one
    operator each (3 fcs and 2 layer norms fewer per layer), with the outputs of paddle's operators and of
    dygraph on a padded batch with both token types; ``fuse_blocks=False`` keeps paddle's."""
    _, net, config = build_pair(MODELS[model], quick=True)
    prefix = export_static(net, str(tmp_path / "static"), first_token=first_token)
    layers = config["num_hidden_layers"]
    fused = optimized_op_counts(prefix, PredictorOptions(threads=2), str(tmp_path / "fused"))
    plain = optimized_op_counts(prefix, PredictorOptions(threads=2, fuse_blocks=False), str(tmp_path / "plain"))
    assert fused[LINEAR_ADD_NORM] == fused[FFN_ADD_NORM] == layers
    assert LINEAR_ADD_NORM not in plain and FFN_ADD_NORM not in plain
    assert plain["fc"] - fused["fc"] == 3 * layers and plain["layer_norm"] - fused["layer_norm"] == 2 * layers
    batch = padded_batch(3, 13, seed=4, vocab=config["vocab_size"])
    want = run_dygraph(net, batch)[0]
    got = Predictor(prefix, PredictorOptions(threads=2))(batch)[0]
    unfused = Predictor(prefix, PredictorOptions(threads=2, fuse_blocks=False))(batch)[0]
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got, unfused, atol=1e-5, rtol=0)


@pytest.mark.parametrize("first_token", [False, True])
def test_fp32_predictor_fuses_mobileberts_nonorm_blocks(first_token, tmp_path):
    """Every feed-forward network of every layer (the [CLS]-only last layer's too) with its residual add and NoNorm
    as one operator (2 fcs and a ct_add_scale_shift_ fewer each), and so each layer's attention output and output
    bottleneck (an fc and a ct_add_scale_shift_ fewer each): no ct_add_scale_shift_ left; the outputs of paddle's
    operators and of dygraph on a padded batch with both token types."""
    _, net, config = build_pair(MODELS["mobilebert-uncased"], quick=True)
    prefix = export_static(net, str(tmp_path / "static"), first_token=first_token)
    layers = config["num_hidden_layers"]
    ffns = layers * config["num_feedforward_networks"]
    fused = optimized_op_counts(prefix, PredictorOptions(threads=2), str(tmp_path / "fused"))
    plain = optimized_op_counts(prefix, PredictorOptions(threads=2, fuse_blocks=False), str(tmp_path / "plain"))
    assert fused[FFN_ADD_SCALE_SHIFT] == ffns and FFN_ADD_SCALE_SHIFT not in plain
    assert fused[LINEAR_ADD_SCALE_SHIFT] == 2 * layers and LINEAR_ADD_SCALE_SHIFT not in plain
    assert plain["fc"] - fused["fc"] == 2 * ffns + 2 * layers
    assert plain[ADD_SCALE_SHIFT] == ffns + 2 * layers and not fused[ADD_SCALE_SHIFT]
    batch = padded_batch(3, 13, seed=4, vocab=config["vocab_size"])
    got = Predictor(prefix, PredictorOptions(threads=2))(batch)[0]
    np.testing.assert_allclose(got, run_dygraph(net, batch)[0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(got, Predictor(prefix, PredictorOptions(threads=2, fuse_blocks=False))(batch)[0],
                               atol=1e-5, rtol=0)


def _weight_shapes(pdmodel: str) -> dict[str, list[list[int]]]:
    """The shapes of the weights each of this repo's fused operators reads in program ``pdmodel``, by type."""
    desc = _program(pdmodel)
    shapes = {}
    for op in _ops(desc):
        if op.type() in (LINEAR_ADD_NORM, FFN_ADD_NORM, FFN_ADD_SCALE_SHIFT, LINEAR_ADD_SCALE_SHIFT):
            shapes.setdefault(op.type(), []).extend(
                desc.block(0).find_var(op.input(slot)[0].encode()).shape()
                for slot in ("W", "W1", "W2") if slot in op.input_names())
    return shapes


@pytest.mark.parametrize("model_type,config,want", [
    ("bert", dict(hidden_size=256, num_attention_heads=4, intermediate_size=512),
     {LINEAR_ADD_NORM: [[1, 256, 272]] * 2, FFN_ADD_NORM: [[1, 256, 528], [1, 512, 272]] * 2}),
    ("mobilebert", dict(hidden_size=64, embedding_size=16, intra_bottleneck_size=32, true_hidden_size=32,
                        intermediate_size=256, num_attention_heads=4, num_feedforward_networks=2),
     {FFN_ADD_SCALE_SHIFT: [[32, 272], [256, 32]] * 4, LINEAR_ADD_SCALE_SHIFT: [[32, 32], [32, 64]] * 2}),
    ("squeezebert", dict(hidden_size=256, embedding_size=256, num_attention_heads=4, intermediate_size=1024),
     {LINEAR_ADD_NORM: [[1, 256, 272]] * 2, FFN_ADD_NORM: [[4, 64, 272], [4, 256, 64]] * 2}),
])
def test_fp32_predictor_pads_weight_rows_of_256_values(model_type, config, want, tmp_path):
    """The fused operators read weights whose rows are a multiple of 256 values with 16 zeros after each
    (:func:`padded_width`; paddle's constant folding leaves no pad operator), and the outputs stay those of dygraph
    and of paddle's operators on a padded batch with both token types."""
    model = Model("padded", model_type, dict(config, num_hidden_layers=2, vocab_size=128, max_position_embeddings=64),
                  {})
    _, net, _ = build_pair(model, quick=False)
    prefix = export_static(net, str(tmp_path / "static"), first_token=False)
    ops = optimized_op_counts(prefix, PredictorOptions(threads=2), str(tmp_path / "fused"))
    assert "pad" not in ops or model_type == "mobilebert" and ops["pad"] == 2  # its export pads its trigram input
    assert _weight_shapes(str(tmp_path / "fused" / "_optimized.pdmodel")) == want
    batch = padded_batch(3, 13, seed=4, vocab=128)
    got = Predictor(prefix, PredictorOptions(threads=2))(batch)[0]
    np.testing.assert_allclose(got, run_dygraph(net, batch)[0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(got, Predictor(prefix, PredictorOptions(threads=2, fuse_blocks=False))(batch)[0],
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("cols,want", [(256, 272), (768, 784), (3072, 3088), (1536, 1552), (192, 192), (312, 312),
                                       (1200, 1200), (128, 128)])
def test_padded_width(cols, want):
    assert padded_width(cols) == want


def _padded(w: np.ndarray, extra: int = 16) -> paddle.Tensor:
    """``w`` with ``extra`` values of 1e3 after each row: an operator reading them would be far off."""
    return paddle.to_tensor(np.concatenate([w, np.full(w.shape[:-1] + (extra,), 1e3, np.float32)], axis=-1))


def test_fused_operators_read_padded_weights():
    """Each fused operator gives the same output with its weights' rows padded as without, bit for bit, and
    names a weight narrower than its bias."""
    k, rng = tk.kernels(), np.random.default_rng(0)

    def draw(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    x, r = paddle.to_tensor(draw(2, 5, 8)), paddle.to_tensor(draw(2, 5, 8))
    g, c = paddle.to_tensor(draw(8)), paddle.to_tensor(draw(8))
    w, w1, w2 = draw(2, 4, 4), draw(2, 4, 6), draw(2, 6, 4)
    b, b1 = paddle.to_tensor(draw(8)), paddle.to_tensor(draw(12))
    same = np.testing.assert_array_equal
    same(k.ct_grouped_linear_add_norm(x, _padded(w), b, r, g, c, 2, 1e-5).numpy(),
         k.ct_grouped_linear_add_norm(x, paddle.to_tensor(w), b, r, g, c, 2, 1e-5).numpy())
    same(k.ct_grouped_ffn_add_norm(x, _padded(w1), b1, _padded(w2, 3), b, g, c, 2, 1e-5).numpy(),
         k.ct_grouped_ffn_add_norm(x, paddle.to_tensor(w1), b1, paddle.to_tensor(w2), b, g, c, 2, 1e-5).numpy())
    v, v1, v2 = draw(8, 8), draw(8, 12), draw(12, 8)
    same(k.ct_linear_add_scale_shift(x, _padded(v), b, r, g, c).numpy(),
         k.ct_linear_add_scale_shift(x, paddle.to_tensor(v), b, r, g, c).numpy())
    same(k.ct_ffn_relu_add_scale_shift(x, _padded(v1, 4), b1, _padded(v2), b, g, c).numpy(),
         k.ct_ffn_relu_add_scale_shift(x, paddle.to_tensor(v1), b1, paddle.to_tensor(v2), b, g, c).numpy())
    with pytest.raises(Exception, match=r"grouped_linear_add_norm: bias size 8 is not groups x at most 3"):
        k.ct_grouped_linear_add_norm(x, paddle.to_tensor(w[..., :3]), b, r, g, c, 2, 1e-5)
    with pytest.raises(Exception, match=r"linear_add_scale_shift: weight must be \[8, 8 or more\], its bias \[8\]"):
        k.ct_linear_add_scale_shift(x, paddle.to_tensor(v[:, :7]), b, r, g, c)


def test_portable_exports_keep_paddles_operators(tmp_path):
    """An export without this repo's operators runs paddle's alone (on a GPU, or a runtime without this repo)."""
    _, net, _ = build_pair(MODELS["tinybert-4l-312d"], quick=True)
    prefix = export_static(net, str(tmp_path / "static"), custom_ops=False)
    ops = optimized_op_counts(prefix, PredictorOptions(threads=2), str(tmp_path / "optimized"))
    assert not [op for op in ops if op.startswith("ct_")]


class _Block(nn.Layer):
    """A post-norm block of one linear layer (``ffn``: two, GELU between), its variations named by the flags."""

    def __init__(self, ffn=False, approximate=False, dropout="upscale_in_train", reread=False, broadcast=False):
        super().__init__()
        self.inner, self.outer, self.norm = nn.Linear(8, 16 if ffn else 8), nn.Linear(16, 8), nn.LayerNorm(8)
        self.ffn, self.approximate, self.reread, self.broadcast = ffn, approximate, reread, broadcast
        self.dropout = nn.Dropout(0.1, mode=dropout)

    def forward(self, x):
        y = self.inner(x)
        if self.ffn:
            y = self.outer(F.gelu(y, approximate=self.approximate))
        y = self.dropout(y)
        total = y + (self.norm.bias if self.broadcast else x)
        out = self.norm(total)
        return out + total if self.reread else out


def _fused_ops(layer_class: type | None = None, **kwargs) -> tuple[int, list[str]]:
    """(what :func:`fuse_blocks` replaced, the operator types after) in the eval-mode static program of
    ``layer_class(**kwargs)`` (default :class:`_Block`) on x [batch, 4, 8]."""
    tk.kernels()  # registers this repo's operators, which a layer may build
    paddle.enable_static()
    try:
        main = paddle.static.Program()
        with paddle.static.program_guard(main, paddle.static.Program()):
            layer = (layer_class or _Block)(**kwargs)
            layer.eval()
            layer(paddle.static.data("x", [-1, 4, 8], "float32"))
    finally:
        paddle.disable_static()
    desc = main.desc.block(0)
    fused = fuse_blocks(desc)
    return fused, [desc.op(i).type() for i in range(desc.op_size())]


@pytest.mark.parametrize("kwargs,want", [
    (dict(), (1, ["reshape2", LINEAR_ADD_NORM])),
    (dict(ffn=True), (1, ["reshape2", "reshape2", FFN_ADD_NORM])),
    # tanh-approximated GELU: the outer linear layer with the add and norm only
    (dict(ffn=True, approximate=True), (1, ["matmul_v2", "elementwise_add", "gelu", "reshape2", LINEAR_ADD_NORM])),
])
def test_fuse_blocks_replaces_the_blocks(kwargs, want):
    assert _fused_ops(**kwargs) == want


@pytest.mark.parametrize("kwargs", [
    dict(dropout="downscale_in_infer"),  # scales by 1 - p at inference: not the identity
    dict(reread=True),  # the sum is read again after the norm
    dict(broadcast=True),  # added to a vector, not a residual of the output's shape
])
def test_fuse_blocks_leaves_other_programs(kwargs):
    fused, ops = _fused_ops(**kwargs)
    assert fused == 0 and "layer_norm" in ops and "matmul_v2" in ops


class _NoNormFFN(nn.Layer):
    """MobileBERT's feed-forward network as its export computes it: linear, ReLU (``act``), linear, then the residual
    add of ``residual`` ("input": the network's input) and NoNorm in place (ct_add_scale_shift_)."""

    def __init__(self, act="relu", residual="input"):
        super().__init__()
        self.inner, self.outer, self.act, self.residual = nn.Linear(8, 16), nn.Linear(16, 8), act, residual
        self.scale = self.create_parameter([8], default_initializer=nn.initializer.Constant(2.0))
        self.shift = self.create_parameter([8], is_bias=True)

    def forward(self, x):
        y = self.outer(getattr(F, self.act)(self.inner(x)))
        return tk.add_scale_shift_(y, x if self.residual == "input" else x * 2, self.scale, self.shift)


@pytest.mark.parametrize("kwargs,want", [
    (dict(), (1, [FFN_ADD_SCALE_SHIFT])),
    # GELU: the outer linear layer with the add and NoNorm only
    (dict(act="gelu"), (1, ["matmul_v2", "elementwise_add", "gelu", LINEAR_ADD_SCALE_SHIFT])),
    # the residual is not the network's input
    (dict(residual="scaled"), (0, ["matmul_v2", "elementwise_add", "relu", "matmul_v2", "elementwise_add", "scale",
                                   ADD_SCALE_SHIFT])),
])
def test_fuse_blocks_takes_the_nonorm_feed_forward_network(kwargs, want):
    assert _fused_ops(_NoNormFFN, **kwargs) == want


class _NoNormBlock(nn.Layer):
    """MobileBERT's attention output or output bottleneck as its export computes it: linear, [dropout,] then the
    residual add and NoNorm in place (ct_add_scale_shift_); ``reread``: the linear's output also read elsewhere."""

    def __init__(self, dropout="upscale_in_train", reread=False):
        super().__init__()
        self.dense, self.dropout, self.reread = nn.Linear(8, 8), nn.Dropout(0.1, mode=dropout), reread
        self.scale = self.create_parameter([8], default_initializer=nn.initializer.Constant(2.0))
        self.shift = self.create_parameter([8], is_bias=True)

    def forward(self, x):
        residual = x * 2
        y = self.dense(x)
        out = tk.add_scale_shift_(self.dropout(y), residual, self.scale, self.shift)
        return out + y if self.reread else out


@pytest.mark.parametrize("kwargs,want", [
    (dict(), (1, ["scale", LINEAR_ADD_SCALE_SHIFT])),
    # scales by 1 - p at inference: not the identity
    (dict(dropout="downscale_in_infer"), (0, ["scale", "matmul_v2", "elementwise_add", "dropout", ADD_SCALE_SHIFT])),
    (dict(reread=True), (0, ["scale", "matmul_v2", "elementwise_add", "dropout", ADD_SCALE_SHIFT, "elementwise_add"])),
])
def test_fuse_blocks_takes_the_nonorm_linear_block(kwargs, want):
    assert _fused_ops(_NoNormBlock, **kwargs) == want
