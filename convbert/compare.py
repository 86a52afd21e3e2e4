"""Check a converted ConvBERT against its HF torch original. See --help."""
import sys

import common  # noqa: F401  (zlib before paddle)
from common.compare import compare_main
from common.errors import cli
from convbert.spec import SPEC  # with its modeling: registers the classes named in the converted config.json

if __name__ == "__main__":
    sys.exit(cli(compare_main)("Compare a ConvBERT HF checkpoint with its PaddleNLP conversion.",
                               model_type=SPEC.model_type))
