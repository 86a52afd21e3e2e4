"""Exports of classifiers that compute their last encoder layer at the first token only.

A sequence classifier's head reads one vector per sequence: the last layer's output at the first
token ([CLS], through BERT's pooler). So that layer needs every token's key and value, but its query,
attention output, residual, norms and FFN only at that token; the export computes it there (the
other layers are unchanged) and gives the same logits. For BERT-base at 128 tokens that is 7 % fewer
FLOPs (``common/flops.py``, ``first_token=True``), for the 4-layer TinyBERT 21 %.

Applies to PaddleNLP classifiers whose encoder is paddle's ``nn.TransformerEncoder`` of post-norm
layers and whose pooler reads the first token (:data:`CLASSIFIERS`); other models export unchanged.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from paddle import nn

# Classifier classes whose logits depend on the last encoder layer at the first token only.
CLASSIFIERS = ("BertForSequenceClassification",)


class FirstTokenEncoderLayer(nn.TransformerEncoderLayer):
    """A post-norm encoder layer that returns [batch, 1, hidden]: its output at the first token,
    attending to every (unmasked) token."""

    def forward(self, src, src_mask=None, cache=None, output_attentions=False):
        src_mask = nn.layer.transformer._convert_attention_mask(src_mask, src.dtype)
        first = src[:, :1]
        x = self.norm1(first + self.dropout1(self.self_attn(first, src, src, src_mask)))
        return self.norm2(x + self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x))))))


def last_layer(model: nn.Layer) -> nn.TransformerEncoderLayer | None:
    """The encoder layer that :func:`at_first_token` computes at the first token only, or None where
    ``model`` is not such a classifier."""
    if type(model).__name__ not in CLASSIFIERS:
        return None
    encoder = getattr(getattr(model, model.base_model_prefix, None), "encoder", None)
    if not isinstance(encoder, nn.TransformerEncoder) or not len(encoder.layers):
        return None
    layer = encoder.layers[-1]
    if type(layer) is not nn.TransformerEncoderLayer or layer.normalize_before or "forward" in layer.__dict__:
        return None
    return layer


@contextlib.contextmanager
def at_first_token(model: nn.Layer, enabled: bool = True) -> Iterator[bool]:
    """Within: ``model``'s last encoder layer computes the first token only, where :func:`last_layer`
    finds one and ``enabled``; yields whether it does. The layer's class is restored afterwards."""
    layer = last_layer(model) if enabled else None
    if layer is None:
        yield False
        return
    layer.__class__ = FirstTokenEncoderLayer
    try:
        yield True
    finally:
        layer.__class__ = nn.TransformerEncoderLayer
