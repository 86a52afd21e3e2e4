"""PaddleNLP 2.8.1's ConvBERT, made to compute what Hugging Face's ConvBERT computes (see README.md).

Two classes, registered in ``paddlenlp.transformers`` under their own names (``common/`` looks
classes up there by the name in config.json), so PaddleNLP's own ConvBert classes are untouched:

* :class:`ConvBertHFModel`: the base model. Its state dict has PaddleNLP's ``ConvBertModel`` names
  and shapes, minus the pooler (HF and the original ConvBERT have none; ``pooled_output`` is the
  [CLS] hidden state, the original's ``get_pooled_output()``).
* :class:`ConvBertHFForSequenceClassification`: PaddleNLP's classification model on that base;
  its head (dropout, dense, activation, dropout, out_proj) gets the [CLS] hidden state, as HF's.

Importing this module registers them; every entry point of this folder does.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import paddlenlp.transformers as ppt
from paddlenlp.transformers.convbert import modeling as pm
from paddlenlp.transformers.model_outputs import BaseModelOutputWithPoolingAndCrossAttentions

from common import train_kernels as tk
from common.first_token import first_token_context, post_norm_rest
from common.first_token import register as register_first_token
from common.layers import TorchPaddingEmbedding, extended_attention_mask


class Embeddings(pm.ConvBertEmbeddings):
    """PaddleNLP's embeddings (same names) with torch's padding row, honouring ``position_ids``
    (PaddleNLP ignores them). Built without paddle's ``padding_idx``, which also fails under
    ``from_pretrained(..., low_cpu_mem_usage=True)``."""

    def __init__(self, config):
        nn.Layer.__init__(self)
        self.word_embeddings = TorchPaddingEmbedding(config.vocab_size, config.embedding_size, config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.embedding_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.embedding_size)
        self.layer_norm = nn.LayerNorm(config.embedding_size, epsilon=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None):
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        batch, seq = inputs_embeds.shape[0], inputs_embeds.shape[1]
        if position_ids is None:
            position_ids = paddle.arange(seq, dtype="int64").unsqueeze(0)
        if token_type_ids is None:
            token_type_ids = paddle.zeros([batch, seq], dtype="int64")
        embeddings = inputs_embeds + self.position_embeddings(position_ids) + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.layer_norm(embeddings))


class SeparableConv1D(pm.SeparableConv1D):
    """PaddleNLP's layer (same parameters) computed channels-first: depthwise ``conv1d`` on [B, C, L],
    then the pointwise 1x1 convolution as a matmul.

    PaddleNLP's channels-last (``NLC``) convolutions break ``paddle.inference`` with oneDNN in paddle
    2.6.2: the output comes back as [B, C, L] where [B, L, C] is expected (a shape error).
    """

    def forward(self, hidden_states):
        depthwise = self.depthwise
        x = F.conv1d(hidden_states.transpose([0, 2, 1]), depthwise.weight, padding=depthwise._padding,
                     groups=depthwise._groups)
        return paddle.matmul(x.transpose([0, 2, 1]), self.pointwise.weight.squeeze(-1), transpose_y=True) + self.bias


class SelfAttention(pm.MultiHeadAttentionWithConv):
    """HF ``ConvBertSelfAttention``'s sizes; PaddleNLP's forward (same computation) is kept.

    HF: ``num_attention_heads // head_ratio`` heads (at least 1, always with the convolution), each
    of size ``hidden // heads // 2``, so the attention and convolution halves concatenate to
    ``hidden``. PaddleNLP sizes heads as ``hidden // num_attention_heads`` and drops the convolution
    when there would be no head: the same only for ``head_ratio`` 2 (all published checkpoints).
    """

    def __init__(self, hidden_size: int, num_attention_heads: int, dropout: float, conv_kernel_size: int,
                 head_ratio: int):
        nn.Layer.__init__(self)
        heads = max(num_attention_heads // head_ratio, 1)
        self.embed_dim = self.kdim = self.vdim = hidden_size
        self.need_weights = False
        self.num_heads = heads
        self.head_dim = hidden_size // heads // 2
        self.all_head_size = heads * self.head_dim
        self.scale = self.head_dim**-0.5
        self.conv_type = "sdconv"
        self.conv_kernel_size = conv_kernel_size
        self.padding = (conv_kernel_size - 1) // 2

        self.dropout = nn.Dropout(dropout)
        self.q_proj = nn.Linear(hidden_size, self.all_head_size)
        self.k_proj = nn.Linear(hidden_size, self.all_head_size)
        self.v_proj = nn.Linear(hidden_size, self.all_head_size)
        self.out_proj = nn.Linear(hidden_size, hidden_size)
        self.key_conv_attn_layer = SeparableConv1D(hidden_size, self.all_head_size, conv_kernel_size)
        self.conv_kernel_layer = nn.Linear(self.all_head_size, heads * conv_kernel_size)
        self.conv_out_layer = nn.Linear(hidden_size, self.all_head_size)

    def forward(self, query, key=None, value=None, attn_mask=None, cache=None):
        """PaddleNLP's forward; converted to a static graph (export, eval mode), the same attention
        with the span convolution as this repo's operator inside ``common.train_kernels.export_ops``
        (2x faster in paddle.inference on CPU than PaddleNLP's K slices, ``stack`` and batched
        matmul), else as PaddleNLP computes it with paddle's operators (:func:`stacked_span_conv`)."""
        if paddle.in_dynamic_mode() or not self._operator_case(query, key, value, cache):
            return super().forward(query, key, value, attn_mask, cache)
        q = self.q_proj(query)
        heads = [0, 0, self.num_heads, self.head_dim]
        qh, kh, vh = (x.reshape(heads).transpose([0, 2, 1, 3]) for x in (q, self.k_proj(query), self.v_proj(query)))
        scores = paddle.matmul(qh, kh, transpose_y=True) * self.scale
        if attn_mask is not None:
            scores = scores + nn.layer.transformer._convert_attention_mask(attn_mask, scores.dtype)
        out = paddle.matmul(F.softmax(scores), vh).transpose([0, 2, 1, 3]).reshape([0, 0, self.all_head_size])
        return self._with_span_conv(query, q, self.key_conv_attn_layer(query), out)

    def _operator_case(self, query, key, value, cache) -> bool:
        """Self-attention with no cache and no returned weights, on this file's SeparableConv1D: the
        case the operator paths (export here, fine-tuning in TrainSelfAttention) take."""
        return (cache is None and not self.need_weights and (key is None or key is query)
                and (value is None or value is query) and type(self.key_conv_attn_layer) is SeparableConv1D)

    def _with_span_conv(self, query, q, mixed, attention):
        """The output projection of the attention half and the span convolution's half (this repo's
        operator; :func:`stacked_span_conv` in a portable export), given the projected ``q`` and the
        separable convolution ``mixed`` of ``query``."""
        logits = self.conv_kernel_layer(mixed * q)
        span = tk.span_conv if tk.in_export() or paddle.in_dynamic_mode() else stacked_span_conv
        conv = span(self.conv_out_layer(query), logits, self.num_heads, self.padding)
        return self.out_proj(paddle.concat([attention, conv], axis=-1))


