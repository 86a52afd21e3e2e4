"""Fine-tune a converted SqueezeBERT on a GLUE task (PaddleNLP Trainer). See --help."""
import common  # noqa: F401  (zlib before paddle)
from common.errors import cli
from common.train_glue import glue_main
import squeezebert.modeling  # noqa: F401  (grouped 1x1 convolutions as matmuls)

if __name__ == "__main__":
    cli(glue_main)("squeezebert", "SqueezeBertForSequenceClassification")
