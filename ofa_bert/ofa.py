"""PaddleSlim once-for-all (OFA) width-adaptive BERT with DynaBERT-style distillation.

Imported only by the OFA entry point (``run_glue_ofa.py``), never by ``ofa_bert/__init__``.
Nothing here patches a paddle class. PaddleSlim's ``nas.ofa.utils.nlp_utils`` replaces
``paddle.nn.MultiHeadAttention`` / ``TransformerEncoder(Layer)`` methods process-wide when
imported, and its attention drops the ``1/sqrt(head_dim)`` scaling (outputs change even at full
width); PaddleNLP's ``trainer_compress`` adds class attributes to the same classes. We use
neither: each self-attention *instance* of the student becomes a :class:`WidthAttention`
(:func:`bind_attention`), width-aware and carrying the head mask used for importance, so
BertModel's forward and PaddleNLP's encoder run unchanged. Distillation is ours too
(:func:`distill_step`): PaddleSlim's OFA runs the teacher again for every width of a batch.
On CPU the student's super layers and attention run this repo's operators (:class:`FastSuperLinear`,
:class:`FastWidthAttention`, registered with ``common.train_kernels``).
"""
from __future__ import annotations

import functools
import re
from typing import Callable, Iterable

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn
from paddle.nn.layer.transformer import _convert_attention_mask
from paddleslim.nas.ofa import OFA, DistillConfig
from paddleslim.nas.ofa.convert_super import Convert, supernet
from paddleslim.nas.ofa.layers import SuperLinear
from paddleslim.nas.ofa.utils import set_state_dict

from common import train_kernels as tk
from ofa_bert.submodel import width_dims


class WidthAttention(nn.MultiHeadAttention):
    """``paddle.nn.MultiHeadAttention`` for projections narrower than built (OFA widths): the head
    count follows ``q_proj``'s output width; ``head_masks[index]`` ([heads] or None; the list and index
    are :func:`bind_attention`'s: a tensor attribute of a layer would become a buffer) scales each head's
    attention weights."""

    def forward(self, query, key=None, value=None, attn_mask=None, cache=None):
        if cache is not None:
            raise NotImplementedError("OFA attention has no cache")
        key = query if key is None else key
        value = query if value is None else value

        def heads(x):
            return x.reshape([0, 0, -1, self.head_dim]).transpose([0, 2, 1, 3])

        q, k, v = heads(self.q_proj(query)), heads(self.k_proj(key)), heads(self.v_proj(value))
        product = paddle.matmul(q * (self.head_dim**-0.5), k, transpose_y=True)
        if attn_mask is not None:
            product = product + _convert_attention_mask(attn_mask, product.dtype)
        weights = F.softmax(product)
        if self.dropout:
            weights = F.dropout(weights, self.dropout, training=self.training, mode="upscale_in_train")
        if self.head_masks[self.index] is not None:
            weights = weights * self.head_masks[self.index].reshape([1, -1, 1, 1])
        out = paddle.matmul(weights, v).transpose([0, 2, 1, 3])
        out = self.out_proj(out.reshape([0, 0, -1]))
        return (out, weights) if self.need_weights else out


@tk.register
class FastWidthAttention(WidthAttention):
    """:class:`WidthAttention` through ``common.train_kernels.attend`` where it ``attends``. A head mask scales each
    head's output instead of its attention weights: the same product, since the weighted sum is linear in them."""

    def forward(self, query, key=None, value=None, attn_mask=None, cache=None):
        key = query if key is None else key
        value = query if value is None else value
        mask = tk.attention_mask(self, query, key, attn_mask, cache)
        if mask is None:
            return WidthAttention.forward(self, query, key, value, attn_mask, cache)
        q = self.q_proj(query)
        heads, head_mask = q.shape[-1] // self.head_dim, self.head_masks[self.index]
        out = tk.attend(q, self.k_proj(key), self.v_proj(value), mask, heads, tk.dropout_p(self, self.dropout or 0.0))
        if head_mask is not None:
            out = (out.reshape([0, 0, heads, self.head_dim]) * head_mask.reshape([1, 1, -1, 1])).reshape([0, 0, -1])
        return self.out_proj(out)


@tk.register
class FastSuperLinear(SuperLinear):
    """PaddleSlim's ``SuperLinear`` at a ``channel`` width (or full) as ``common.train_kernels``' GEMM, which reads
    the weight's used block in place (PaddleSlim slices a copy, and its gradient is one more full-size pass), and
    bias add where ``fast``; ``expand_ratio`` configs and the rest run PaddleSlim's forward."""

    def forward(self, input, expand_ratio=None, channel=None):
        if expand_ratio is not None or self.bias is None or input.ndim < 2 or not tk.fast(self, input):
            return SuperLinear.forward(self, input, expand_ratio, channel)
        cols = self._out_features if channel is None else int(channel)
        bias = self.bias if self.bias.shape[0] <= cols else self.bias[:cols]
        return tk.bias_add(tk.matmul(input, self.weight, out_features=cols), bias)