def stacked_span_conv(values: paddle.Tensor, logits: paddle.Tensor, heads: int, pad: int) -> paddle.Tensor:
    """:func:`common.train_kernels.span_conv` in paddle's operators, as PaddleNLP computes it (the
    2 * ``pad`` + 1 shifted slices stacked, a batched matmul with the softmaxed kernel), but padded
    by concatenating zeros: paddle2onnx 1.3.1 mis-converts PaddleNLP's channels-last ``F.pad``."""
    kernel, size = 2 * pad + 1, values.shape[-1] // heads
    weights = F.softmax(logits.reshape([-1, kernel, 1]), axis=1)
    zeros = _zero_positions(values, pad)
    padded = paddle.concat([zeros, values, zeros], axis=1)
    shifted = [padded[:, k:] if k == kernel - 1 else padded[:, k:k - kernel + 1] for k in range(kernel)]
    out = paddle.matmul(paddle.stack(shifted, axis=-1).reshape([-1, size, kernel]), weights)
    return out.reshape([paddle.shape(values)[0], -1, values.shape[-1]])


def _zero_positions(values: paddle.Tensor, count: int) -> paddle.Tensor:
    """[batch, ``count``, channels] zeros like ``values`` (``zeros_like(values[:, :count])`` would be short
    on sequences of fewer than ``count`` positions)."""
    return paddle.zeros_like(values[:, :1]).expand([-1, count, -1])


