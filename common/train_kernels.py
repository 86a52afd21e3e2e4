"""Faster fine-tuning on CPU: multi-threaded custom operators (``train_kernels.cc``) in a model's layers.

paddle 2.6.2 runs dropout, layer norm and GELU gradients, bias-gradient reductions and strided
copies on one thread, and draws dropout masks one element at a time: on 2 cores they took more
time than the GEMMs of a fine-tuning step. Its dygraph GEMMs are MKL's, AVX2 code at best on AMD CPUs.
:func:`use_train_kernels` switches the plain paddle layers of a model (``nn.Dropout``, ``nn.LayerNorm``,
``nn.Linear``, ``nn.MultiHeadAttention``, ``nn.TransformerEncoderLayer``; exact types, so a subclass such as
an OFA super layer needs its own) to subclasses that call these operators (see :func:`fast`: in train mode, and
in eval mode in dygraph, so evaluation and prediction use them too): a Linear's product as one oneDNN GEMM (without
gradient, with its bias: one operator),
dropout from a counter-based hash, layer norm, bias add, bias + GELU (or GELU), attention's two products as one
oneDNN GEMM per sample and head, scale + mask + softmax + dropout of attention, and one copy per head split or merge.
Model folders add their own layers with :func:`register`, built on the model-specific operators
here (SqueezeBERT's channels-first convolution and norm, and in evaluation its query, key, value and attention
as one operator, the post-attention convolution with its residual add and norm as one and the feed-forward block
with its residual add and norm as one; MobileBERT's NoNorm and bias + ReLU, and in evaluation each
feed-forward network with its residual add and NoNorm as one,
ConvBERT's depthwise and span convolutions, its pointwise product through the Linear's GEMM operator and its
grouped FFN linears as one GEMM per group; OFA's super Linear and width-adaptive attention, ``ofa_bert/ofa.py``).
Parameters and state dict are unchanged; outputs and gradients equal paddle's within float
rounding (dropout aside), and a static graph built in eval mode (an export) keeps paddle's operators
except where a layer says otherwise (attention, :func:`attends`).
Exported inference models use some of them too: attention without dropout (one operator per layer,
:func:`attend`), SqueezeBERT's grouped query, key and value projections with the attention
(:func:`grouped_self_attention`; alone, :func:`grouped_linear`), its
post-attention layer and feed-forward block each with their residual add and norm (:func:`grouped_linear_add_norm`,
:func:`grouped_ffn_add_norm`),
ConvBERT's span convolution and MobileBERT's residual add + NoNorm in place (:func:`add_scale_shift_`; see
:func:`export_ops`).
The operators compile on first use (g++) into ``$COMPACT_BERT_KERNELS`` or
``~/.cache/compact_bert/kernels``, one build per source, CPU and paddle version.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import types
from typing import Callable, Iterator

import paddle
import paddle.nn.functional as F
from paddle import nn

from common.hardware import cpu_flags

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_kernels.cc")
CFLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp"]  # fast-math: vectorised erff/expf (glibc libmvec)


@functools.lru_cache(maxsize=None)
def kernels() -> types.ModuleType:
    """The compiled operator module (built once per source, CPU flags and paddle version)."""
    from paddle.utils.cpp_extension import load

    # OpenMP from paddle's libiomp5 (MKL's runtime), not gcc's libgomp: one thread pool, sized by
    # paddle.set_num_threads; two runtimes' spinning threads would fight over the cores.
    # oneDNN's GEMM: paddle's own copy (the channels-first convolutions).
    libs = os.path.join(os.path.dirname(paddle.__file__), "libs")
    ldflags = [f"-L{libs}", "-l:libdnnl.so.3", "-l:libiomp5.so"]
    with open(SOURCE, "rb") as f:
        key = hashlib.sha256(f.read() + " ".join(sorted(cpu_flags())).encode() + paddle.__version__.encode()
                             + " ".join(CFLAGS + ldflags).encode()).hexdigest()[:16]
    root = (os.environ.get("COMPACT_BERT_KERNELS")
            or os.path.join(os.path.expanduser("~"), ".cache", "compact_bert", "kernels"))
    build = os.path.join(root, key)
    os.makedirs(build, exist_ok=True)
    with open(os.path.join(build, "lock"), "w") as lock:  # data-parallel ranks build it once
        fcntl.flock(lock, fcntl.LOCK_EX)
        return load(name="compact_bert_train_kernels", sources=[SOURCE], extra_cxx_cflags=CFLAGS,
                    extra_ldflags=ldflags, build_directory=build, verbose=False)


def _seed() -> int:
    """A dropout seed from paddle's generator, so ``paddle.seed`` makes runs repeatable."""
    high, low = paddle.randint(0, 2**31 - 1, [2], dtype="int64").tolist()  # randint's bounds are int32
    return high << 31 | low


