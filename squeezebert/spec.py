"""How SqueezeBERT checkpoints map from Hugging Face to PaddleNLP.

Inside the base model both libraries use the same names, and the grouped 1x1 convolutions
have the same [out, in/groups, 1] layout, so only the two Linear layers are transposed.
"""
from common.convert import ModelSpec
from common.errors import UserError
import squeezebert.modeling  # noqa: F401  (the models built from here use its matmul convolutions)

# PaddleNLP's SqueezeBERT init hook sets every LayerNorm epsilon to 1e-12, while HF's embedding
# LayerNorm uses config.layer_norm_eps: only checkpoints with 1e-12 (all published ones) convert exactly.
_PADDLE_EPS = 1e-12


def _config_map(cfg: dict) -> dict:
    if cfg.get("layer_norm_eps", _PADDLE_EPS) != _PADDLE_EPS:
        raise UserError(
            f"layer_norm_eps={cfg['layer_norm_eps']} is not supported: PaddleNLP's SqueezeBERT "
            f"fixes every LayerNorm epsilon at {_PADDLE_EPS}, so the converted model would differ"
        )
    return cfg


SPEC = ModelSpec(
    model_type="squeezebert",
    hf_prefix="transformer",
    paddle_prefix="squeezebert",
    base_class="SqueezeBertModel",
    head_classes={"SqueezeBertForSequenceClassification": "SqueezeBertForSequenceClassification"},
    tokenizer_class="SqueezeBertTokenizer",
    transpose=(r"pooler\.dense\.weight", r"classifier\.weight"),
    # Pretraining heads (masked LM, next sentence) of squeezebert-uncased; position ids are a buffer.
    skip=(r"cls\..*", r"embeddings\.position_ids"),
    computed=(r"embeddings\.position_ids",),
    config_map=_config_map,
)

# The published checkpoints, as named under weights/torch/ and weights/paddle/.
CHECKPOINTS = ("squeezebert-uncased", "squeezebert-mnli", "squeezebert-mnli-headless")
