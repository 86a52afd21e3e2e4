"""Make PaddleNLP 2.8.1's MobileBERT compute what Hugging Face's does (see README.md).

Importing this module patches ``paddlenlp.transformers.mobilebert.modeling`` in place, so
``paddlenlp.transformers.MobileBertModel`` & co. (looked up by name in ``common/``) are the fixed
classes. Every entry point of this folder imports it before building a model; a process that
builds a PaddleNLP MobileBERT without it gets PaddleNLP's behaviour. Nothing in site-packages
is edited; the state-dict names and shapes are unchanged.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddlenlp.transformers.mobilebert import modeling as _pm

from common import train_kernels as tk
from common.first_token import register as register_first_token
from common.layers import TorchPaddingEmbedding, extended_attention_mask


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` that also takes torch's ``eps`` keyword (default 1e-5, as torch and paddle).

    PaddleNLP passes ``eps=`` (paddle's keyword is ``epsilon``): ``normalization_type="layer_norm"``
    raised a TypeError. Where HF passes no eps (embeddings, layer output) torch's 1e-5 applies.
    """

    def __init__(self, normalized_shape, eps: float = 1e-5, **kwargs):
        kwargs.setdefault("epsilon", eps)
        super().__init__(normalized_shape, **kwargs)


class NoNorm(nn.Layer):
    """x * weight + bias with 1-D parameters in the model's dtype (PaddleNLP hard-coded float32)."""

    def __init__(self, feat_size, eps=None):
        super().__init__()
        shape = [feat_size] if isinstance(feat_size, int) else list(feat_size)
        self.bias = self.create_parameter(shape, is_bias=True)
        self.weight = self.create_parameter(shape, default_initializer=nn.initializer.Constant(1.0))

    def forward(self, input_tensor):
        return input_tensor * self.weight + self.bias


@tk.register
class TrainNoNorm(NoNorm):
    """NoNorm as one operator (common/train_kernels.py)."""

    def forward(self, input_tensor):
        if tk.fast(self, input_tensor):
            return tk.scale_shift(input_tensor, self.weight, self.bias)
        return NoNorm.forward(self, input_tensor)


def _add_norm(norm: nn.Layer, x, residual):
    """``norm(x + residual)``: one operator where ``norm`` is a kernel-backed NoNorm (and :func:`tk.fast`)."""
    if type(norm) is TrainNoNorm and tk.fast(norm, x):
        return tk.scale_shift(x, norm.weight, norm.bias, residual=residual)
    return norm(x + residual)


def _folds(norm: nn.Layer) -> bool:
    """Whether an export (eval mode: no dropout) runs NoNorm ``norm`` with the dense before it: folded into its
    weights (:func:`_folded`), or after a residual add in place over its output (:func:`_dense_add_norm`)."""
    return tk.in_export() and isinstance(norm, NoNorm)


def _folded(dense: nn.Linear, norm: NoNorm, x):
    """``norm(dense(x))`` as one linear map, ``x (W * g) + (b * g + c)`` (NoNorm scale ``g``, shift ``c``):
    paddle.inference folds the products of parameters into constants (common/inference.py runs
    ``constant_folding_pass`` first) and runs one ``fc``."""
    return F.linear(x, dense.weight * norm.weight, dense.bias * norm.weight + norm.bias)


def _dense_add_norm(dense: nn.Linear, x, residual, norm: nn.Layer, dropout: nn.Layer | None = None):
    """``norm(dropout(dense(x)) + residual)``; in an export the dense's ``fc``, then the add and NoNorm in place
    over its output (one operator; the folded ``x (W * g) + (b * g + c) + residual * g`` took two more passes; an
    fp32 predictor runs the two as one, common/inference.py's fuse_blocks); in evaluation one operator
    (:func:`_evaluating`)."""
    if _folds(norm):
        return tk.add_scale_shift_(dense(x), residual, norm.weight, norm.bias)
    if _evaluating(norm, x) and dense.bias is not None and (dropout is None or not dropout.training):
        return tk.linear_add_scale_shift(x, dense, residual, norm)
    y = dense(x)
    return _add_norm(norm, y if dropout is None else dropout(y), residual)


@tk.register
class TrainBottleneckLayer(_pm.BottleneckLayer):
    """Dense + NoNorm, folded in an export."""

    exported = True

    def forward(self, hidden_states):
        if _folds(self.layer_norm):
            return _folded(self.dense, self.layer_norm, hidden_states)
        return _pm.BottleneckLayer.forward(self, hidden_states)