def _dense(x: paddle.Tensor) -> paddle.Tensor:
    if not paddle.in_dynamic_mode():  # a static graph's variables are dense
        return x
    return x if x.is_contiguous() else x.contiguous()


_export_ops = False


@contextlib.contextmanager
def export_ops(enabled: bool = True) -> Iterator[None]:
    """While a model is converted to a static graph inside this block, layers may build operators of
    this module into it (:func:`in_export`). The exported program then needs this module's library
    to run (``common.inference.Predictor`` loads it) and runs on the CPU only."""
    global _export_ops
    previous, _export_ops = _export_ops, enabled
    try:
        yield
    finally:
        _export_ops = previous


@paddle.jit.not_to_static  # a converted copy would keep the flag of the first conversion in the process
def in_export() -> bool:
    """True while a layer's forward is being converted inside :func:`export_ops`."""
    return _export_ops and not paddle.in_dynamic_mode()


def is_fp32(x: paddle.Tensor) -> bool:
    """A float32 tensor on the CPU (what the operators take)."""
    return x.dtype == paddle.float32 and x.place.is_cpu_place()


def fast(layer: nn.Layer, x: paddle.Tensor) -> bool:
    """Whether kernel-backed ``layer`` runs the operators on ``x``: a float32 CPU tensor, in train
    mode, or in eval mode in dygraph (evaluation and prediction; a static graph built in eval mode,
    an export, keeps paddle's operators; attention layers: :func:`attends`)."""
    return (layer.training or paddle.in_dynamic_mode()) and is_fp32(x)


def dropout_p(layer: nn.Layer, p: float) -> float:
    """``layer``'s dropout rate ``p`` in train mode, 0 in eval mode."""
    return p if layer.training else 0.0


def activation(fn: Callable | nn.Layer) -> str | None:
    """"gelu" (exact) or "relu" where ``fn`` (a function or PaddleNLP's ACT2FN layer) is one, else None."""
    from paddlenlp.transformers.activations import GELUActivation

    if fn is F.gelu or (type(fn) is GELUActivation and fn.act is F.gelu):
        return "gelu"
    if fn is F.relu or type(fn) is nn.ReLU:
        return "relu"
    return None


def dropout(x: paddle.Tensor, p: float) -> paddle.Tensor:
    """Train-mode ``F.dropout(x, p)`` (upscale_in_train) on all threads."""
    return kernels().ct_dropout(_dense(x), float(p), _seed())[0]


def matmul(x: paddle.Tensor, weight: paddle.Tensor, transpose_weight: bool = False,
           out_features: int = 0) -> paddle.Tensor:
    """``x @ weight`` for x [..., in] and weight [in, out] (a Linear's; ``transpose_weight``: ``x @ weight.T`` for
    weight [out, in], a 1x1 convolution's), as one oneDNN GEMM: paddle's dygraph matmul is MKL's, AVX2 code at best
    on AMD CPUs (half oneDNN's AVX-512 rate on Zen 5). ``out_features`` > 0: the first ``out_features`` outputs
    from the first ``in`` (x's last dimension) inputs of a possibly larger weight, read in place (OFA's super
    layers); the weight's gradient is zero outside that block."""
    return kernels().ct_matmul(_dense(x), _dense(weight), bool(transpose_weight), int(out_features))


