"""Fine-tune a converted BERT-family model (the OFA teacher) on a GLUE task. See --help."""
import common  # noqa: F401  (zlib before paddle)
from common.errors import cli
from common.train_glue import glue_main

if __name__ == "__main__":
    cli(glue_main)("bert", "BertForSequenceClassification")