class GroupedLinear(pm.GroupedLinear):
    """PaddleNLP's layer (same parameters and computation) without its ``[batch_size, -1, out]`` reshape,
    which cannot be exported (batch and length both unknown): the groups become an axis of [B, L, ...]."""

    def forward(self, hidden_states):
        x = hidden_states.reshape([0, 0, self.num_groups, self.group_in_dim]).transpose([2, 0, 1, 3])
        x = paddle.matmul(x, self.weight.unsqueeze(1))  # [groups, batch, length, out / groups]
        return x.transpose([1, 2, 0, 3]).reshape([0, 0, self.output_size]) + self.bias


class EncoderLayer(pm.TransformerEncoderLayerWithConv):
    """PaddleNLP's layer with HF's attention sizes and its LayerNorms at ``layer_norm_eps``.

    paddle's TransformerEncoderLayer makes its norms with epsilon 1e-5; PaddleNLP corrects that only
    in its weight-init hook, which ``from_pretrained(..., low_cpu_mem_usage=True)`` skips.
    ``nn.TransformerEncoder`` builds layers 2..N as ``type(layer)(**layer._config)``, so the fixes
    live in ``__init__``. Grouped FFN linears (``num_groups`` > 1) are :class:`GroupedLinear`.
    """

    def __init__(self, d_model, nhead, dim_feedforward, dropout=0.1, activation="relu", attn_dropout=None,
                 act_dropout=None, normalize_before=False, conv_kernel_size=None, head_ratio=None, num_groups=None,
                 layer_norm_eps=1e-12, **kwargs):
        super().__init__(d_model, nhead, dim_feedforward, dropout=dropout, activation=activation,
                         attn_dropout=attn_dropout, act_dropout=act_dropout, normalize_before=normalize_before,
                         conv_kernel_size=conv_kernel_size, head_ratio=head_ratio, num_groups=num_groups)
        attn_dropout = dropout if attn_dropout is None else attn_dropout
        self.self_attn = SelfAttention(d_model, nhead, attn_dropout, conv_kernel_size, head_ratio)
        if num_groups > 1:
            self.linear1 = GroupedLinear(d_model, dim_feedforward, num_groups)
            self.linear2 = GroupedLinear(dim_feedforward, d_model, num_groups)
        self.norm1._epsilon = self.norm2._epsilon = layer_norm_eps
        self._config["layer_norm_eps"] = layer_norm_eps

    def forward(self, src, src_mask=None, cache=None, output_attentions=False):
        """PaddleNLP's; in an export holding this repo's operators, a feed-forward block of grouped linears (with
        exact GELU, its residual add and norm) as one operator, ``ct_grouped_ffn_add_norm`` (their weights are
        already [groups, in / groups, out / groups])."""
        if (tk.in_export() and type(self.linear1) is GroupedLinear and type(self.linear2) is GroupedLinear
                and self.activation is F.gelu and not self.normalize_before and cache is None and not output_attentions):
            src_mask = nn.layer.transformer._convert_attention_mask(src_mask, src.dtype)
            hidden = self.norm1(src + self.dropout1(self.self_attn(src, src, src, src_mask)))
            return tk.grouped_ffn_add_norm(hidden, self.linear1, self.linear2, self.norm2)
        extra = {"output_attentions": True} if output_attentions else {}
        return pm.TransformerEncoderLayerWithConv.forward(self, src, src_mask, cache, **extra)


