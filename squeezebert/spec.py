"""How SqueezeBERT checkpoints map from Hugging Face to PaddleNLP.

Inside the base model both libraries use the same names, and the grouped 1x1 convolutions
have the same [out, in/groups, 1] layout, so only the two Linear layers are transposed.
"""
from common.convert import ModelSpec

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
)

# The published checkpoints, as named under weights/torch/ and weights/paddle/.
CHECKPOINTS = ("squeezebert-uncased", "squeezebert-mnli", "squeezebert-mnli-headless")