def grouped_matmul(x: paddle.Tensor, weight: paddle.Tensor) -> paddle.Tensor:
    """A grouped Linear's product without bias: x [..., groups * in], weight [groups, in, out] -> [..., groups *
    out], group g's outputs from its inputs, one oneDNN GEMM per group on x's column block in place."""
    return kernels().ct_grouped_matmul(_dense(x), _dense(weight))


def linear(x: paddle.Tensor, layer: nn.Layer) -> paddle.Tensor:
    """The output of plain Linear ``layer`` (with bias) of ``x`` as one operator (bias rows, then one oneDNN GEMM
    added to them); no gradient."""
    return kernels().ct_linear(_dense(x), layer.weight, layer.bias)


def qkv_linears(x: paddle.Tensor, q: nn.Layer, k: nn.Layer, v: nn.Layer) -> list[paddle.Tensor]:
    """The outputs of three plain Linears ``q``, ``k``, ``v`` of ``x`` (with biases) as one operator; no gradient."""
    return kernels().ct_qkv_linears(_dense(x), q.weight, q.bias, k.weight, k.bias, v.weight, v.bias)


def batched_matmul(x: paddle.Tensor, y: paddle.Tensor, transpose_y: bool = False) -> paddle.Tensor:
    """``x @ y`` (``y`` transposed in its last two axes with ``transpose_y``) per matrix of the leading axes,
    one oneDNN GEMM each, spread over the threads: attention's products."""
    return kernels().ct_batched_matmul(_dense(x), _dense(y), bool(transpose_y))


def swap_last_two(x: paddle.Tensor) -> paddle.Tensor:
    """[a, b, c] -> [a, c, b] as one multi-threaded copy, with gradient (paddle's strided copy runs on one thread)."""
    return kernels().ct_swap12(_dense(x).unsqueeze(-1)).squeeze(-1)


def gelu(x: paddle.Tensor) -> paddle.Tensor:
    """Exact GELU on all threads (paddle's runs its gradient on one)."""
    return kernels().ct_gelu(_dense(x))


def bias_add(x: paddle.Tensor, bias: paddle.Tensor) -> paddle.Tensor:
    return kernels().ct_bias_add(_dense(x), bias)


def layer_norm(x: paddle.Tensor, weight: paddle.Tensor, bias: paddle.Tensor, epsilon: float) -> paddle.Tensor:
    return kernels().ct_layer_norm(_dense(x), weight, bias, float(epsilon))[0]


def bias_relu(x: paddle.Tensor, bias: paddle.Tensor) -> paddle.Tensor:
    return kernels().ct_bias_relu(_dense(x), bias)


def scale_shift(x: paddle.Tensor, weight: paddle.Tensor, bias: paddle.Tensor,
                residual: paddle.Tensor | None = None) -> paddle.Tensor:
    """``x * weight + bias`` over the last dimension; with ``residual``: ``(x + residual) * weight + bias``."""
    if residual is None:
        return kernels().ct_scale_shift(_dense(x), weight, bias)
    return kernels().ct_add_scale_shift(_dense(x), _dense(residual), weight, bias)


def add_scale_shift_(x: paddle.Tensor, residual: paddle.Tensor, weight: paddle.Tensor,
                     bias: paddle.Tensor) -> paddle.Tensor:
    """``(x + residual) * weight + bias`` over the last dimension, written over ``x`` (no gradient): for exports,
    where ``x`` is a dense's output read by nothing else. One pass in cache where the folded form took two."""
    return kernels().ct_add_scale_shift_(x, residual, weight, bias)


def softmax_dropout(scores: paddle.Tensor, mask: paddle.Tensor, scale: float, p: float) -> paddle.Tensor:
    """``dropout(softmax(scores * scale + mask), p)`` over the last axis; scores [batch, heads, query,
    key], mask additive [batch, 1, 1 or query, key]."""
    seed = _seed() if p > 0 else 0  # p 0 (eval mode): paddle's generator is left as it was
    return kernels().ct_softmax_dropout(_dense(scores), _dense(mask), float(scale), float(p), seed)[0]


