"""Exports of classifiers that compute their last encoder layer at the first token only.

A sequence classifier's head reads one vector per sequence: the last layer's output at the first
token ([CLS], through the pooler). So that layer needs every token's key and value, but its query,
attention output, residual, norms and FFN only at that token; the export computes it there (the
other layers are unchanged) and gives the same logits. BERT's needs no key or value projection at
all (:func:`first_token_attention`). For BERT-base at 128 tokens that is 8 % fewer FLOPs
(``common/flops.py``, ``first_token=True``), for the 4-layer TinyBERT 25 %; SqueezeBERT's (keys and
values projected) 7 %, the 24-layer MobileBERT's 3 %, ConvBERT-base's 8 %.

Which classifiers: :func:`register` (a classifier class, how to find the layer to switch, the class
that computes it at the first token). Here: PaddleNLP's BERT classifier, whose encoder is paddle's
``nn.TransformerEncoder`` of post-norm layers; ``squeezebert/modeling.py`` registers SqueezeBERT's,
``mobilebert/fixes.py`` MobileBERT's, ``convbert/modeling.py`` ConvBERT's.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import paddle
import paddle.nn.functional as F
from paddle import nn

# classifier class name -> (the layer to switch, or None where the model does not qualify; its first-token class)
_SWITCHES: dict[str, tuple[Callable[[nn.Layer], nn.Layer | None], type]] = {}


def register(classifier: str, find: Callable[[nn.Layer], nn.Layer | None], first_token_class: type) -> None:
    """Exports of ``classifier`` (a class name) switch ``find(model)`` to ``first_token_class`` (a subclass
    of its class whose output holds the first token only), where ``find`` returns a layer."""
    _SWITCHES[classifier] = (find, first_token_class)


def first_token_layer(model: nn.Layer) -> nn.Layer | None:
    """The layer that :func:`at_first_token` switches, or None where ``model`` is not such a classifier
    (or the layer's forward is set on the instance, which a change of class would not reach)."""
    find, _ = _SWITCHES.get(type(model).__name__, (lambda m: None, None))
    layer = find(model)
    return None if layer is None or "forward" in layer.__dict__ else layer


@contextlib.contextmanager
def at_first_token(model: nn.Layer, enabled: bool = True) -> Iterator[bool]:
    """Within: ``model``'s last encoder layer computes the first token only, where :func:`first_token_layer`
    finds one and ``enabled``; yields whether it does. The layer's class is restored afterwards."""
    layer = first_token_layer(model) if enabled else None
    if layer is None:
        yield False
        return
    base = type(layer)
    layer.__class__ = _SWITCHES[type(model).__name__][1]
    try:
        yield True
    finally:
        layer.__class__ = base


class FirstTokenEncoderLayer(nn.TransformerEncoderLayer):
    """A post-norm encoder layer that returns [batch, 1, hidden]: its output at the first token,
    attending to every (unmasked) token through :func:`first_token_attention`."""

    def forward(self, src, src_mask=None, cache=None, output_attentions=False):
        src_mask = nn.layer.transformer._convert_attention_mask(src_mask, src.dtype)
        first = src[:, 0]
        return post_norm_rest(self, first, first_token_attention(self.self_attn, first, src, src_mask)).unsqueeze(1)


def post_norm_rest(layer: nn.TransformerEncoderLayer, src: paddle.Tensor, attention: paddle.Tensor) -> paddle.Tensor:
    """What a post-norm ``layer`` computes after its attention: the residual add and norm1, the FFN, the
    residual add and norm2 (``src``: the attention's input, at the positions ``attention`` covers)."""
    x = layer.norm1(src + layer.dropout1(attention))
    return layer.norm2(x + layer.dropout2(layer.linear2(layer.dropout(layer.activation(layer.linear1(x))))))


def first_token_attention(att: nn.MultiHeadAttention, first: paddle.Tensor, src: paddle.Tensor,
                          mask: paddle.Tensor | None) -> paddle.Tensor:
    """``att(first, src, src, mask)`` (eval mode) for the [batch, hidden] ``first`` over the [batch, length,
    hidden] ``src``, without projecting the keys or values of ``src`` (:func:`first_token_context`).
    [batch, hidden] out; ``mask`` additive, [batch, 1 or heads, queries, length]."""
    return att.out_proj(first_token_context(att, att.q_proj(first), src, mask))


def first_token_context(att: nn.Layer, query: paddle.Tensor, src: paddle.Tensor,
                        mask: paddle.Tensor | None) -> paddle.Tensor:
    """The heads' context (before the output projection) of the projected [batch, heads x size] ``query``
    over ``src`` through ``att``'s key and value projections (``k_proj``, ``v_proj``; ``num_heads``,
    ``head_dim``), without applying them to ``src``: per head, q · (x Wk + bk) = x · (Wk q) + q · bk, where
    the last term is the same for every key (softmax ignores it), so the scores are ``src`` times the query
    mapped back through Wk; and the probabilities sum to 1, so the context is (p · src) Wv + bv."""
    heads, size, width = att.num_heads, att.head_dim, src.shape[-1]
    query = query.reshape([-1, heads, size]).transpose([1, 0, 2])  # [heads, batch, size]
    w_key = att.k_proj.weight.reshape([width, heads, size]).transpose([1, 2, 0])  # [heads, size, width]
    mapped = paddle.matmul(query, w_key).transpose([1, 0, 2]) * size**-0.5  # [batch, heads, width]
    scores = paddle.matmul(mapped, src, transpose_y=True)  # [batch, heads, length]
    if mask is not None:
        scores = scores + mask[:, :, 0]
    mixed = paddle.matmul(F.softmax(scores, axis=-1), src).transpose([1, 0, 2])  # [heads, batch, width]
    w_value = att.v_proj.weight.reshape([width, heads, size]).transpose([1, 0, 2])  # [heads, width, size]
    return paddle.matmul(mixed, w_value).transpose([1, 0, 2]).reshape([-1, heads * size]) + att.v_proj.bias


def _bert_last_layer(model: nn.Layer) -> nn.TransformerEncoderLayer | None:
    encoder = getattr(getattr(model, model.base_model_prefix, None), "encoder", None)
    if not isinstance(encoder, nn.TransformerEncoder) or not len(encoder.layers):
        return None
    layer = encoder.layers[-1]
    return layer if type(layer) is nn.TransformerEncoderLayer and not layer.normalize_before else None


register("BertForSequenceClassification", _bert_last_layer, FirstTokenEncoderLayer)