class FirstTokenEncoderLayer(EncoderLayer):
    """The post-norm layer's output at the first token only, [batch, 1, hidden] (eval; a classifier's
    export, ``common/first_token.py``). The attention half projects no keys or values
    (:func:`common.first_token.first_token_context`). The span convolution at position 0 weighs the
    values at offsets -padding..padding, of which the negative ones are its zero padding: so its separable
    convolution and value projection run on the first ``padding + 1`` tokens only (zeros past the end)."""

    def forward(self, src, src_mask=None, cache=None, output_attentions=False):
        att, pad = self.self_attn, self.self_attn.padding
        first = src[:, :1]
        q = att.q_proj(first[:, 0])
        attention = first_token_context(att, q, src, nn.layer.transformer._convert_attention_mask(src_mask, src.dtype))
        window = src[:, :pad + 1]
        logits = att.conv_kernel_layer(att.key_conv_attn_layer(window)[:, 0] * q)
        weights = F.softmax(logits.reshape([-1, att.num_heads, 1, 2 * pad + 1]), axis=-1)[:, :, :, pad:]
        values = att.conv_out_layer(window)
        values = paddle.concat([values, _zero_positions(values, pad + 1)], axis=1)
        values = values[:, :pad + 1].reshape([0, pad + 1, att.num_heads, att.head_dim]).transpose([0, 2, 1, 3])
        conv = paddle.matmul(weights, values).reshape([-1, 1, att.all_head_size])  # [batch, 1, heads x size]
        return post_norm_rest(self, first, att.out_proj(paddle.concat([attention.unsqueeze(1), conv], axis=-1)))


def _classifier_last_layer(model: nn.Layer) -> EncoderLayer | None:
    """The classifier's last encoder layer where it is this file's post-norm layer with an odd kernel."""
    layers = model.convbert.encoder.layers
    last = layers[-1] if len(layers) else None
    ok = type(last) is EncoderLayer and not last.normalize_before and last.self_attn.conv_kernel_size % 2
    return last if ok else None


# Fine-tuning on CPU: kernel-backed versions of the two layers above (common/train_kernels.py
# switches a model to them; they run in train mode and in dygraph eval mode, an export runs the forwards above).


