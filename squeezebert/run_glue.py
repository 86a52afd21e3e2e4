"""Fine-tune a converted SqueezeBERT on a GLUE task (PaddleNLP Trainer). See --help."""
import common  # noqa: F401  (zlib before paddle)
from common.errors import cli
from common.train_glue import glue_main

if __name__ == "__main__":
    cli(glue_main)("squeezebert", "SqueezeBertForSequenceClassification")