@tk.register
class TrainAttention(_pm.MobileBertAttention):
    """Attention through common/train_kernels.attend (also in exports); the output dense, residual add
    and NoNorm through :func:`_dense_add_norm`."""

    exported = True

    def forward(self, query_tensor, key_tensor, value_tensor, hidden_states, attention_mask=None, head_mask=None,
                output_attentions=None):
        mask = None
        if tk.attends(self, query_tensor) and head_mask is None and not output_attentions:
            mask = tk.additive_mask(attention_mask, query_tensor.shape[0], key_tensor.shape[1], query_tensor.dtype)
        if mask is None:
            return _pm.MobileBertAttention.forward(self, query_tensor, key_tensor, value_tensor, hidden_states,
                                                   attention_mask, head_mask, output_attentions)
        context = tk.attend(self.query(query_tensor), self.key(key_tensor), self.value(value_tensor), mask,
                            self.num_attention_heads, tk.dropout_p(self, self.attention_dropout.p))
        dropout = None if self.use_bottleneck else self.output_dropout
        return (_dense_add_norm(self.dense, context, hidden_states, self.layer_norm, dropout),)


@tk.register
class TrainFFNOutput(_pm.FFNOutput):
    exported = True  # folded in exports (_dense_add_norm)

    def forward(self, hidden_states, residual_tensor):
        return _dense_add_norm(self.dense, hidden_states, residual_tensor, self.layer_norm)


@tk.register
class TrainOutputBottleneck(_pm.OutputBottleneck):
    exported = True  # folded in exports (_dense_add_norm)

    def forward(self, hidden_states, residual_tensor):
        return _dense_add_norm(self.dense, hidden_states, residual_tensor, self.layer_norm, self.dropout)


@tk.register
class TrainOutput(_pm.MobileBertOutput):
    exported = True  # folded in exports (_dense_add_norm)

    def forward(self, intermediate_states, residual_tensor_1, residual_tensor_2):
        if not self.use_bottleneck:
            return _dense_add_norm(self.dense, intermediate_states, residual_tensor_1, self.layer_norm, self.dropout)
        return self.bottleneck(_dense_add_norm(self.dense, intermediate_states, residual_tensor_1, self.layer_norm),
                               residual_tensor_2)


@tk.register
class TrainIntermediate(_pm.MobileBertIntermediate):
    """Dense, bias and ReLU: a matmul and one operator."""

    def forward(self, hidden_states):
        if tk.fast(self, hidden_states) and tk.activation(self.intermediate_act_fn) == "relu":
            return tk.bias_relu(tk.matmul(hidden_states, self.dense.weight), self.dense.bias)
        return _pm.MobileBertIntermediate.forward(self, hidden_states)


def _evaluating(norm: nn.Layer, x) -> bool:
    """Whether NoNorm ``norm`` is kernel-backed and runs on ``x`` without dropout or gradient (evaluation)."""
    return type(norm) is TrainNoNorm and tk.fast(norm, x) and not norm.training and not paddle.is_grad_enabled()


def _fused_ffn(intermediate: nn.Layer, output: nn.Layer, x) -> bool:
    """Whether feed-forward network ``intermediate`` + ``output`` (its dense, residual add and NoNorm) runs as one
    operator on ``x`` (:func:`tk.ffn_relu_add_scale_shift`): :func:`_evaluating`, ReLU, linears with biases."""
    return (_evaluating(output.layer_norm, x) and tk.activation(intermediate.intermediate_act_fn) == "relu"
            and intermediate.dense.bias is not None and output.dense.bias is not None)


def _ffn(intermediate: nn.Layer, output: nn.Layer, x):
    """``output.layer_norm(output.dense(intermediate(x)) + x)`` as one operator (:func:`_fused_ffn`)."""
    return tk.ffn_relu_add_scale_shift(x, intermediate.dense, output.dense, output.layer_norm)


@tk.register
class TrainFFNLayer(_pm.FFNLayer):
    """In evaluation one operator (:func:`_fused_ffn`)."""

    def forward(self, hidden_states):
        if _fused_ffn(self.intermediate, self.output, hidden_states):
            return _ffn(self.intermediate, self.output, hidden_states)
        return _pm.FFNLayer.forward(self, hidden_states)


@tk.register
class TrainLayer(_pm.MobileBertLayer):
    """In evaluation its last feed-forward network (intermediate, output dense, residual add and NoNorm) as one
    operator too (:func:`_fused_ffn`); returns the layer output only (what the encoder reads; PaddleNLP's forward
    also returns intermediate tensors, and runs where attentions are asked for)."""

    def forward(self, hidden_states, attention_mask=None, head_mask=None, output_attentions=None):
        if output_attentions or not _fused_ffn(self.intermediate, self.output, hidden_states):
            return _pm.MobileBertLayer.forward(self, hidden_states, attention_mask, head_mask, output_attentions)
        query = key = value = layer_input = hidden_states
        if self.use_bottleneck:
            query, key, value, layer_input = self.bottleneck(hidden_states)
        x = self.attention(query, key, value, layer_input, attention_mask, head_mask)[0]
        for ffn in self.ffn if self.num_feedforward_networks != 1 else ():
            x = ffn(x)
        x = _ffn(self.intermediate, self.output, x)
        return (self.output.bottleneck(x, hidden_states) if self.use_bottleneck else x,)


