"""Paddle layers that behave as their torch counterparts do, for model folders fixing PaddleNLP."""
from __future__ import annotations

import paddle
import paddle.nn as nn
import paddle.nn.functional as F


class TorchPaddingEmbedding(nn.Embedding):
    """torch's ``padding_idx``: the padding row is looked up like any other row and gets no gradient.

    Paddle's ``padding_idx`` returns zeros for that id instead, which changes every model whose
    [PAD] vectors reach real tokens (MobileBERT's trigram input, ConvBERT's unmasked convolution).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None):
        super().__init__(num_embeddings, embedding_dim)
        self.torch_padding_idx = padding_idx

    def forward(self, x):
        out = F.embedding(x, self.weight)
        if self.torch_padding_idx is None or self.weight.stop_gradient or not paddle.is_grad_enabled():
            return out
        return paddle.where((x == self.torch_padding_idx).unsqueeze(-1), out.detach(), out)


def extended_attention_mask(attention_mask: paddle.Tensor, dtype: paddle.dtype | str) -> paddle.Tensor:
    """HF's additive mask: 0 where attended, the dtype's lowest value where masked.

    PaddleNLP adds -10000, which large attention scores (MobileBERT's reach 1e5) outweigh.
    Takes [batch, seq] or [batch, from, to] masks, as HF does.
    """
    if attention_mask.ndim not in (2, 3):
        raise ValueError(f"attention_mask must be [batch, seq] or [batch, from, to], not {attention_mask.shape}")
    mask = attention_mask.astype(dtype)
    mask = mask.unsqueeze([1, 2]) if mask.ndim == 2 else mask.unsqueeze(1)
    return (1.0 - mask) * paddle.finfo(dtype).min