def pointwise_conv(x: paddle.Tensor, weight: paddle.Tensor, bias: paddle.Tensor, groups: int,
                   gelu: bool = False) -> paddle.Tensor:
    """A grouped 1x1 convolution of [batch, channels, length] (weight [out, in / groups(, 1)]) plus
    bias, one oneDNN GEMM per sample and group; ``gelu``: exact GELU after it."""
    op = kernels().ct_pointwise_conv_gelu if gelu else kernels().ct_pointwise_conv
    out = op(_dense(x), weight, bias, int(groups))
    return out[0] if gelu else out


def by_group_transposed(conv: nn.Layer) -> paddle.Tensor:
    """The [out, in / groups(, 1)] weight of grouped 1x1 convolution ``conv`` as [groups, in / groups, out / groups]
    (each group's weight transposed), the layout of the token-major grouped operators (in an export, a
    parameter-only expression that paddle.inference folds into a parameter)."""
    groups, out = conv._groups, conv.weight.shape[0]
    return conv.weight.reshape([groups, out // groups, -1]).transpose([0, 2, 1])


def grouped_linear(x: paddle.Tensor, conv: nn.Layer) -> paddle.Tensor:
    """Grouped 1x1 convolution ``conv`` (a layer with ``weight`` [out, in / groups(, 1)], ``bias``, ``_groups``) of
    token-major [..., channels], one oneDNN GEMM per group (and row block) on one thread each; no gradient
    (exported models)."""
    return kernels().ct_grouped_linear(_dense(x), by_group_transposed(conv), conv.bias, int(conv._groups))


def grouped_self_attention(x: paddle.Tensor, convs: tuple, mask: paddle.Tensor, heads: int) -> paddle.Tensor:
    """Self-attention of token-major ``x`` [batch, length, channels] whose query, key and value ``convs`` are grouped
    1x1 convolutions of one group count, groups holding whole heads: one operator, per sample and group one GEMM for
    the three projections (their weights side by side, a parameter-only expression paddle.inference folds) and
    attention over the group's heads; no gradient (exported models). Returns [batch, length, channels]."""
    groups = int(convs[0]._groups)
    weight = paddle.concat([by_group_transposed(c) for c in convs], axis=2)
    bias = paddle.concat([c.bias.reshape([groups, -1]) for c in convs], axis=1)
    size = x.shape[-1] // heads
    return kernels().ct_grouped_self_attention(_dense(x), weight, bias, _dense(mask), int(heads), size**-0.5)


def _by_group(layer) -> tuple[paddle.Tensor, int]:
    """(weight [groups, in / groups, out / groups], groups) of a grouped 1x1 convolution layer
    (:func:`by_group_transposed`), of a ``nn.Linear`` (one group) or of ConvBERT's grouped linear layer (``num_groups``;
    its weight is that already)."""
    if isinstance(layer, nn.Linear):
        return layer.weight.unsqueeze(0), 1
    if hasattr(layer, "num_groups"):
        return layer.weight, int(layer.num_groups)
    return by_group_transposed(layer), int(layer._groups)


def grouped_linear_add_norm(x: paddle.Tensor, layer: nn.Layer, residual: paddle.Tensor,
                            norm: nn.Layer) -> paddle.Tensor:
    """Layer norm ``norm`` over the last dimension of ``layer(x) + residual``, token-major [..., channels] (``layer``
    a grouped 1x1 convolution layer or a ``nn.Linear``, ``norm`` one with ``weight``, ``bias``, ``_epsilon``), one
    operator; no gradient (exported models, evaluation)."""
    weight, groups = _by_group(layer)
    return kernels().ct_grouped_linear_add_norm(_dense(x), weight, layer.bias, _dense(residual), norm.weight,
                                                norm.bias, groups, float(norm._epsilon))


def grouped_ffn_add_norm(x: paddle.Tensor, inner: nn.Layer, outer: nn.Layer, norm: nn.Layer) -> paddle.Tensor:
    """Layer norm ``norm`` over the last dimension of ``outer(gelu(inner(x))) + x``, token-major [..., channels]
    (``inner``, ``outer`` grouped 1x1 convolution layers or ConvBERT's grouped linears of the same groups, or
    ``nn.Linear`` layers; GELU exact), one operator; no gradient (exported models, evaluation)."""
    (w1, groups), (w2, _) = _by_group(inner), _by_group(outer)
    return kernels().ct_grouped_ffn_add_norm(_dense(x), w1, inner.bias, w2, outer.bias, norm.weight, norm.bias,
                                             groups, float(norm._epsilon))


def ffn_relu_add_scale_shift(x: paddle.Tensor, inner: nn.Linear, outer: nn.Linear, norm: nn.Layer) -> paddle.Tensor:
    """``outer(relu(inner(x))) + x`` times ``norm.weight`` plus ``norm.bias`` over the last dimension (MobileBERT's
    feed-forward network with its residual add and NoNorm; ``inner``, ``outer`` Linears with biases), one operator;
    no gradient (evaluation)."""
    return kernels().ct_ffn_relu_add_scale_shift(_dense(x), inner.weight, inner.bias, outer.weight, outer.bias,
                                                 norm.weight, norm.bias)


def linear_add_scale_shift(x: paddle.Tensor, dense: nn.Linear, residual: paddle.Tensor,
                           norm: nn.Layer) -> paddle.Tensor:
    """``dense(x) + residual`` times ``norm.weight`` plus ``norm.bias`` over the last dimension (MobileBERT's
    attention output and output bottleneck with their residual add and NoNorm; ``dense`` a Linear with a bias), one
    operator; no gradient (evaluation)."""
    return kernels().ct_linear_add_scale_shift(_dense(x), dense.weight, dense.bias, _dense(residual), norm.weight,
                                               norm.bias)


def depthwise_conv(x: paddle.Tensor, weight: paddle.Tensor, pad: int) -> paddle.Tensor:
    """Depthwise convolution along the length of channels-last [batch, length, channels], weight
    [channels, 1, kernel], zero padding ``pad`` on both sides."""
    return kernels().ct_depthwise_conv(_dense(x), weight, int(pad))


def span_conv(values: paddle.Tensor, logits: paddle.Tensor, heads: int, pad: int) -> paddle.Tensor:
    """ConvBERT's dynamic convolution: per position and head, softmax(logits) over the kernel
    weighs the values at positions l - pad .. l + pad ([batch, length, heads * size] values,
    [batch, length, heads * kernel] logits)."""
    return kernels().ct_span_conv(_dense(values), _dense(logits), int(heads), int(pad))[0]


def channel_layer_norm(x: paddle.Tensor, weight: paddle.Tensor, bias: paddle.Tensor, epsilon: float) -> paddle.Tensor:
    """Layer norm over the channels of [batch, channels, length]."""
    return kernels().ct_channel_layer_norm(_dense(x), weight, bias, float(epsilon))[0]


def pointwise_conv_add_norm(x: paddle.Tensor, conv: nn.Layer, residual: paddle.Tensor, norm: nn.Layer) -> paddle.Tensor:
    """Layer norm ``norm`` over the channels of ``conv(x) + residual`` ([batch, channels, length]; ``conv`` a grouped
    1x1 convolution layer, ``norm`` one with ``weight``, ``bias``, ``_epsilon``) as one operator; no gradient."""
    return kernels().ct_pointwise_conv_add_norm(_dense(x), conv.weight, conv.bias, _dense(residual), norm.weight,
                                                norm.bias, int(conv._groups), float(norm._epsilon))


def pointwise_ffn_add_norm(x: paddle.Tensor, inner: nn.Layer, outer: nn.Layer, norm: nn.Layer) -> paddle.Tensor:
    """Layer norm ``norm`` over the channels of ``outer(gelu(inner(x))) + x`` ([batch, channels, length]; ``inner``,
    ``outer`` grouped 1x1 convolution layers of the same groups, GELU exact) as one operator; no gradient."""
    return kernels().ct_pointwise_ffn_add_norm(_dense(x), inner.weight, inner.bias, outer.weight, outer.bias,
                                               norm.weight, norm.bias, int(inner._groups), float(norm._epsilon))


class Dropout(nn.Dropout):
    def forward(self, x):
        if self.training and 0 < self.p < 1 and self.axis is None and self.mode == "upscale_in_train" and is_fp32(x):
            return dropout(x, self.p)
        return nn.Dropout.forward(self, x)


class LayerNorm(nn.LayerNorm):
    def forward(self, x):
        if fast(self, x) and self.weight is not None and self.bias is not None and len(self._normalized_shape) == 1:
            return layer_norm(x, self.weight, self.bias, self._epsilon)
        return nn.LayerNorm.forward(self, x)


class Linear(nn.Linear):
    """Without gradient (evaluation) one operator (:func:`linear`), else a product and a bias add."""

    def forward(self, x):
        if fast(self, x) and self.bias is not None and x.ndim >= 2:  # ct_matmul takes [..., in]
            if not self.training and not paddle.is_grad_enabled():
                return linear(x, self)
            return bias_add(matmul(x, self.weight), self.bias)
        return nn.Linear.forward(self, x)


def additive_mask(attn_mask: paddle.Tensor | None, batch: int, keys: int,
                  dtype: paddle.dtype | str) -> paddle.Tensor | None:
    """``attn_mask`` as the additive [batch, 1, 1 or query, keys] mask the attention operators take
    (zeros for None, in dygraph; paddle's conversion of bool and int masks), or None for a shape they
    do not take. In a static graph (an export) the mask's sizes are not compared here (they would become
    tensors, and the comparison a conditional block): the operator checks them when it runs."""
    if not paddle.in_dynamic_mode():
        mask = None if attn_mask is None else nn.layer.transformer._convert_attention_mask(attn_mask, dtype)
        return mask if mask is not None and mask.ndim == 4 else None
    if attn_mask is None:
        return paddle.zeros([batch, 1, 1, keys], dtype)
    mask = nn.layer.transformer._convert_attention_mask(attn_mask, dtype)
    if mask.ndim != 4 or mask.shape[0] != batch or mask.shape[1] != 1 or mask.shape[3] != keys:
        return None
    return mask.expand([batch, 1, mask.shape[2], keys])


def attention(q: paddle.Tensor, k: paddle.Tensor, v: paddle.Tensor, mask: paddle.Tensor, heads: int,
              channels_first: bool = False) -> paddle.Tensor:
    """softmax(q k^T / sqrt(size) + mask) v per head, as one operator, without dropout or gradient:
    heads side by side in the channels of [batch, length, heads * size] q, k, v (``channels_first``:
    [batch, heads * size, length]); mask additive [batch, 1, 1 or query, keys]. Returns q's layout."""
    size = q.shape[1 if channels_first else -1] // heads
    return kernels().ct_attention(_dense(q), _dense(k), _dense(v), _dense(mask), int(heads), size**-0.5,
                                  bool(channels_first))


def grouped_qkv_attention(x: paddle.Tensor, convs: tuple, mask: paddle.Tensor, heads: int) -> paddle.Tensor:
    """Attention of channels-first ``x`` [batch, channels, length] whose query, key and value ``convs`` (layers
    with ``weight``, ``bias``, ``_groups``; groups holding whole heads) are grouped 1x1 convolutions: one
    operator, one task per sample and group; no dropout or gradient. Returns [batch, channels, length]."""
    weights = [t for conv in convs for t in (conv.weight, conv.bias)]
    size = x.shape[1] // heads
    return kernels().ct_grouped_qkv_attention(_dense(x), *weights, _dense(mask), int(convs[0]._groups), int(heads),
                                              size**-0.5)


def one_operator_attention(p: float) -> bool:
    """Whether attention with dropout rate ``p`` runs as the one :func:`attention` operator: no dropout,
    and no gradient (in an export, or under ``paddle.no_grad``)."""
    return p == 0 and (in_export() or not paddle.is_grad_enabled())


def attend(q: paddle.Tensor, k: paddle.Tensor, v: paddle.Tensor, mask: paddle.Tensor, heads: int,
           p: float) -> paddle.Tensor:
    """Multi-head attention of projected [batch, length, heads * size] q, k, v under an
    :func:`additive_mask`. Without dropout or gradient (in an export, or under ``paddle.no_grad``):
    one operator for all of it, one (sample, head) per task. Otherwise one copy per head split and
    merge, and scale + mask + softmax + dropout as one operator. Returns [batch, length, heads * size]."""
    size = q.shape[-1] // heads
    if one_operator_attention(p):
        return attention(q, k, v, mask, heads)
    q, k, v = (kernels().ct_swap12(x.reshape([0, 0, heads, size])) for x in (q, k, v))
    weights = softmax_dropout(batched_matmul(q, k, transpose_y=True), mask, size**-0.5, p)
    return kernels().ct_swap12(batched_matmul(weights, v)).reshape([0, 0, heads * size])


def attends(layer: nn.Layer, x: paddle.Tensor) -> bool:
    """Whether kernel-backed attention ``layer`` runs the operators on ``x``: where :func:`fast`, and in
    an export (:func:`in_export`; ``common.inference.export_static`` switches such layers in)."""
    return fast(layer, x) or (in_export() and x.dtype == paddle.float32)


def attention_mask(layer: nn.MultiHeadAttention, query: paddle.Tensor, key: paddle.Tensor,
                   attn_mask: paddle.Tensor | None, cache: object) -> paddle.Tensor | None:
    """The :func:`additive_mask` for :func:`attend` where kernel-backed attention ``layer`` (a
    ``nn.MultiHeadAttention``) runs the operators on this call (:func:`attends`, no cache, no attention weights
    asked for), else None: the layer's own forward runs."""
    if not attends(layer, query) or cache is not None or layer.need_weights:
        return None
    return additive_mask(attn_mask, query.shape[0], key.shape[1], query.dtype)


class MultiHeadAttention(nn.MultiHeadAttention):
    """Attention through :func:`attend` where :func:`attends`."""

    exported = True

    def forward(self, query, key=None, value=None, attn_mask=None, cache=None):
        key = query if key is None else key
        value = query if value is None else value
        mask = attention_mask(self, query, key, attn_mask, cache)
        if mask is None:
            return nn.MultiHeadAttention.forward(self, query, key, value, attn_mask, cache)
        out = attend(self.q_proj(query), self.k_proj(key), self.v_proj(value), mask, self.num_heads,
                     dropout_p(self, self.dropout or 0.0))
        return self.out_proj(out)


def _plain_linear(layer: nn.Layer) -> bool:
    """A plain ``nn.Linear`` or this module's :class:`Linear`, with bias (not ConvBERT's grouped linears or OFA's
    super layers, which compute otherwise)."""
    return type(layer) in (nn.Linear, Linear) and layer.bias is not None


def _fusable_ffn(inner: nn.Layer, outer: nn.Layer) -> bool:
    """Two plain linears (:func:`_plain_linear`), or two of ConvBERT's grouped linears (``num_groups``) of the same
    groups, with biases: what :func:`grouped_ffn_add_norm` takes."""
    if _plain_linear(inner) and _plain_linear(outer):
        return True
    groups = [getattr(layer, "num_groups", None) for layer in (inner, outer)]
    return groups[0] is not None and groups[0] == groups[1] and inner.bias is not None and outer.bias is not None


def _plain_norm(layer: nn.Layer) -> bool:
    return layer.weight is not None and layer.bias is not None and len(layer._normalized_shape) == 1


class TransformerEncoderLayer(nn.TransformerEncoderLayer):
    """Post-norm encoder layer with GELU on this module's operators where :func:`fast`: the FFN's bias and GELU as
    one where its first linear is a plain ``nn.Linear`` or this module's :class:`Linear`, else (ConvBERT's grouped
    linears, OFA's super layers) the layer's own product and :func:`gelu`. In evaluation without gradient, with
    plain linears and norms: attention then output projection, residual add and norm as two operators, and the FFN
    (plain or ConvBERT's grouped linears) with its residual add and norm as one (:func:`grouped_linear_add_norm`,
    :func:`grouped_ffn_add_norm`)."""

    def forward(self, src, src_mask=None, cache=None, output_attentions=False):
        if (not fast(self, src) or cache is not None or output_attentions or self.normalize_before
                or self.activation is not F.gelu):
            # output_attentions: PaddleNLP's replacement of the forward takes it. The base's forward is
            # named (not super()): paddle.jit.to_static cannot convert a bare super().
            extra = {"output_attentions": True} if output_attentions else {}
            return nn.TransformerEncoderLayer.forward(self, src, src_mask, cache, **extra)
        self.self_attn.need_weights = False
        src_mask = nn.layer.transformer._convert_attention_mask(src_mask, src.dtype)
        attn, evaluating = self.self_attn, not self.training and not paddle.is_grad_enabled()
        mask = None
        if (evaluating and type(attn) is MultiHeadAttention and _plain_norm(self.norm1)
                and all(_plain_linear(p) for p in (attn.q_proj, attn.k_proj, attn.v_proj, attn.out_proj))):
            mask = attention_mask(attn, src, src, src_mask, None)
        if mask is not None:
            context = attention(*qkv_linears(src, attn.q_proj, attn.k_proj, attn.v_proj), mask, attn.num_heads)
            src = grouped_linear_add_norm(context, attn.out_proj, src, self.norm1)
        else:
            src = self.norm1(src + self.dropout1(attn(src, src, src, src_mask)))
        if evaluating and _fusable_ffn(self.linear1, self.linear2) and _plain_norm(self.norm2):
            return grouped_ffn_add_norm(src, self.linear1, self.linear2, self.norm2)
        if _plain_linear(self.linear1):
            hidden = kernels().ct_bias_gelu(matmul(src, self.linear1.weight), self.linear1.bias)
        else:
            hidden = gelu(self.linear1(src))
        return self.norm2(src + self.dropout2(self.linear2(self.dropout(hidden))))


SWAPS = {base: fast for fast in (Dropout, LayerNorm, Linear, MultiHeadAttention, TransformerEncoderLayer)
         for base in fast.__bases__}


UNSWAPS = {fast: base for base, fast in SWAPS.items()}


def register(fast: type) -> type:
    """Class decorator for a model folder's kernel-backed layer: ``fast`` (a subclass of exactly one
    layer class) replaces its base in :func:`use_train_kernels`."""
    (base,) = fast.__bases__
    SWAPS[base], UNSWAPS[fast] = fast, base
    return fast


def use_train_kernels(model: nn.Layer, enable: bool = True, exported_only: bool = False) -> int:
    """Switch ``model``'s plain paddle layers to the kernel-backed ones in place (``enable`` False:
    back); returns how many layers were switched. ``exported_only``: only the classes whose operators
    go into exported models (class attribute ``exported``, e.g. attention)."""
    if enable:
        kernels()  # compile (or load) before the first step
    table = SWAPS if enable else UNSWAPS
    if exported_only:
        table = {old: new for old, new in table.items() if getattr(new if enable else old, "exported", False)}
    layers = [(name, layer) for name, layer in model.named_sublayers(include_self=True) if type(layer) in table]
    for name, layer in layers:
        if "forward" in layer.__dict__:
            raise RuntimeError(f"layer {name or '(model)'}: its forward is set on the instance, so a change "
                               "of class would not take effect")
    for _, layer in layers:
        layer.__class__ = table[type(layer)]
    return len(layers)
