"""How MobileBERT checkpoints map from Hugging Face to PaddleNLP.

PaddleNLP's MobileBertModel keeps HF's layout, but names the encoder list ``layers``, merges
HF's ``attention.self`` / ``attention.output`` into ``attention`` and spells ``LayerNorm``
``layer_norm`` (also for NoNorm). Every Linear weight is transposed ([out, in] -> [in, out]);
NoNorm / LayerNorm weights are 1-D and embeddings are [vocab, dim] on both sides.
"""
from common.convert import ModelSpec
from common.errors import UserError

# Activations with the same meaning in HF's and PaddleNLP's ACT2FN (HF "gelu" is the exact erf
# form, as PaddleNLP's; other HF names are missing from PaddleNLP or differ).
_ACTIVATIONS = ("relu", "gelu", "gelu_new", "silu", "swish", "tanh")
_NORMS = ("no_norm", "layer_norm")


def _config_map(cfg: dict) -> dict:
    """HF MobileBertConfig -> PaddleNLP MobileBertConfig kwargs."""
    unsupported = []
    if cfg.get("hidden_act", "relu") not in _ACTIVATIONS:
        unsupported.append(f"hidden_act={cfg['hidden_act']!r} (supported: {', '.join(_ACTIVATIONS)})")
    if cfg.get("normalization_type", "no_norm") not in _NORMS:
        unsupported.append(f"normalization_type={cfg['normalization_type']!r}")
    if unsupported:
        raise UserError(f"not supported by PaddleNLP MobileBertModel: {'; '.join(unsupported)}")
    # HF's default is a dense+tanh pooler (google/mobilebert-uncased's config.json does not say so);
    # PaddleNLP's default is none.
    return {**cfg, "classifier_activation": cfg.get("classifier_activation", True)}


_LAYER = r"^(encoder\.)layer\.(\d+)\."

SPEC = ModelSpec(
    model_type="mobilebert",
    hf_prefix="mobilebert",
    paddle_prefix="mobilebert",
    base_class="MobileBertModel",
    head_classes={"MobileBertForSequenceClassification": "MobileBertForSequenceClassification"},
    tokenizer_class="MobileBertTokenizer",
    renames=(
        (_LAYER, r"\1layers.\2."),
        (r"^(encoder\.layers\.\d+\.attention\.)(self|output)\.", r"\1"),
        (r"\.LayerNorm\.", ".layer_norm."),
    ),
    transpose=(
        r".*\.(query|key|value|dense|embedding_transformation)\.weight",
        r"classifier\.weight",
    ),
    # Pretraining heads (masked LM incl. its tied decoder, next sentence) of mobilebert-uncased;
    # position ids are a buffer (saved by older transformers, built by PaddleNLP).
    skip=(r"cls\..*", r"embeddings\.position_ids"),
    computed=(r"embeddings\.position_ids",),
    config_map=_config_map,
)

# The published checkpoints, as named under weights/torch/ and weights/paddle/.
CHECKPOINTS = ("mobilebert-uncased",)
