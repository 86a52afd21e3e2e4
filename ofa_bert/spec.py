"""How BERT-family checkpoints map from Hugging Face to PaddleNLP.

PaddleNLP's BertModel builds its encoder from ``paddle.nn.TransformerEncoder``, so each HF
layer's modules get the generic transformer names (q/k/v/out_proj, linear1/2, norm1/2);
every Linear weight is transposed ([out, in] -> [in, out]), embeddings are not.
LayerNorm epsilon comes from ``layer_norm_eps`` (PaddleNLP applies it in its init hook).
"""
from common.convert import ModelSpec
from common.errors import UserError

_LAYER = r"encoder\.layer\.(\d+)\."
_TO_LAYER = r"encoder.layers.\1."

# Activations whose HF and paddle.nn.functional versions are the same function
# (HF "gelu" is the exact erf form, as is paddle's F.gelu by default).
_ACTIVATIONS = ("gelu", "relu")


def _config_map(cfg: dict) -> dict:
    """HF BertConfig -> PaddleNLP BertConfig kwargs; refuse what PaddleNLP's BERT cannot run."""
    unsupported = []
    if cfg.get("hidden_act", "gelu") not in _ACTIVATIONS:
        unsupported.append(f"hidden_act={cfg['hidden_act']!r} (supported: {', '.join(_ACTIVATIONS)})")
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        unsupported.append(f"position_embedding_type={cfg['position_embedding_type']!r}")
    if cfg.get("is_decoder") or cfg.get("add_cross_attention"):
        unsupported.append("decoder / cross-attention")
    if unsupported:
        raise UserError(f"not supported by PaddleNLP BertModel: {'; '.join(unsupported)}")
    # HF uses the cache only in decoder mode; PaddleNLP's encoder would build (empty) caches.
    return {**cfg, "use_cache": False}


SPEC = ModelSpec(
    model_type="bert",
    hf_prefix="bert",
    paddle_prefix="bert",
    base_class="BertModel",
    head_classes={"BertForSequenceClassification": "BertForSequenceClassification"},
    tokenizer_class="BertTokenizer",
    renames=(
        (r"LayerNorm\.gamma$", "LayerNorm.weight"),  # older TF-converted checkpoints
        (r"LayerNorm\.beta$", "LayerNorm.bias"),
        (r"^embeddings\.LayerNorm\.", "embeddings.layer_norm."),
        (_LAYER + r"attention\.self\.query\.", _TO_LAYER + "self_attn.q_proj."),
        (_LAYER + r"attention\.self\.key\.", _TO_LAYER + "self_attn.k_proj."),
        (_LAYER + r"attention\.self\.value\.", _TO_LAYER + "self_attn.v_proj."),
        (_LAYER + r"attention\.output\.dense\.", _TO_LAYER + "self_attn.out_proj."),
        (_LAYER + r"attention\.output\.LayerNorm\.", _TO_LAYER + "norm1."),
        (_LAYER + r"intermediate\.dense\.", _TO_LAYER + "linear1."),
        (_LAYER + r"output\.dense\.", _TO_LAYER + "linear2."),
        (_LAYER + r"output\.LayerNorm\.", _TO_LAYER + "norm2."),
    ),
    transpose=(
        r"encoder\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|linear1|linear2)\.weight",
        r"pooler\.dense\.weight",
        r"classifier\.weight",
    ),
    skip=(
        # Pretraining heads (masked LM, next sentence); position / token type ids are constant buffers.
        r"cls\..*",
        r"embeddings\.position_ids",
        r"embeddings\.token_type_ids",
        # TinyBERT (huawei-noah TinyBERT_General_*): the Linear maps from its hidden states to the
        # teacher's width used by its own distillation (``fit_denses.<i>``, ``fit_dense`` in some
        # versions); not part of the BERT model.
        r"fit_denses\.\d+\.(weight|bias)",
        r"fit_dense\.(weight|bias)",
    ),
    config_map=_config_map,
)

# Known checkpoints, as named under weights/torch/ and weights/paddle/.
CHECKPOINTS = ("bert-base-uncased", "all-MiniLM-L6-v2", "tinybert-4l-312d", "tinybert-6l-768d")
