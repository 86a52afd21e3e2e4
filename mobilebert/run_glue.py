"""Fine-tune a converted MobileBERT on a GLUE task (PaddleNLP Trainer). See --help."""
import common  # noqa: F401  (zlib before paddle)
import mobilebert.fixes  # noqa: F401  (PaddleNLP's MobileBERT made to match HF; see README.md)
from common.errors import cli
from common.train_glue import glue_main

if __name__ == "__main__":
    cli(glue_main)("mobilebert", "MobileBertForSequenceClassification")