@tk.register
class TrainSelfAttention(SelfAttention):
    """The convolution half as two operators (channels-last depthwise convolution; span softmax and
    weighted sum over shifted positions, no padded copy or stack of K slices); the attention half
    through :func:`common.train_kernels.attend`."""

    def forward(self, query, key=None, value=None, attn_mask=None, cache=None):
        sep = self.key_conv_attn_layer
        mask = None
        if tk.fast(self, query) and self._operator_case(query, key, value, cache):
            mask = tk.additive_mask(attn_mask, query.shape[0], query.shape[1], query.dtype)
        if mask is None:
            return SelfAttention.forward(self, query, key, value, attn_mask, cache)
        q = self.q_proj(query)
        out = tk.attend(q, self.k_proj(query), self.v_proj(query), mask, self.num_heads,
                        tk.dropout_p(self, self.dropout.p))
        depthwise = sep.depthwise.weight
        mixed = tk.depthwise_conv(query, depthwise, depthwise.shape[-1] // 2)
        mixed = tk.bias_add(tk.matmul(mixed, sep.pointwise.weight.squeeze(-1), transpose_weight=True), sep.bias)
        return self._with_span_conv(query, q, mixed, out)


@tk.register
class TrainGroupedLinear(GroupedLinear):
    """The grouped product through :func:`common.train_kernels.grouped_matmul` (one oneDNN GEMM per group, no
    reshape or transpose copies) and the bias add."""

    def forward(self, hidden_states):
        if not tk.fast(self, hidden_states):
            return GroupedLinear.forward(self, hidden_states)
        return tk.bias_add(tk.grouped_matmul(hidden_states, self.weight), self.bias)


@tk.register
class TrainEncoderLayer(EncoderLayer):
    """The feed-forward bias and GELU as one operator, as in common/train_kernels.py's encoder layer."""

    forward = tk.TransformerEncoderLayer.forward


def _encoder(config) -> nn.TransformerEncoder:
    layer = EncoderLayer(
        config.hidden_size,
        config.num_attention_heads,
        config.intermediate_size,
        dropout=config.hidden_dropout_prob,
        activation=config.hidden_act,
        attn_dropout=config.attention_probs_dropout_prob,
        act_dropout=0,
        conv_kernel_size=config.conv_kernel_size,
        head_ratio=config.head_ratio,
        num_groups=config.num_groups,
        layer_norm_eps=config.layer_norm_eps,
    )
    return nn.TransformerEncoder(layer, config.num_hidden_layers)


class ConvBertHFModel(pm.ConvBertModel):
    """ConvBERT base model computing HF's ``ConvBertModel`` (module docstring); no pooler parameters."""

    def __init__(self, config):
        pm.ConvBertPretrainedModel.__init__(self, config)
        self.pad_token_id = config.pad_token_id
        self.initializer_range = config.initializer_range
        self.embeddings = Embeddings(config)
        if config.embedding_size != config.hidden_size:
            self.embeddings_project = nn.Linear(config.embedding_size, config.hidden_size)
        self.encoder = _encoder(config)

    def forward(
        self,
        input_ids=None,
        token_type_ids=None,
        position_ids=None,
        attention_mask=None,
        inputs_embeds=None,
        output_hidden_states=None,
        output_attentions=None,
        return_dict=None,
    ):
        """As PaddleNLP's, except: no mask attends everywhere (HF; PaddleNLP masked ``pad_token_id``),
        HF's mask value, and ``pooled_output`` is the [CLS] hidden state."""
        config = self.config
        output_attentions = output_attentions if output_attentions is not None else config.output_attentions
        output_hidden_states = output_hidden_states if output_hidden_states is not None else config.output_hidden_states
        return_dict = return_dict if return_dict is not None else config.use_return_dict
        if input_ids is not None and inputs_embeds is not None:
            raise ValueError("You cannot specify both input_ids and inputs_embeds at the same time")
        if attention_mask is not None:
            attention_mask = extended_attention_mask(attention_mask, paddle.get_default_dtype())

        hidden = self.embeddings(
            input_ids=input_ids, token_type_ids=token_type_ids, position_ids=position_ids, inputs_embeds=inputs_embeds
        )
        if hasattr(self, "embeddings_project"):
            hidden = self.embeddings_project(hidden)
        encoder_outputs = self.encoder(
            hidden,
            src_mask=attention_mask,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=return_dict,
        )
        if isinstance(encoder_outputs, type(hidden)):
            return (encoder_outputs, encoder_outputs[:, 0])
        sequence_output = encoder_outputs[0]
        pooled_output = sequence_output[:, 0]
        if not return_dict:
            return (sequence_output, pooled_output) + tuple(encoder_outputs[1:])
        return BaseModelOutputWithPoolingAndCrossAttentions(
            last_hidden_state=sequence_output,
            pooler_output=pooled_output,
            hidden_states=encoder_outputs.hidden_states,
            attentions=encoder_outputs.attentions,
        )


class ConvBertHFForSequenceClassification(pm.ConvBertForSequenceClassification):
    """PaddleNLP's classifier (forward unchanged) on :class:`ConvBertHFModel`, whose ``pooled_output``
    is the [CLS] hidden state: HF's ``ConvBertClassificationHead``. Its dropout is
    ``classifier_dropout`` when set (HF), not always ``hidden_dropout_prob``."""

    def __init__(self, config):
        pm.ConvBertPretrainedModel.__init__(self, config)
        self.convbert = ConvBertHFModel(config)
        self.num_labels = config.num_labels
        self.classifier = pm.ConvBertClassificationHead(config)
        if config.classifier_dropout is not None:
            self.classifier.dropout = nn.Dropout(config.classifier_dropout)


for _cls in (ConvBertHFModel, ConvBertHFForSequenceClassification):
    setattr(ppt, _cls.__name__, _cls)
register_first_token("ConvBertHFForSequenceClassification", _classifier_last_layer, FirstTokenEncoderLayer)
