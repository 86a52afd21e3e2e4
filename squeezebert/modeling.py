"""SqueezeBERT's grouped 1x1 convolutions as batched matmuls: same parameters, same results, faster.

Importing this module makes PaddleNLP 2.8.1's SqueezeBERT layers (q/k/v, post-attention,
intermediate, output) build :class:`PointwiseConv1D` instead of ``nn.Conv1D``. The parameters keep
their names, shapes and layout ([out, in / groups, 1] weight, [out] bias), so checkpoints load as
before. Their self-attention runs without transposes (:func:`_self_attention_forward`); an
exported encoder runs token-major (:func:`_encoder_forward`), an exported classifier's computing its
last layer at [CLS] only (:class:`FirstTokenEncoder`). Every entry point of this folder
imports it (``spec.py`` does); nothing in site-packages is edited.
"""
from __future__ import annotations

import math

import paddle
import paddle.nn.functional as F
from paddle import nn
from paddlenlp.transformers.squeezebert import modeling as _pm

from common.first_token import register as register_first_token
from common.inference import math_threads
from common import train_kernels as tk


class PointwiseConv1D(nn.Conv1D):
    """``nn.Conv1D`` with kernel size 1 on [batch, channels, length] inputs, computed as one batched
    matmul of the [groups, out / groups, in / groups] weight with the [batch, groups, in / groups,
    length] input: no im2col, no per-group loop (paddle's conv2d kernel), no layout change. Exported
    models run the token-major encoder of :func:`_encoder_forward` instead."""

    def __init__(self, in_channels: int, out_channels: int, groups: int = 1):
        super().__init__(in_channels, out_channels, kernel_size=1, groups=groups)

    def weight_by_group(self) -> paddle.Tensor:
        """The [out, in / groups, 1] weight as [groups, out / groups, in / groups]."""
        out_channels, in_per_group = self.weight.shape[:2]
        return self.weight.reshape([self._groups, out_channels // self._groups, in_per_group])

    def forward(self, x):
        # 4-D like the input: paddle 2.6.2's matmul backward fails on a 3-D operand broadcast against a 4-D one.
        y = paddle.matmul(self.weight_by_group().unsqueeze(0), x.reshape([0, self._groups, self.weight.shape[1], -1]))
        return y.reshape([0, self._out_channels, -1]) + self.bias.unsqueeze(-1)


# Fine-tuning on CPU: kernel-backed versions of the layers above (common/train_kernels.py switches
# a model to them; they run in train mode and in dygraph eval mode, an export runs the forwards above).


@tk.register
class TrainPointwiseConv1D(PointwiseConv1D):
    """One GEMM per sample and group, bias included (paddle's batched matmul sums the weight
    gradient over a broadcast batch one sample at a time)."""

    def forward(self, x):
        if tk.fast(self, x):
            return tk.pointwise_conv(x, self.weight, self.bias, self._groups)
        return PointwiseConv1D.forward(self, x)


@tk.register
class TrainConvActivation(_pm.ConvActivation):
    """Convolution, bias and exact GELU in one operator."""

    def forward(self, x):
        conv = self.conv1d
        if tk.fast(self, x) and tk.activation(self.act) == "gelu" and isinstance(conv, PointwiseConv1D):
            return tk.pointwise_conv(x, conv.weight, conv.bias, conv._groups, gelu=True)
        return _pm.ConvActivation.forward(self, x)


@tk.register
class TrainConvDropoutLayerNorm(_pm.ConvDropoutLayerNorm):
    """Without dropout or gradient (evaluation): convolution, residual add and layer norm as one operator."""

    def forward(self, hidden_states, input_tensor):
        if (tk.fast(self, hidden_states) and not self.training and not paddle.is_grad_enabled()
                and isinstance(self.conv1d, PointwiseConv1D)):
            return tk.pointwise_conv_add_norm(hidden_states, self.conv1d, input_tensor, self.layernorm)
        return _pm.ConvDropoutLayerNorm.forward(self, hidden_states, input_tensor)


@tk.register
class TrainLayerNorm(_pm.SqueezeBertLayerNorm):
    """Layer norm over the channels without the two transposes."""

    def forward(self, x):
        if tk.fast(self, x):
            return tk.channel_layer_norm(x, self.weight, self.bias, self._epsilon)
        return _pm.SqueezeBertLayerNorm.forward(self, x)


@tk.register
class TrainSelfAttention(_pm.SqueezeBertSelfAttention):
    """The transpose-free attention of :func:`_self_attention_forward` with scale, mask, softmax and
    dropout as one operator; without dropout or gradient (evaluation), all of it as one operator, with the
    query, key and value convolutions where each group holds whole heads and the (sample, group) tasks are
    at least the threads (at batch 1 on 2 Zen 5 threads, 0.47 ms a layer against 0.54 for the four operators)."""

    def forward(self, hidden_states, attention_mask, output_attentions):
        batch, channels, length = hidden_states.shape
        mask = None
        if tk.fast(self, hidden_states) and not output_attentions and attention_mask is not None:
            mask = tk.additive_mask(attention_mask, batch, length, hidden_states.dtype)
        if mask is None:
            return _pm.SqueezeBertSelfAttention.forward(self, hidden_states, attention_mask, output_attentions)
        p = tk.dropout_p(self, self.dropout.p)
        convs, heads = (self.query, self.key, self.value), self.num_attention_heads
        if tk.one_operator_attention(p) and all(isinstance(conv, PointwiseConv1D) for conv in convs):  # channels-first
            groups = convs[0]._groups
            if all(conv._groups == groups for conv in convs) and heads % groups == 0 and batch * groups >= math_threads():
                return {"context_layer": tk.grouped_qkv_attention(hidden_states, convs, mask, heads)}
            # the operators called directly: three layer calls fewer per layer, of the dygraph overhead at batch 1
            query, key, value = (tk.pointwise_conv(hidden_states, conv.weight, conv.bias, conv._groups) for conv in convs)
            return {"context_layer": tk.attention(query, key, value, mask, heads, channels_first=True)}
        shape = [batch, heads, self.attention_head_size, length]
        query, key, value = (conv(hidden_states).reshape(shape) for conv in convs)
        scores = paddle.matmul(query, key, transpose_x=True)
        probs = tk.softmax_dropout(scores, mask, self.attention_head_size**-0.5, p)
        context = paddle.matmul(value, probs, transpose_y=True)
        return {"context_layer": context.reshape([batch, channels, length])}


@tk.register
class TrainLayer(_pm.SqueezeBertLayer):
    """Without dropout or gradient (evaluation), where the intermediate and output convolutions share groups and the
    activation is exact GELU: the two convolutions with the residual add and norm as one operator (the intermediate
    activations stay in the core's cache)."""

    def forward(self, hidden_states, attention_mask, output_attentions):
        inner, outer = self.intermediate.conv1d, self.output.conv1d
        if (not tk.fast(self, hidden_states) or self.training or paddle.is_grad_enabled() or output_attentions
                or tk.activation(self.intermediate.act) != "gelu"
                or not all(isinstance(conv, PointwiseConv1D) for conv in (inner, outer))
                or inner._groups != outer._groups):
            return _pm.SqueezeBertLayer.forward(self, hidden_states, attention_mask, output_attentions)
        context = self.attention(hidden_states, attention_mask, False)["context_layer"]
        hidden = self.post_attention(context, hidden_states)
        return {"feature_map": tk.pointwise_ffn_add_norm(hidden, inner, outer, self.output.layernorm)}


@tk.register
class TrainEncoder(_pm.SqueezeBertEncoder):
    """Hands the base forward a token-major view of a channels-first copy of its input (one multi-threaded
    operator), so that the base's transpose to channels-first is a contiguous view: paddle's own copy, on one
    thread, took about 0.5 ms of a 24 ms forward at batch 1 (2 Zen 5 threads)."""

    def forward(self, hidden_states, attention_mask=None, output_attentions=False, output_hidden_states=False):
        if tk.fast(self, hidden_states) and hidden_states.ndim == 3:
            hidden_states = tk.swap_last_two(hidden_states).transpose([0, 2, 1])
        return _pm.SqueezeBertEncoder.forward(self, hidden_states, attention_mask, output_attentions,
                                              output_hidden_states)


def _self_attention_forward(self, hidden_states, attention_mask, output_attentions):
    """PaddleNLP's ``SqueezeBertSelfAttention.forward`` without its three transposes: scores = Q^T K
    and context = V P^T on the [batch, heads, head size, length] views of the convolutions' outputs
    (same results; in paddle.inference on the Zen 5 host 5-20 % faster, mostly in bf16)."""
    heads = [0, self.num_attention_heads, self.attention_head_size, -1]
    query, key, value = (conv(hidden_states).reshape(heads) for conv in (self.query, self.key, self.value))
    scores = paddle.matmul(query, key, transpose_x=True) / math.sqrt(self.attention_head_size) + attention_mask
    probs = self.dropout(self.softmax(scores))
    result = {"context_layer": paddle.matmul(value, probs, transpose_y=True).reshape([0, self.all_head_size, -1])}
    if output_attentions:
        result["attention_score"] = scores
    return result


# Static graphs (export, paddle.inference) in eval mode: the encoder runs token-major, the attention
# takes BERT's head layout, and layer norm needs no transposes. Same parameters, same results. A grouped
# convolution takes one of two forms:
# - per group (the export for this repo's CPU predictor, ``tk.in_export``), on [batch, length, channels] with no
#   reshape (each ``reshape2`` copied its input), as this repo's operators, each weight by group and transposed
#   (``tk.by_group_transposed``: [groups, in / groups, out / groups], which paddle.inference folds into a
#   parameter; oneDNN's sgemm ran X W about 10 % faster than X W^T on a Zen 5 core). The attention's query, key
#   and value: one operator each (``ct_grouped_linear``: one GEMM per group, each on one thread, where oneDNN's
#   fcs split every small GEMM over the threads), then the attention over all heads (``ct_attention``); the
#   post-attention convolution with its residual add and norm (``ct_grouped_linear_add_norm``) and the
#   feed-forward block where its two convolutions share groups (``ct_grouped_ffn_add_norm``: per block of rows,
#   every group's two GEMMs with GELU between, then the residual add and norm, in the thread's cache), one
#   operator each. A bf16 predictor runs their bf16 versions (common/inference.py). A feed-forward of other
#   groups: a matmul per group on its slice of the channels (``split``, then ``concat``), which paddle.inference
#   runs as one oneDNN ``fc`` per group (the weights folded before its fc fusion). Interleaved by hand on the
#   Zen 5 host (2 threads, seq 128, the predictors of this export and the fc-per-group one in alternating
#   processes): see docs/speed.md ("SqueezeBERT's export"). On the Zen 4 host (session 15) the same fusion with X W^T
#   GEMMs and glibc's erff was 1.00-1.04x slower than the fcs; not remeasured there.
# - batched (the portable export: onnxruntime, GPUs): one batched matmul over [groups, tokens,
#   channels / groups] of [batch * length, channels] (M = every token of the batch), with transposes
#   in and out; query, key and value, where each group holds whole heads, straight into the heads-first
#   layout of the attention (``_qkv``), which needs one transpose, of its context. By hand on the Zen 4 host
#   (onnxruntime, the export before and after in one process, alternating, 0.3 s apart, median of 15 / 5 / 3
#   calls at batch 1 / 16 / 32): 48.1 -> 46.2, 753 -> 720, 1656 -> 1488 ms (1.04 / 1.05 / 1.11x as fast).
#   Since then only the query's bias costs a pass of its own (``_layer_batched``): 1.02-1.04 / 1.06 / 1.05x as
#   fast by the same method (41 / 21 / 13 calls). Since then the feed-forward block's two matmuls run per
#   sequence (``_feed_forward_batched``): each call after one of BERT-base's export (as in speed_ratio.py),
#   1597 -> 1476 and 664 -> 654 ms at batch 32 / 16 (median of 11); alone 1.03 / 0.99 / 1.00x at batch
#   32 / 16 / 1 (25 / 41 / 61 calls).
# Interleaved on the Zen 4 host (2 threads, seq 128, 7 rounds, one process, by hand, two runs), per
# group against batched: paddle.inference fp32 0.96-0.97 / 1.07-1.08 / 1.07-1.09x as fast at batch
# 1 / 16 / 32, bf16 1.03-1.24 / 1.18-1.39 / 1.18-1.23x; onnxruntime 0.69 / 0.92 / 1.02x (first run),
# hence the batched portable form.


def _per_group() -> bool:
    return tk.in_export()


def _to_groups(x: paddle.Tensor, groups: int) -> paddle.Tensor:
    """[tokens, channels] -> [groups, tokens, channels / groups]."""
    return x.reshape([-1, groups, x.shape[-1] // groups]).transpose([1, 0, 2])


def _from_groups(y: paddle.Tensor) -> paddle.Tensor:
    """[groups, tokens, channels / groups] -> [tokens, channels]."""
    return y.transpose([1, 0, 2]).reshape([-1, y.shape[0] * y.shape[2]])


def _weight_t(conv: PointwiseConv1D) -> paddle.Tensor:
    """The weight by group, transposed: [groups, in / groups, out / groups] (folded by paddle.inference)."""
    return conv.weight_by_group().transpose([0, 2, 1])


def _linear(x: paddle.Tensor, conv: PointwiseConv1D, bias: paddle.Tensor | None) -> paddle.Tensor:
    """Batched form: the convolution's weight on token-major ``x`` [tokens, in], one batched matmul over its groups
    (with transposes in and out), plus ``bias`` (broadcast to [tokens, out]; None: none)."""
    if conv._groups == 1:
        y = paddle.matmul(x, conv.weight.squeeze(-1), transpose_y=True)
    else:
        y = _from_groups(paddle.matmul(_to_groups(x, conv._groups), _weight_t(conv)))
    return y if bias is None else y + bias


def _weight_on(conv: PointwiseConv1D, v: paddle.Tensor) -> paddle.Tensor:
    """The convolution's weight on one vector ``v`` [in]: [out], no bias (a parameter's image: no transposes)."""
    return paddle.matmul(conv.weight_by_group(), v.reshape([conv._groups, -1, 1])).reshape([-1])


def _split(x: paddle.Tensor, groups: int) -> list[paddle.Tensor]:
    """Per-group form: token-major ``x`` [tokens, channels] as its groups' [tokens, channels / groups]."""
    return paddle.split(x, groups, axis=-1) if groups > 1 else [x]


def _by_group(parts: list[paddle.Tensor], conv: PointwiseConv1D) -> list[paddle.Tensor]:
    """Per-group form: the convolution of the groups' slices ``parts``, the groups' [tokens, out / groups]."""
    weight, bias = conv.weight_by_group(), conv.bias.reshape([conv._groups, -1])
    return [paddle.matmul(x, weight[g].transpose([1, 0])) + bias[g] for g, x in enumerate(parts)]


def _joined(parts: list[paddle.Tensor]) -> paddle.Tensor:
    return paddle.concat(parts, axis=-1) if len(parts) > 1 else parts[0]


def _pointwise(x: paddle.Tensor, conv: PointwiseConv1D) -> paddle.Tensor:
    """Per-group form: the convolution of token-major ``x``: [tokens, in] -> [tokens, out]."""
    return _joined(_by_group(_split(x, conv._groups), conv))


def _qkv(x: paddle.Tensor, convs: tuple, batch: paddle.Tensor, heads: int,
         biases: tuple[paddle.Tensor | None, ...]) -> list[paddle.Tensor]:
    """Batched form: query, key and value of token-major ``x``, each heads first, [heads, batch, length, head
    size], plus ``biases`` ([out] each, or None). Where each group holds whole heads, one batched matmul of the
    groups' input [groups, 1, tokens, in / groups] with the weight by group and head [groups, heads / groups, in /
    groups, head size] writes that layout directly (a transpose from the groups' output, [groups, tokens, heads /
    groups, head size], moved three axes: onnxruntime's slowest kind, 2.0-2.9 ms each at batch 16 on the Zen 4
    host). Convolutions of the same groups share one split of ``x``."""
    out, split = [], {}
    for conv, bias in zip(convs, biases):
        groups, size = conv._groups, conv._out_channels // heads
        if groups > 1 and heads % groups == 0:
            if groups not in split:
                split[groups] = _to_groups(x, groups).unsqueeze(1)
            per_group = heads // groups
            weight = conv.weight_by_group().reshape([groups, per_group, size, -1]).transpose([0, 1, 3, 2])
            y = paddle.matmul(split[groups], weight)
            if bias is not None:
                y = y + bias.reshape([groups, per_group, 1, size])
            out.append(y.reshape([heads, batch, -1, size]))
        else:
            out.append(_linear(x, conv, bias).reshape([batch, -1, heads, size]).transpose([2, 0, 1, 3]))
    return out


def _attention_per_group(x: paddle.Tensor, queries: paddle.Tensor, att: _pm.SqueezeBertSelfAttention,
                         mask: paddle.Tensor) -> paddle.Tensor:
    """Per-group form: the attention context of ``queries`` (``x`` or its first token) over ``x`` [batch,
    length, channels] (BERT's token-major head layout). Where the queries are ``x`` and query, key and value share
    groups holding whole heads, one operator (``ct_grouped_self_attention``: per sample and group the three
    projections as one GEMM, then attention over the group's heads); else query, key and value each as one grouped
    linear operator (``ct_grouped_linear``), then this repo's attention over all heads (``ct_attention``). bf16
    predictors run them in bf16."""
    convs = (att.query, att.key, att.value)
    heads = att.num_attention_heads
    if queries is x and len({c._groups for c in convs}) == 1 and heads % convs[0]._groups == 0:
        return tk.grouped_self_attention(x, convs, mask, heads)
    q, k, v = (tk.grouped_linear(t, c) for t, c in zip((queries, x, x), convs))
    return tk.attention(q, k, v, mask, heads)


def _feed_forward_per_group(x: paddle.Tensor, inner: PointwiseConv1D, outer: PointwiseConv1D,
                            act: nn.Layer) -> paddle.Tensor:
    """Per-group form: outer(act(inner(x))) on token-major ``x``, left split between the two where their groups
    match (where the activation is not GELU, else one operator, :func:`_layer_per_group`)."""
    if inner._groups != outer._groups or inner._groups == 1:
        return _pointwise(act(_pointwise(x, inner)), outer)
    # act.forward: a layer called twice in one conversion keeps its converted forward after the
    # export (paddle 2.6's convert_call records the converted one as the original the second time)
    return _joined(_by_group([act.forward(y) for y in _by_group(_split(x, inner._groups), inner)], outer))


def _feed_forward_batched(x: paddle.Tensor, inner: PointwiseConv1D, outer: PointwiseConv1D, act: nn.Layer,
                          inner_bias: paddle.Tensor, ones: paddle.Tensor | None,
                          sequences: paddle.Tensor | int) -> paddle.Tensor:
    """Batched form: outer's weight on act(inner's weight on ``x`` + ``inner_bias``), outer's bias left out (the
    caller adds it); left in groups between the two where their groups match. There:
    - the bias is one more row of the inner weight by group, against a column of ones appended to each group's
      input (``ones``: [rows, groups, 1], or None to build it): onnxruntime adds a bias to a batched matmul's
      output in a pass of its own, here over the block's largest tensor (4 x 2048 x 768 floats at batch 16, 1.5 ms
      a layer on the Zen 4 host), where the ones cost a copy of the input (0.2 ms; its ``Pad`` took 1.9);
    - both matmuls run per group and sequence, on [sequences, groups, length, channels / groups] (``sequences``:
      the batch size, or 1 where ``x`` holds one token per sequence): onnxruntime's batched matmul gives each
      thread whole GEMMs, and one over every token of a large batch re-reads its input from L3 for each block of
      output columns (M = 4096 at batch 32: the two ran at 160-186 GFLOP/s on the Zen 4 host, 200-206 per
      sequence)."""
    groups = inner._groups
    if groups != outer._groups or groups == 1:
        return _linear(act(_linear(x, inner, inner_bias)), outer, None)
    rows = x.reshape([-1, groups, x.shape[-1] // groups])
    rows = paddle.concat([rows, _ones(x, groups) if ones is None else ones], axis=-1)
    inner_weight = paddle.concat([_weight_t(inner), inner_bias.reshape([groups, 1, -1])], axis=1)
    # against the 3-D weights, broadcast over the sequences (where the weight is [groups, 1, in, out] instead, paddle
    # 2.6 infers a batch of 1 for the product, and paddle.inference maps the second matmul to its old operator,
    # which cannot broadcast)
    rows = rows.reshape([sequences, -1, groups, rows.shape[-1]]).transpose([0, 2, 1, 3])
    y = paddle.matmul(act(paddle.matmul(rows, inner_weight)), _weight_t(outer))
    return y.transpose([0, 2, 1, 3]).reshape([-1, groups * y.shape[-1]])


def _ones(x: paddle.Tensor, groups: int) -> paddle.Tensor:
    """[rows, groups, 1] ones for ``x`` [rows, channels]."""
    return paddle.ones([paddle.shape(x)[0], groups, 1], x.dtype)


def _layer_norm(x: paddle.Tensor, norm: _pm.SqueezeBertLayerNorm, shift: paddle.Tensor | None = None) -> paddle.Tensor:
    """``norm`` over the last axis of ``x``, ``shift`` added to its bias."""
    bias = norm.bias if shift is None else norm.bias + shift
    return F.layer_norm(x, x.shape[-1:], norm.weight, bias, norm._epsilon)


def _layer_batched(layer: _pm.SqueezeBertLayer, x: paddle.Tensor, mask: paddle.Tensor, batch: paddle.Tensor,
                   first_token: bool, ones: paddle.Tensor | None) -> paddle.Tensor:
    """Batched form of :func:`_layer_per_group` on ``x`` [batch * length, channels] (``first_token``: its output
    [batch, channels]; ``ones``: see :func:`_feed_forward_batched`). The same function with three
    biases moved where they cost no pass over an activation (onnxruntime adds them in passes of their own; the
    moved ones are computed from parameters, constants it folds):
    - the key's is left out: it adds query . bias to each query's scores, the same for every key, which the
      softmax cancels;
    - the value's goes into the post-attention convolution's: each query's attention weights sum to 1, so it adds
      the value bias to the context, which that convolution maps to a constant;
    - the feed-forward output's goes into the post-attention norm's bias, so into both the residual and the
      feed-forward input, and back out of the latter through the first convolution's bias (minus that
      convolution's weight on it).
    Tested with random biases against HF (tests/test_first_token.py)."""
    att, post = layer.attention, layer.post_attention
    inner, outer, act = layer.intermediate.conv1d, layer.output.conv1d, layer.intermediate.act
    heads, size = att.num_attention_heads, att.attention_head_size
    post_bias = post.conv1d.bias + _weight_on(post.conv1d, att.value.bias)
    inner_bias = inner.bias - _weight_on(inner, outer.bias)
    queries = x.reshape([batch, -1, x.shape[-1]])[:, 0] if first_token else x
    if first_token:
        (query,) = _qkv(queries, (att.query,), batch, heads, (att.query.bias,))
        key, value = _qkv(x, (att.key, att.value), batch, heads, (None, None))
    else:
        query, key, value = _qkv(x, (att.query, att.key, att.value), batch, heads, (att.query.bias, None, None))
    scores = paddle.matmul(query, key, transpose_y=True) * (1.0 / math.sqrt(size)) + mask.squeeze(1)
    context = paddle.matmul(F.softmax(scores, axis=-1), value).transpose([1, 2, 0, 3]).reshape([-1, att.all_head_size])
    hidden = _layer_norm(_linear(context, post.conv1d, post_bias) + queries, post.layernorm, outer.bias)
    # the [CLS] layer's rows (one token per sequence) as one sequence: GEMMs of every row, not of one each
    out = _feed_forward_batched(hidden, inner, outer, act, inner_bias, *((None, 1) if first_token else (ones, batch)))
    return _layer_norm(out + hidden, layer.output.layernorm)


def _layer_per_group(layer: _pm.SqueezeBertLayer, x: paddle.Tensor, mask: paddle.Tensor,
                     first_token: bool) -> paddle.Tensor:
    """``SqueezeBertLayer``'s eval-mode forward on token-major ``x`` [batch, length, channels] with this repo's
    operators. ``first_token``: the output at each sequence's first token only ([batch, 1, channels]), attending to
    every token."""
    att, post = layer.attention, layer.post_attention
    inner, outer, act = layer.intermediate.conv1d, layer.output.conv1d, layer.intermediate.act
    queries = x[:, :1] if first_token else x
    context = _attention_per_group(x, queries, att, mask)
    hidden = tk.grouped_linear_add_norm(context, post.conv1d, queries, post.layernorm)
    if inner._groups == outer._groups and tk.activation(act) == "gelu":
        return tk.grouped_ffn_add_norm(hidden, inner, outer, layer.output.layernorm)
    return _layer_norm(_feed_forward_per_group(hidden, inner, outer, act) + hidden, layer.output.layernorm)


def _encoder_forward(self, hidden_states, attention_mask=None, output_attentions=False, output_hidden_states=False):
    """``SqueezeBertEncoder.forward``; token-major in an eval-mode static graph (see above)."""
    if paddle.in_dynamic_mode() or self.training or output_attentions or output_hidden_states:
        return _ENCODER_FORWARD(self, hidden_states, attention_mask, output_attentions, output_hidden_states)
    last = len(self.layers) - 1
    if _per_group():  # [batch, length, channels] throughout: no reshape (reshape2 copied)
        x = hidden_states
        for i, layer in enumerate(self.layers):
            x = _layer_per_group(layer, x, attention_mask, getattr(self, "first_token", False) and i == last)
        return (x,)
    shape = paddle.shape(hidden_states)
    x = hidden_states.reshape([-1, hidden_states.shape[-1]])
    ones = {}  # by group count, built once (a layer building its own ran five shape operators: 0.5 ms of 48 at batch 1)
    for i, layer in enumerate(self.layers):
        first_token = getattr(self, "first_token", False) and i == last
        groups = layer.intermediate.conv1d._groups
        if groups not in ones:
            ones[groups] = _ones(x, groups)
        x = _layer_batched(layer, x, attention_mask, shape[0], first_token, ones[groups])
    return (x.reshape([shape[0], -1, shape[2]]),)


class FirstTokenEncoder(_pm.SqueezeBertEncoder):
    """An exported classifier's encoder whose last layer computes the first token only, all its head reads
    (``common/first_token.py``): its output is [batch, 1, channels]."""

    first_token = True


def _classifier_encoder(model) -> _pm.SqueezeBertEncoder | None:
    encoder = model.squeezebert.encoder
    return encoder if type(encoder) is _pm.SqueezeBertEncoder and len(encoder.layers) else None


# The layers holding convolutions, and their attribute names.
_CONVS = {
    "SqueezeBertSelfAttention": ("query", "key", "value"),
    "ConvDropoutLayerNorm": ("conv1d",),
    "ConvActivation": ("conv1d",),
}


def _with_pointwise(init, names: tuple[str, ...]):
    """``init``, then its ``names`` convolutions rebuilt as :class:`PointwiseConv1D` (the model's
    init hook and checkpoint loading come after)."""

    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        for name in names:
            conv = getattr(self, name)
            setattr(self, name, PointwiseConv1D(conv._in_channels, conv._out_channels, conv._groups))

    return __init__


_ENCODER_FORWARD = _pm.SqueezeBertEncoder.forward


def _apply() -> None:
    if getattr(_pm, "_compact_bert_pointwise", False):
        return
    for class_name, names in _CONVS.items():
        cls = getattr(_pm, class_name)
        cls.__init__ = _with_pointwise(cls.__init__, names)
    _pm.SqueezeBertSelfAttention.forward = _self_attention_forward
    _pm.SqueezeBertEncoder.forward = _encoder_forward
    register_first_token("SqueezeBertForSequenceClassification", _classifier_encoder, FirstTokenEncoder)
    _pm._compact_bert_pointwise = True


_apply()