class FirstTokenLayer(_pm.MobileBertLayer):
    """An exported classifier's last layer (``common/first_token.py``): its output at the first token only,
    [batch, 1, hidden], all the head reads. The bottlenecks, keys and values cover every token; the query,
    attention output, feed-forward networks and output at the first."""

    def forward(self, hidden_states, attention_mask=None, head_mask=None, output_attentions=None):
        first = hidden_states[:, :1]  # sliced here, so that the last feed-forward network's operators are
        # consecutive in an export (an fp32 predictor runs them as one, common/inference.py's fuse_blocks)
        query = key = value = layer_input = hidden_states
        if self.use_bottleneck:
            query, key, value, layer_input = self.bottleneck(hidden_states)
        attention_output = self.attention(query[:, :1], key, value, layer_input[:, :1], attention_mask, head_mask,
                                          output_attentions=output_attentions)[0]
        if self.num_feedforward_networks != 1:
            for ffn in self.ffn:
                attention_output = ffn(attention_output)
        return (self.output(self.intermediate(attention_output), attention_output, first),)


def _last_layer(model) -> _pm.MobileBertLayer | None:
    layers = model.mobilebert.encoder.layers
    return layers[-1] if len(layers) and type(layers[-1]) is _pm.MobileBertLayer else None


# PaddleNLP's own methods, kept once (tests put them back to show what the fixes change).
PADDLENLP = getattr(_pm, "_compact_bert_originals", None) or {
    "MobileBertEmbeddings.__init__": _pm.MobileBertEmbeddings.__init__,
    "MobileBertModel.forward": _pm.MobileBertModel.forward,
}


def _embeddings_init_fixed(self, config):
    PADDLENLP["MobileBertEmbeddings.__init__"](self, config)
    self.word_embeddings = TorchPaddingEmbedding(config.vocab_size, config.embedding_size, padding_idx=config.pad_token_id)


def _model_forward(
    self,
    input_ids,
    attention_mask=None,
    token_type_ids=None,
    position_ids=None,
    head_mask=None,
    inputs_embeds=None,
    output_hidden_states=None,
    output_attentions=None,
    return_dict=None,
):
    """PaddleNLP's ``MobileBertModel.forward`` with HF's attention mask (see :func:`common.layers.extended_attention_mask`)."""
    if input_ids is not None and inputs_embeds is not None:
        raise ValueError("You cannot specify both input_ids and inputs_embeds at the same time")
    if input_ids is None and inputs_embeds is None:
        raise ValueError("You have to specify either input_ids or inputs_embeds")
    input_shape = input_ids.shape if input_ids is not None else inputs_embeds.shape[:-1]
    if attention_mask is None:
        attention_mask = paddle.ones(input_shape, dtype="int64")
    if token_type_ids is None:
        token_type_ids = paddle.zeros(input_shape, dtype="int64")
    head_mask = self.get_head_mask(head_mask, self.num_hidden_layers)
    embedding_output = self.embeddings(
        input_ids=input_ids, position_ids=position_ids, token_type_ids=token_type_ids, inputs_embeds=inputs_embeds
    )
    encoder_outputs = self.encoder(
        embedding_output,
        attention_mask=extended_attention_mask(attention_mask, embedding_output.dtype),
        head_mask=head_mask,
        output_attentions=bool(output_attentions),
        output_hidden_states=bool(output_hidden_states),
        return_dict=bool(return_dict),
    )
    sequence_output = encoder_outputs[0]
    pooled_output = self.pooler(sequence_output) if self.pooler is not None else None
    if not return_dict:
        return (sequence_output, pooled_output) + tuple(encoder_outputs[1:])
    return _pm.BaseModelOutputWithPoolingAndCrossAttentions(
        last_hidden_state=sequence_output,
        pooler_output=pooled_output,
        hidden_states=encoder_outputs.hidden_states,
        attentions=encoder_outputs.attentions,
    )


def _apply() -> None:
    if getattr(_pm, "_compact_bert_originals", None):
        return
    _pm.NORM2FN["layer_norm"] = LayerNorm  # the classes look NORM2FN / NoNorm up at call time
    _pm.NORM2FN["no_norm"] = NoNorm
    _pm.NoNorm = NoNorm  # MobileBertPretrainedModel._init_weights tests isinstance(layer, NoNorm)
    _pm.MobileBertEmbeddings.__init__ = _embeddings_init_fixed
    _pm.MobileBertModel.forward = _model_forward
    register_first_token("MobileBertForSequenceClassification", _last_layer, FirstTokenLayer)
    _pm._compact_bert_originals = PADDLENLP


_apply()
