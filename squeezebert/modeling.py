"""SqueezeBERT's grouped 1x1 convolutions as batched matmuls: same parameters, same results, faster.

Importing this module makes PaddleNLP 2.8.1's SqueezeBERT layers (q/k/v, post-attention,
intermediate, output) build :class:`PointwiseConv1D` instead of ``nn.Conv1D``. The parameters keep
their names, shapes and layout ([out, in / groups, 1] weight, [out] bias), so checkpoints load as
before. Their self-attention runs without transposes (:func:`_self_attention_forward`). Every
entry point of this folder imports it (``spec.py`` does); nothing in site-packages is edited.
"""
from __future__ import annotations

import math

import paddle
from paddle import nn
from paddlenlp.transformers.squeezebert import modeling as _pm

from common import train_kernels as tk


class PointwiseConv1D(nn.Conv1D):
    """``nn.Conv1D`` with kernel size 1 on [batch, channels, length] inputs, computed as matmuls:
    no im2col, no per-group loop (paddle's conv2d kernel), no layout change.

    Two equivalent forms, each the faster where it runs (measured on 2 Xeon cores, 16-32 x 128):
    dygraph (fine-tuning) multiplies the [groups, out / groups, in / groups] weight with the [batch,
    groups, in / groups, length] input in one batched matmul; a static graph (export, paddle.inference)
    splits the channels into groups, one matmul each, and concatenates, which oneDNN runs 10-30 %
    faster in fp32 and bf16 than the batched form's reshapes of dynamic shapes."""

    def __init__(self, in_channels: int, out_channels: int, groups: int = 1):
        super().__init__(in_channels, out_channels, kernel_size=1, groups=groups)

    def forward(self, x):
        groups = self._groups
        if not paddle.in_dynamic_mode():  # being converted by to_static
            weight = self.weight.squeeze(-1)  # [out, in / groups]
            if groups == 1:
                return paddle.matmul(weight, x) + self.bias.unsqueeze(-1)
            parts = zip(paddle.split(weight, groups, axis=0), paddle.split(x, groups, axis=1))
            return paddle.concat([paddle.matmul(w, xg) for w, xg in parts], axis=1) + self.bias.unsqueeze(-1)
        out_channels, in_per_group = self.weight.shape[0], self.weight.shape[1]
        # 4-D like the input: paddle 2.6.2's matmul backward fails on a 3-D operand broadcast against a 4-D one.
        weight = self.weight.reshape([1, groups, out_channels // groups, in_per_group])
        batch, length = x.shape[0], x.shape[2]
        y = paddle.matmul(weight, x.reshape([batch, groups, in_per_group, length]))
        return y.reshape([batch, out_channels, length]) + self.bias.unsqueeze(-1)


# Fine-tuning on CPU: kernel-backed versions of the layers above (common/train_kernels.py switches
# a model to them in train mode; eval mode and export run the forwards above).


@tk.register
class TrainPointwiseConv1D(PointwiseConv1D):
    """One GEMM per sample and group, bias included (paddle's batched matmul sums the weight
    gradient over a broadcast batch one sample at a time)."""

    def forward(self, x):
        if self.training and tk.is_fp32(x):
            return tk.pointwise_conv(x, self.weight, self.bias, self._groups)
        return PointwiseConv1D.forward(self, x)


@tk.register
class TrainConvActivation(_pm.ConvActivation):
    """Convolution, bias and exact GELU in one operator."""

    def forward(self, x):
        conv = self.conv1d
        if (self.training and tk.activation(self.act) == "gelu" and isinstance(conv, PointwiseConv1D)
                and tk.is_fp32(x)):
            return tk.pointwise_conv(x, conv.weight, conv.bias, conv._groups, gelu=True)
        return _pm.ConvActivation.forward(self, x)


@tk.register
class TrainLayerNorm(_pm.SqueezeBertLayerNorm):
    """Layer norm over the channels without the two transposes."""

    def forward(self, x):
        if self.training and tk.is_fp32(x):
            return tk.channel_layer_norm(x, self.weight, self.bias, self._epsilon)
        return _pm.SqueezeBertLayerNorm.forward(self, x)


@tk.register
class TrainSelfAttention(_pm.SqueezeBertSelfAttention):
    """The transpose-free attention of :func:`_self_attention_forward` with scale, mask, softmax and
    dropout as one operator."""

    def forward(self, hidden_states, attention_mask, output_attentions):
        batch, channels, length = hidden_states.shape
        mask = None
        if self.training and not output_attentions and tk.is_fp32(hidden_states) and attention_mask is not None:
            mask = tk.additive_mask(attention_mask, batch, length, hidden_states.dtype)
        if mask is None:
            return _pm.SqueezeBertSelfAttention.forward(self, hidden_states, attention_mask, output_attentions)
        heads = [batch, self.num_attention_heads, self.attention_head_size, length]
        query, key, value = (conv(hidden_states).reshape(heads) for conv in (self.query, self.key, self.value))
        scores = paddle.matmul(query, key, transpose_x=True)
        probs = tk.softmax_dropout(scores, mask, self.attention_head_size**-0.5, self.dropout.p)
        context = paddle.matmul(value, probs, transpose_y=True)
        return {"context_layer": context.reshape([batch, channels, length])}


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


def _apply() -> None:
    if getattr(_pm, "_compact_bert_pointwise", False):
        return
    for class_name, names in _CONVS.items():
        cls = getattr(_pm, class_name)
        cls.__init__ = _with_pointwise(cls.__init__, names)
    _pm.SqueezeBertSelfAttention.forward = _self_attention_forward
    _pm._compact_bert_pointwise = True


_apply()
