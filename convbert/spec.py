"""How ConvBERT checkpoints map from Hugging Face to PaddleNLP (``convbert.modeling``'s classes).

The encoder follows paddle's TransformerEncoderLayer naming (q/k/v/out_proj, linear1/2, norm1/2);
the convolution's layers keep HF's names under ``self_attn``. Ordinary Linear weights are
transposed ([out, in] -> [in, out]); grouped linear weights (``num_groups`` > 1) are
[groups, in/groups, out/groups] on both sides and keep their layout (the converter transposes
2-D tensors only); the separable convolution's bias is [C, 1] in HF and [C] in PaddleNLP
(reshaped); depthwise / pointwise convolution weights have the same layout.

Pooler: PaddleNLP's ``ConvBertModel`` has a dense+tanh pooler that neither HF nor the original
ConvBERT has. HF's ``ConvBertForSequenceClassification`` applies its head (dropout, dense,
activation, dropout, out_proj) to the [CLS] hidden state, while PaddleNLP's applies the same head
to the pooler's output: a different computation, with two parameters no checkpoint has. So the
converted models are ``ConvBertHFModel`` / ``ConvBertHFForSequenceClassification``
(``convbert/modeling.py``), which have no pooler at all and whose ``pooled_output`` is the [CLS]
hidden state (the original's ``get_pooled_output()``): nothing is computed or left random, and
every parameter comes from the checkpoint (the classifier too, when it has one).
"""
from common.convert import ModelSpec
from common.errors import UserError
from convbert.modeling import ConvBertHFForSequenceClassification, ConvBertHFModel

# HF and paddle.nn.functional give these names the same function (HF "gelu" is the exact erf form).
_ACTIVATIONS = ("gelu", "relu")


def _config_map(cfg: dict) -> dict:
    """HF ConvBertConfig -> PaddleNLP ConvBertConfig kwargs; refuse what would not convert exactly."""
    unsupported = []
    if cfg.get("hidden_act", "gelu") not in _ACTIVATIONS:
        unsupported.append(f"hidden_act={cfg['hidden_act']!r} (supported: {', '.join(_ACTIVATIONS)})")
    if cfg.get("is_decoder") or cfg.get("add_cross_attention"):
        unsupported.append("decoder / cross-attention")
    if cfg.get("conv_kernel_size", 9) % 2 == 0:
        unsupported.append(f"conv_kernel_size={cfg['conv_kernel_size']} (HF's convolution needs an odd size)")
    heads = max(cfg.get("num_attention_heads", 12) // cfg.get("head_ratio", 2), 1)
    if cfg.get("hidden_size", 768) % (2 * heads):
        unsupported.append(f"hidden_size={cfg.get('hidden_size', 768)} not divisible by 2 x {heads} heads")
    if unsupported:
        raise UserError(f"not supported by ConvBertHFModel: {'; '.join(unsupported)}")
    return cfg


_LAYER = r"^encoder\.layer\.(\d+)\."
_TO = r"encoder.layers.\1."

SPEC = ModelSpec(
    model_type="convbert",
    hf_prefix="convbert",
    paddle_prefix="convbert",
    base_class=ConvBertHFModel.__name__,
    head_classes={"ConvBertForSequenceClassification": ConvBertHFForSequenceClassification.__name__},
    tokenizer_class="ConvBertTokenizer",
    renames=(
        (r"^embeddings\.LayerNorm\.", "embeddings.layer_norm."),
        (_LAYER + r"attention\.self\.query\.", _TO + "self_attn.q_proj."),
        (_LAYER + r"attention\.self\.key\.", _TO + "self_attn.k_proj."),
        (_LAYER + r"attention\.self\.value\.", _TO + "self_attn.v_proj."),
        (_LAYER + r"attention\.self\.", _TO + "self_attn."),  # key_conv_attn_layer, conv_kernel/out_layer
        (_LAYER + r"attention\.output\.dense\.", _TO + "self_attn.out_proj."),
        (_LAYER + r"attention\.output\.LayerNorm\.", _TO + "norm1."),
        (_LAYER + r"intermediate\.dense\.", _TO + "linear1."),
        (_LAYER + r"output\.dense\.", _TO + "linear2."),
        (_LAYER + r"output\.LayerNorm\.", _TO + "norm2."),
    ),
    transpose=(
        r"embeddings_project\.weight",
        r"encoder\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|out_proj|conv_kernel_layer|conv_out_layer)"
        r"|linear1|linear2)\.weight",
        r"classifier\.(dense|out_proj)\.weight",
    ),
    reshape=(r"encoder\.layers\.\d+\.self_attn\.key_conv_attn_layer\.bias",),
    # Pretraining heads (ConvBertForMaskedLM's generator); position / token type ids are constant buffers.
    skip=(r"generator_(predictions|lm_head)\..*", r"embeddings\.position_ids", r"embeddings\.token_type_ids"),
    config_map=_config_map,
)

# The published checkpoints (YituTech/conv-bert-*), as named under weights/torch/ and weights/paddle/.
CHECKPOINTS = ("convbert-small", "convbert-medium-small", "convbert-base")