def bind_attention(model: nn.Layer) -> list:
    """Make each self-attention of ``model`` (a ``BertForSequenceClassification``) a :class:`WidthAttention`;
    returns the per-layer head-mask list they read (all None: no masking)."""
    layers = model.bert.encoder.layers
    head_masks: list = [None] * len(layers)
    for i, layer in enumerate(layers):
        attn = layer.self_attn
        if type(attn) is not nn.MultiHeadAttention:
            raise TypeError(f"layer {i}: self-attention is {type(attn).__name__}, not paddle's MultiHeadAttention")
        attn.__class__ = WidthAttention
        attn.head_masks, attn.index = head_masks, i
    return head_masks


def model_inputs(batch: dict) -> tuple[tuple, dict]:
    """(args, kwargs) of a classifier call on a collated batch (labels left out)."""
    return (batch["input_ids"],), {"token_type_ids": batch["token_type_ids"], "attention_mask": batch["attention_mask"]}


def head_neuron_importance(
    model: nn.Layer, head_masks: list, batches: Iterable[dict], loss_fn: Callable
) -> tuple[np.ndarray, list[np.ndarray]]:
    """DynaBERT importance from the task loss on ``batches`` (training data): per head,
    sum over batches of |dL/d head_mask|; per feed-forward neuron, |sum of w * dL/dw| over its
    input weights and bias plus over its output weights. Returns ([layers, heads], [per layer])."""
    layers = model.bert.encoder.layers
    mask = paddle.ones([len(layers), model.config.num_attention_heads], dtype="float32")
    mask.stop_gradient = False
    heads = np.zeros(mask.shape, dtype=np.float64)
    neurons = [np.zeros(layer.linear1.weight.shape[1], dtype=np.float64) for layer in layers]
    model.eval()
    for batch in batches:
        head_masks[:] = [mask[i] for i in range(len(layers))]
        args, kwargs = model_inputs(batch)
        loss_fn(model(*args, **kwargs), batch["labels"]).backward()
        heads += np.abs(mask.grad.numpy())
        for layer, importance in zip(layers, neurons):
            w1, b1, w2 = layer.linear1.weight, layer.linear1.bias, layer.linear2.weight
            importance += np.abs((w1.numpy() * w1.grad.numpy()).sum(0) + b1.numpy() * b1.grad.numpy())
            importance += np.abs((w2.numpy() * w2.grad.numpy()).sum(1))
        model.clear_gradients()
        mask.clear_gradient()
    head_masks[:] = [None] * len(layers)
    return heads, neurons


def _take(param, index: np.ndarray, axis: int) -> None:
    param.set_value(np.take(param.numpy(), index, axis=axis))


def reorder_by_importance(model: nn.Layer, heads: np.ndarray, neurons: list[np.ndarray]) -> None:
    """Permute heads and feed-forward neurons of every layer, most important first (the
    function computed by the full-width model is unchanged)."""
    for layer, head_imp, neuron_imp in zip(model.bert.encoder.layers, heads, neurons):
        attn = layer.self_attn
        order = np.argsort(-head_imp, kind="stable")
        cols = (order[:, None] * attn.head_dim + np.arange(attn.head_dim)).ravel()
        for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
            _take(proj.weight, cols, 1)
            _take(proj.bias, cols, 0)
        _take(attn.out_proj.weight, cols, 0)
        order = np.argsort(-neuron_imp, kind="stable")
        _take(layer.linear1.weight, order, 1)
        _take(layer.linear1.bias, order, 0)
        _take(layer.linear2.weight, order, 0)


# The layers whose width varies: attention projections and the feed-forward pair.
_ADAPTIVE = re.compile(r"bert\.encoder\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|linear1|linear2)")


def _to_supernet(model) -> None:
    """Replace the width-adaptive Linears of ``model`` by PaddleSlim super blocks, weights kept.

    Only those: PaddleSlim 2.6's ``SuperLayerNorm`` calls paddle 2.6's ``layer_norm`` op with
    its old signature and fails, and ``BertModel.forward`` reads ``self.pooler.dense.weight``,
    which a super ``Block`` hides; neither ever changes width, so both stay plain layers.
    """
    state = model.state_dict()
    names = [name for name, _ in model.named_sublayers() if _ADAPTIVE.fullmatch(name)]
    layers = [functools.reduce(getattr, name.split("."), model) for name in names]
    Convert(supernet(expand_ratio=[1.0])).convert(layers)  # replaces the list's items
    for name, layer in zip(names, layers):
        parent, _, attr = name.rpartition(".")
        setattr(functools.reduce(getattr, parent.split("."), model), attr, layer)
    set_state_dict(model, state)


