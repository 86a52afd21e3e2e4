"""Check a converted ConvBERT against its HF torch original. See --help."""
import sys

import common  # noqa: F401  (zlib before paddle)
import convbert.modeling  # noqa: F401  (registers the classes named in the converted config.json)
from common.compare import compare_main
from common.errors import cli

if __name__ == "__main__":
    sys.exit(cli(compare_main)("Compare a ConvBERT HF checkpoint with its PaddleNLP conversion."))
