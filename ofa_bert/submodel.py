"""Width sub-models of a BERT classifier, as plain PaddleNLP layers (no PaddleSlim).

A sub-model at width ``w`` keeps, in every layer, the first ``w * heads`` attention heads and
the first ``w * intermediate_size`` feed-forward neurons; embeddings, hidden size, pooler and
classifier are unchanged. After importance reordering (``ofa_bert/ofa.py``) the first ones are
the most important, and these prefixes are exactly what PaddleSlim's ``SuperLinear`` computes
with at that width (``weight[:in, :out]``, ``bias[:out]``).

On disk a sub-model is a ``save_pretrained`` directory whose config has the reduced
``intermediate_size`` plus ``ofa_attention_heads`` (heads kept) and ``ofa_width_mult``;
``num_attention_heads`` stays the original so that the head size is unchanged. Load it with
:func:`load_submodel` (plain ``from_pretrained`` refuses it: the q/k/v/out shapes differ).
"""
from __future__ import annotations

import copy
import os
from typing import TYPE_CHECKING

import numpy as np

from common.errors import UserError

if TYPE_CHECKING:
    import paddle
    from paddlenlp.transformers import BertForSequenceClassification, PretrainedConfig

STATE_FILE = "model_state.pdparams"


def width_dims(config: PretrainedConfig, width: float) -> tuple[int, int]:
    """(attention heads, feed-forward neurons) kept per layer at ``width``."""
    if not 0 < width <= 1:
        raise UserError(f"width {width} must be in (0, 1]")
    heads = width * config.num_attention_heads
    if abs(heads - round(heads)) > 1e-6 or round(heads) < 1:
        raise UserError(
            f"width {width} keeps {heads:g} of {config.num_attention_heads} attention heads; "
            f"use a multiple of 1/{config.num_attention_heads}"
        )
    return round(heads), max(1, round(width * config.intermediate_size))


def shrink_attention(model: paddle.nn.Layer, heads: int) -> None:
    """Give every self-attention of ``model`` ``heads`` heads of the same size (fresh projections)."""
    import paddle.nn as nn

    for layer in model.bert.encoder.layers:
        attn = layer.self_attn
        hidden, width = attn.q_proj.weight.shape[0], heads * attn.head_dim
        for name in ("q_proj", "k_proj", "v_proj"):
            setattr(attn, name, nn.Linear(hidden, width))
        attn.out_proj = nn.Linear(width, hidden)
        attn.num_heads = heads


def _prefixes(state: dict, shapes: dict) -> dict:
    """Each tensor of ``shapes`` cut from the leading block of the same-named tensor of ``state``."""
    return {name: np.ascontiguousarray(state[name].numpy()[tuple(slice(0, n) for n in shape)])
            for name, shape in shapes.items()}


def extract_submodel(model: BertForSequenceClassification, width: float) -> BertForSequenceClassification:
    """A new ``BertForSequenceClassification`` holding ``model``'s sub-network at ``width``."""
    import paddlenlp.transformers as ppt

    heads, ffn = width_dims(model.config, width)
    config = copy.deepcopy(model.config)
    config.intermediate_size = ffn
    config.ofa_attention_heads = heads
    config.ofa_width_mult = width
    sub = ppt.BertForSequenceClassification(config)
    shrink_attention(sub, heads)
    shapes = {k: tuple(v.shape) for k, v in sub.state_dict().items()}
    sub.set_state_dict(_prefixes(model.state_dict(), shapes))
    sub.eval()
    return sub


def load_submodel(path: str) -> BertForSequenceClassification:
    """Load a sub-model directory written by ``ofa_bert/export_model.py``."""
    import paddle
    import paddlenlp.transformers as ppt

    config = ppt.BertConfig.from_pretrained(path)
    heads = getattr(config, "ofa_attention_heads", None)
    if heads is None:
        raise UserError(f"{path}: config.json has no ofa_attention_heads (not an exported OFA sub-model)")
    model = ppt.BertForSequenceClassification(config)
    shrink_attention(model, heads)
    state = paddle.load(os.path.join(path, STATE_FILE))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        bad = sorted(set(expected.items()) ^ set(got.items()))
        raise UserError(f"{path}: parameters do not fit the config: {bad[:4]}")
    model.set_state_dict(state)
    model.eval()
    return model


def count_parameters(model: paddle.nn.Layer) -> int:
    """Number of parameter values (trainable or not) of ``model``."""
    return sum(int(np.prod(p.shape)) for p in model.parameters())