def build_ofa(student: nn.Layer) -> OFA:
    """Turn ``student`` into a supernet wrapped in ``OFA`` (width only; distillation is :func:`distill_step`'s)."""
    _to_supernet(student)
    return OFA(student, elastic_order=["width"])


def build_paddleslim_ofa(student: nn.Layer, teacher: nn.Layer, lambda_rep: float) -> OFA:
    """PaddleSlim's own distillation set-up, which :func:`distill_step` replaces (the reference the tests compare
    with, and what ``time_distill.py --distill paddleslim`` times): the supernet in ``OFA`` with a
    ``DistillConfig`` on the embeddings and every encoder layer of ``teacher`` (weight ``lambda_rep``)."""
    _to_supernet(student)
    mapping = ["bert.embeddings"] + [f"bert.encoder.layers.{i}" for i in range(len(student.bert.encoder.layers))]
    distill = DistillConfig(lambda_distill=lambda_rep, teacher_model=teacher, mapping_layers=mapping)
    return OFA(student, distill_config=distill, elastic_order=["width"])


def paddleslim_distill_step(ofa_model: OFA, batch: dict, configs: list[dict], lambda_logit: float) -> list[float]:
    """:func:`distill_step` the PaddleSlim way, on a :func:`build_paddleslim_ofa` model (soft cross-entropy logit
    loss): per width config ``OFA.forward`` (the teacher and the student) and ``calc_distill_loss``, backward."""
    args, kwargs = model_inputs(batch)
    losses = []
    for config in configs:
        ofa_model.set_net_config(config)
        logits, teacher_logits = ofa_model(*args, **kwargs)
        loss = ofa_model.calc_distill_loss() + lambda_logit * soft_cross_entropy(logits, teacher_logits.detach())
        loss.backward()
        losses.append(float(loss))
    return losses


def width_config(ofa_model: OFA, width: float) -> dict:
    """OFA net config of the sub-network at ``width``: q/k/v keep ``heads * head_dim`` output
    channels, linear1 ``intermediate`` neurons; every other super layer runs at full size."""
    model = ofa_model.model
    heads, ffn = width_dims(model.config, width)
    head_dim = model.bert.encoder.layers[0].self_attn.head_dim
    config = {}
    for name in ofa_model.ofa_layers:
        if re.search(r"\.self_attn\.[qkv]_proj$", name):
            config[name] = {"channel": heads * head_dim}
        elif name.endswith(".linear1"):
            config[name] = {"channel": ffn}
        else:
            config[name] = {}
    return config


def set_width(ofa_model: OFA, config: dict) -> None:
    """Run the supernet at ``config`` when the student is called (OFA itself applies ``net_config`` only
    inside its own forward)."""
    ofa_model.set_net_config(config)
    ofa_model.current_config = config


def soft_cross_entropy(logits: paddle.Tensor, teacher_logits: paddle.Tensor) -> paddle.Tensor:
    """Cross-entropy of the student's logits against the teacher's softmax."""
    return -(F.softmax(teacher_logits, axis=-1) * F.log_softmax(logits, axis=-1)).sum(-1).mean()


def distill_step(ofa_model: OFA, teacher: nn.Layer, batch: dict, configs: list[dict], lambda_rep: float,
                 lambda_logit: float, regression: bool) -> list[float]:
    """One batch of OFA training, gradients accumulated: the frozen ``teacher``'s hidden states and logits once, then
    per width config the student's loss, ``lambda_rep`` x the sum over the embeddings and every encoder layer of the
    hidden states' MSE + ``lambda_logit`` x soft cross-entropy to the teacher's logits (MSE for regression), and its
    backward. PaddleSlim's ``OFA.forward`` with ``calc_distill_loss`` computes the same losses (its ``DistillConfig``
    with ``lambda_distill`` and the embeddings and layers as ``mapping_layers``) but runs the teacher for every width.
    Returns the losses, one per config."""
    args, kwargs = model_inputs(batch)
    kwargs.update(output_hidden_states=True, return_dict=True)
    with paddle.no_grad():
        target = teacher(*args, **kwargs)
    losses = []
    for config in configs:
        set_width(ofa_model, config)
        out = ofa_model.model(*args, **kwargs)
        rep = sum(F.mse_loss(s, t) for s, t in zip(out.hidden_states, target.hidden_states, strict=True))
        logit = F.mse_loss(out.logits, target.logits) if regression else soft_cross_entropy(out.logits, target.logits)
        loss = lambda_rep * rep + lambda_logit * logit
        loss.backward()
        losses.append(float(loss))
    return losses


def plain_state_dict(ofa_model: OFA) -> dict:
    """The supernet's parameters under the plain model's names (``.fn`` of super blocks removed)."""
    return {name.replace(".fn.", "."): value for name, value in ofa_model.model.state_dict().items()}
