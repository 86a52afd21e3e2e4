"""Fine-tune a converted MobileBERT on SQuAD v1.1/v2.0 (PaddleNLP Trainer), or score predictions. See --help."""
import common  # noqa: F401  (zlib before paddle)
import mobilebert.fixes  # noqa: F401  (PaddleNLP's MobileBERT made to match HF; see README.md)
from common.errors import cli
from common.train_squad import squad_main

if __name__ == "__main__":
    cli(squad_main)("mobilebert", "MobileBertForQuestionAnswering")
